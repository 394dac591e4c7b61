//! Maps sqlx (and the writers' rusqlite) errors onto [`StoreError`] by
//! kind, never by message, keeping the original error as the source.

use session_core::StoreError;
use sqlx::migrate::MigrateError;

// SQLite's primary result codes (the low byte of an extended code).
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_CORRUPT: i64 = 11;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_NOTADB: i64 = 26;

/// Classifies a sqlx error.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                return StoreError::Conflict;
            }
            let primary = db
                .code()
                .and_then(|c| c.parse::<i64>().ok())
                .map(|c| c & 0xff);
            match primary {
                // Locked past the busy timeout, out of disk, unreadable file:
                // the store cannot answer now.
                Some(
                    SQLITE_BUSY | SQLITE_LOCKED | SQLITE_NOMEM | SQLITE_READONLY | SQLITE_IOERR
                    | SQLITE_FULL | SQLITE_CANTOPEN,
                ) => StoreError::unavailable(sqlx::Error::Database(db)),
                Some(SQLITE_CORRUPT | SQLITE_NOTADB) => {
                    StoreError::corrupt(sqlx::Error::Database(db))
                }
                _ => StoreError::backend(sqlx::Error::Database(db)),
            }
        }
        e @ (sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed) => StoreError::unavailable(e),
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => StoreError::corrupt(e),
        e => StoreError::backend(e),
    }
}

/// Whether SQLite's primary result code means the store cannot answer now
/// (locked past the busy timeout, out of memory or disk, unreadable file).
fn unavailable_code(code: Option<rusqlite::ErrorCode>) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        code,
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
        )
    )
}

/// Classifies an error of a writer's own (rusqlite) connection as
/// [`classify`] does a sqlx one.
pub(crate) fn classify_sqlite(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    use rusqlite::ffi::{SQLITE_CONSTRAINT_PRIMARYKEY, SQLITE_CONSTRAINT_UNIQUE};
    if let rusqlite::Error::SqliteFailure(failure, _) = &e
        && matches!(
            failure.extended_code,
            SQLITE_CONSTRAINT_UNIQUE | SQLITE_CONSTRAINT_PRIMARYKEY
        )
    {
        return StoreError::Conflict;
    }
    let code = e.sqlite_error_code();
    if unavailable_code(code) {
        return StoreError::unavailable(e);
    }
    match (code, &e) {
        (Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase), _)
        | (
            _,
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnName(_)
            | rusqlite::Error::InvalidColumnIndex(_),
        ) => StoreError::corrupt(e),
        _ => StoreError::backend(e),
    }
}

/// Classifies a failure to migrate the schema.
pub(crate) fn classify_migration(e: MigrateError) -> StoreError {
    match e {
        MigrateError::Execute(e) => classify(e),
        MigrateError::ExecuteMigration(inner, version) => match classify(inner) {
            StoreError::Unavailable(src) => StoreError::Unavailable(src),
            other => StoreError::backend(MigrationFailed {
                version,
                source: other,
            }),
        },
        e => StoreError::backend(e),
    }
}

/// A migration that could not be applied.
#[derive(Debug, thiserror::Error)]
#[error("schema migration {version} failed")]
pub(crate) struct MigrationFailed {
    version: i64,
    #[source]
    source: StoreError,
}

/// A value read back from the database that the model cannot hold.
#[derive(Debug, thiserror::Error)]
#[error("column {column}: {problem}")]
pub(crate) struct BadColumn {
    pub(crate) column: &'static str,
    pub(crate) problem: String,
}

/// A value of the model that the schema cannot hold (an instant outside
/// 1677..2262, a counter above `i64::MAX`).
#[derive(Debug, thiserror::Error)]
#[error("{what} is out of the range the store can hold")]
pub(crate) struct OutOfRange {
    pub(crate) what: &'static str,
}

/// A group-commit batch was not committed; every caller in it gets this.
/// The cause travels as text, since one `sqlx::Error` cannot be handed to
/// many callers.
#[derive(Debug, thiserror::Error)]
#[error("{what} batch not committed: {message}")]
pub(crate) struct BatchFailed {
    what: &'static str,
    message: String,
}

/// Why a batch failed, copyable to each of its callers.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    what: &'static str,
    unavailable: bool,
    message: String,
}

impl Failure {
    /// The batch of `what` failed with `e`, on a writer's own connection.
    pub(crate) fn of_sqlite(what: &'static str, e: &rusqlite::Error) -> Self {
        Self {
            what,
            unavailable: unavailable_code(e.sqlite_error_code()),
            message: e.to_string(),
        }
    }

    /// The task that commits batches of `what` is gone.
    pub(crate) fn stopped(what: &'static str) -> Self {
        Self {
            what,
            unavailable: true,
            message: format!("the {what} writer has stopped"),
        }
    }

    /// The error one caller of the batch gets.
    pub(crate) fn again(&self) -> StoreError {
        let e = BatchFailed {
            what: self.what,
            message: self.message.clone(),
        };
        if self.unavailable {
            StoreError::unavailable(e)
        } else {
            StoreError::backend(e)
        }
    }
}
