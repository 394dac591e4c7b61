//! Hand-written mapping between the core types and SQLite rows. Core types
//! are not `FromRow`; every column is decoded and checked here, and a value
//! the model cannot hold is [`StoreError::Corrupt`], never a panic.

use session_core::audit::{Actor, AuditEvent, AuditKind};
use session_core::dpop::Jkt;
use session_core::record::{RecordCipher, RecordError};
use session_core::session::{RefreshState, Revocation, RevokeReason, Session};
use session_core::user::User;
use session_core::{SessionId, StoreError, TokenDigest};
use sqlx::Row as _;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{BadColumn, OutOfRange, classify, classify_sqlite};

fn bad(column: &'static str, problem: impl ToString) -> StoreError {
    StoreError::corrupt(BadColumn {
        column,
        problem: problem.to_string(),
    })
}

/// An instant as stored: nanoseconds since the Unix epoch.
pub(crate) fn instant(t: OffsetDateTime) -> Result<i64, StoreError> {
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| StoreError::backend(OutOfRange { what: "instant" }))
}

/// A counter (generation, version) as stored.
pub(crate) fn counter(n: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::backend(OutOfRange { what }))
}

/// A stored counter read back (negative is corrupt).
pub(crate) fn stored_counter(n: i64, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| bad(column, format!("negative counter {n}")))
}

/// JSON text of a value the model holds.
pub(crate) fn json_text(v: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(StoreError::backend)
}

/// The rapid-refresh history as a JSON array of nanosecond instants.
pub(crate) fn instants_json(ts: &[OffsetDateTime]) -> Result<String, StoreError> {
    let ns = ts
        .iter()
        .map(|t| instant(*t))
        .collect::<Result<Vec<_>, _>>()?;
    serde_json::to_string(&ns).map_err(StoreError::backend)
}

/// A column type both drivers decode: sqlx on the pool, rusqlite on the
/// writers' own connections (`writer.rs`).
pub(crate) trait Column:
    for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + rusqlite::types::FromSql
{
}

/// A row of either driver, read by column name.
pub(crate) trait Columns {
    fn column<T: Column>(&self, column: &'static str) -> Result<T, StoreError>;
}

impl Columns for SqliteRow {
    fn column<T: Column>(&self, column: &'static str) -> Result<T, StoreError> {
        self.try_get(column).map_err(classify)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn column<T: Column>(&self, column: &'static str) -> Result<T, StoreError> {
        self.get(column).map_err(classify_sqlite)
    }
}

fn get<T: Column>(row: &impl Columns, column: &'static str) -> Result<T, StoreError> {
    row.column(column)
}

fn read_instant(row: &impl Columns, column: &'static str) -> Result<OffsetDateTime, StoreError> {
    let ns: i64 = get(row, column)?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).map_err(|e| bad(column, e))
}

fn read_opt_instant(
    row: &impl Columns,
    column: &'static str,
) -> Result<Option<OffsetDateTime>, StoreError> {
    let ns: Option<i64> = get(row, column)?;
    ns.map(|ns| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).map_err(|e| bad(column, e))
    })
    .transpose()
}

fn read_counter(row: &impl Columns, column: &'static str) -> Result<u64, StoreError> {
    let n: i64 = get(row, column)?;
    u64::try_from(n).map_err(|_| bad(column, format!("negative counter {n}")))
}

fn read_digest(column: &'static str, bytes: Vec<u8>) -> Result<TokenDigest, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(column, format!("digest of {} bytes, not 32", b.len())))?;
    Ok(TokenDigest::from_bytes(arr))
}

fn read_json(row: &impl Columns, column: &'static str) -> Result<serde_json::Value, StoreError> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text).map_err(|e| bad(column, e))
}

/// Decodes a row selected with `session_columns!()`.
pub(crate) fn session_from_row(
    row: &impl Columns,
    records: Option<&RecordCipher>,
) -> Result<Session, StoreError> {
    let id: String = get(row, "id")?;
    let id: SessionId = id.parse().map_err(|e| bad("id", e))?;

    let current: Vec<u8> = get(row, "current_digest")?;
    let previous: Option<Vec<u8>> = get(row, "previous_digest")?;
    let recent: String = get(row, "recent_refreshes")?;
    let recent: Vec<i64> = serde_json::from_str(&recent).map_err(|e| bad("recent_refreshes", e))?;
    let recent_refreshes = recent
        .into_iter()
        .map(|ns| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
                .map_err(|e| bad("recent_refreshes", e))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let revoked_at = read_opt_instant(row, "revoked_at")?;
    let revoked_reason: Option<String> = get(row, "revoked_reason")?;
    let revoked = match (revoked_at, revoked_reason) {
        (None, None) => None,
        (Some(at), Some(reason)) => Some(Revocation {
            at,
            reason: RevokeReason::parse(&reason)
                .ok_or_else(|| bad("revoked_reason", format!("unknown reason {reason:?}")))?,
        }),
        _ => return Err(bad("revoked_at", "revoked_at and revoked_reason disagree")),
    };

    let mut session = Session {
        id,
        user_id: get(row, "user_id")?,
        created_at: read_instant(row, "created_at")?,
        last_seen_at: read_instant(row, "last_seen_at")?,
        idle_expires_at: read_instant(row, "idle_expires_at")?,
        absolute_expires_at: read_instant(row, "absolute_expires_at")?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        metadata: read_json(row, "metadata")?,
        refresh: RefreshState {
            generation: read_counter(row, "generation")?,
            current: read_digest("current_digest", current)?,
            previous: previous
                .map(|p| read_digest("previous_digest", p))
                .transpose()?,
            rotated_at: read_opt_instant(row, "rotated_at")?,
            grace_successor: get(row, "grace_successor")?,
            recent_refreshes,
        },
        revoked,
        epoch: read_counter(row, "epoch")?,
        version: read_counter(row, "version")?,
        dpop_jkt: get::<Option<String>>(row, "dpop_jkt")?
            .map(|j| Jkt::parse(&j).ok_or_else(|| bad("dpop_jkt", "not a key thumbprint")))
            .transpose()?,
        location: get::<Option<String>>(row, "location")?
            .map(|l| serde_json::from_str(&l).map_err(|e| bad("location", e)))
            .transpose()?,
    };
    if let Some(sealed) = get::<Option<Vec<u8>>>(row, "sealed")? {
        match records {
            Some(r) => r.open_into(&mut session, &sealed).map_err(|e| match e {
                RecordError::NoKey => StoreError::unavailable(e),
                _ => bad("sealed", e),
            })?,
            None => return Err(bad("sealed", "a sealed record and no record key")),
        }
    }
    Ok(session)
}

/// Decodes a `users` row.
pub(crate) fn user_from_row(row: &impl Columns) -> Result<User, StoreError> {
    Ok(User {
        username: get(row, "username")?,
        password_hash: get(row, "password_hash")?,
        created_at: read_instant(row, "created_at")?,
    })
}

/// Decodes a row selected with `audit_columns!()`.
pub(crate) fn audit_from_row(row: &impl Columns) -> Result<AuditEvent, StoreError> {
    let id: String = get(row, "id")?;
    let kind: String = get(row, "kind")?;
    let actor: String = get(row, "actor")?;
    Ok(AuditEvent {
        id: Uuid::parse_str(&id).map_err(|e| bad("id", e))?,
        at: read_instant(row, "at")?,
        kind: kind.parse::<AuditKind>().map_err(|e| bad("kind", e))?,
        session_id: get(row, "session_id")?,
        user_id: get(row, "user_id")?,
        actor: Actor::parse(&actor)
            .ok_or_else(|| bad("actor", format!("unknown actor {actor:?}")))?,
        ip: get(row, "ip")?,
        user_agent: get(row, "user_agent")?,
        reason: get(row, "reason")?,
        details: read_json(row, "details")?,
    })
}
