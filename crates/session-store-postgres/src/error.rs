//! Database errors, classified by kind (never by message), source kept.

use std::sync::Arc;

use session_core::StoreError;
use sqlx::error::ErrorKind;

/// Whether `e` is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|db| matches!(db.kind(), ErrorKind::UniqueViolation))
}

/// Whether `e` means "the database cannot be reached or is going away":
/// I/O, TLS, pool exhaustion or shutdown, and the server-side connection,
/// shutdown and resource classes (SQLSTATE 08, 53, 57P).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
        }),
        _ => false,
    }
}

/// Maps a sqlx error to the store's error, by kind.
pub fn classify(e: sqlx::Error) -> StoreError {
    if is_unavailable(&e) {
        return StoreError::unavailable(e);
    }
    if is_unique_violation(&e) {
        return StoreError::Conflict;
    }
    let serialization = e
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "40001" || code == "40P01");
    if serialization {
        return StoreError::Contention;
    }
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_) => StoreError::corrupt(e),
        other => StoreError::backend(other),
    }
}

/// Wraps a migration failure.
pub(crate) fn migrate(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => classify(inner),
        other => StoreError::backend(other),
    }
}

/// The schema is not what this build expects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// A migration of this build has not been applied.
    #[error(
        "audit schema migration {version} ({description}) is not applied; run `session-server migrate` as the schema owner"
    )]
    Pending {
        /// Its version.
        version: i64,
        /// Its description.
        description: String,
    },
    /// An applied migration differs from this build's file of that version.
    #[error("audit schema migration {version} was changed after it was applied")]
    Modified {
        /// Its version.
        version: i64,
    },
    /// The database holds a migration this build does not know (it is older
    /// than the schema).
    #[error("audit schema migration {version} is unknown to this build")]
    Unknown {
        /// Its version.
        version: i64,
    },
}

/// One failure reported to every event of a batch: the variant matches the
/// original, whose error is the source.
#[derive(Debug, thiserror::Error)]
#[error("the batch of audit events this one was written with failed")]
pub(crate) struct BatchFailed(#[source] Arc<StoreError>);

/// A copy of a shared error for one more waiter.
pub(crate) fn share(e: &Arc<StoreError>) -> StoreError {
    let wrapped = BatchFailed(Arc::clone(e));
    match **e {
        StoreError::Unavailable(_) => StoreError::unavailable(wrapped),
        StoreError::Conflict => StoreError::Conflict,
        StoreError::Contention => StoreError::Contention,
        StoreError::Superseded => StoreError::Superseded,
        StoreError::Corrupt(_) => StoreError::corrupt(wrapped),
        // Backend, and any kind added later.
        _ => StoreError::backend(wrapped),
    }
}
