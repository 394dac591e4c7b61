#![doc = include_str!("../README.md")]

/// The session columns, in the order every `SELECT`/`RETURNING` names them
/// and `INSERT` binds them (`?1`..`?22`). A macro so that `concat!` can
/// build whole statements as literals.
macro_rules! session_columns {
    () => {
        "id, user_id, created_at, last_seen_at, idle_expires_at, absolute_expires_at, ip, \
         user_agent, metadata, generation, current_digest, previous_digest, rotated_at, \
         grace_successor, recent_refreshes, revoked_at, revoked_reason, version, dpop_jkt, epoch, \
         location, sealed"
    };
}

/// The audit columns, likewise.
macro_rules! audit_columns {
    () => {
        "id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details"
    };
}

mod audit;
mod codec;
mod error;
mod group;
mod sessions;
mod users;
mod writer;

use session_core::recent::RecentWrites;
use session_core::record::RecordCipher;
use std::path::{Path, PathBuf};
use std::time::Duration;

use session_core::StoreError;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::error::{classify, classify_migration};

/// How long a statement waits for another connection's write lock before
/// the store reports itself unavailable.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections: SQLite runs one writer at a time, so a few
/// connections are enough for concurrent readers of a small server.
pub const MAX_CONNECTIONS: u32 = 8;

/// The files of the outbox ([`session_core::outbox`]) the server puts in
/// front of the embedded audit log, in its data dir. Apart from
/// PostgreSQL's (`audit-outbox.*`): a switch of audit log never delivers
/// one log's pending events into the other.
pub const AUDIT_OUTBOX: session_core::outbox::OutboxFiles = session_core::outbox::OutboxFiles {
    events: "audit-sqlite-outbox.jsonl",
    lock: "audit-sqlite-outbox.lock",
    rejected: "audit-sqlite-outbox.rejected",
};

/// Sessions, built-in users and the audit log in one SQLite file.
///
/// One value serves as [`SessionStore`](session_core::SessionStore),
/// [`UserStore`](session_core::UserStore) and
/// [`AuditLog`](session_core::AuditLog); share it behind an `Arc`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    audit: audit::Writer,
    group: group::Writer,
    records: Option<RecordCipher>,
    /// The sessions this store value wrote last, for refresh to plan on.
    recent: RecentWrites,
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database
    /// at `path`, sets WAL journaling with `synchronous=FULL`, foreign keys
    /// and a busy timeout, and applies any pending schema migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(StoreError::unavailable)?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(classify)?;
        let store = Self::from_pool_at(pool, path.to_owned()).await?;
        tracing::info!(path = %path.display(), "opened the SQLite store");
        Ok(store)
    }

    /// A store on a pool the application already has (its own connect
    /// options: give it WAL journaling, `synchronous=FULL`, foreign keys
    /// and a busy timeout as [`SqliteStore::open`] does, or accept less
    /// durability). Applies any pending schema migrations to it. The pool
    /// must be on a database file: the audit log's writer opens a
    /// connection of its own to it (with `synchronous=FULL`).
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let path = pool.connect_options().get_filename().to_path_buf();
        Self::from_pool_at(pool, path).await
    }

    async fn from_pool_at(pool: SqlitePool, path: PathBuf) -> Result<Self, StoreError> {
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(classify_migration)?;
        Ok(Self {
            audit: audit::Writer::start(&path)?,
            group: group::Writer::start(&path)?,
            pool,
            path,
            records: None,
            recent: RecentWrites::default(),
        })
    }

    /// Seals every session's private fields (IP, user agent, metadata,
    /// location, DPoP thumbprint) at rest with `records` from now on
    /// (contract v1.1, "At rest"); rows written in the clear before stay
    /// readable until their next write.
    #[must_use]
    pub fn with_records(mut self, records: RecordCipher) -> Self {
        self.records = Some(records);
        self
    }

    /// Keeps a copy of up to `capacity` sessions as this store last wrote
    /// them (default [`session_core::recent::DEFAULT_RECENT_WRITES`]; 0
    /// keeps none), so that their next refresh plans on the copy instead of
    /// reading the row. A stale copy (another process wrote the file) costs
    /// a lost compare-and-swap and a read, never a wrong answer.
    #[must_use]
    pub fn with_recent_writes(mut self, capacity: u64) -> Self {
        self.recent = RecentWrites::new(capacity);
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every pooled connection (checkpointing the WAL when the last
    /// one goes). Calls after this fail with [`StoreError::Unavailable`].
    pub async fn close(&self) {
        self.group.close().await;
        self.audit.close().await;
        self.pool.close().await;
    }

    async fn ping_db(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(classify)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    #[tokio::test]
    async fn every_pooled_connection_syncs_fully_with_foreign_keys_and_a_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("sessions.db"))
            .await
            .unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        let pragma = |name: &'static str| sqlx::query_scalar::<_, i64>(name);
        // 2 = FULL: every commit is fsynced before it returns.
        assert_eq!(
            pragma("PRAGMA synchronous")
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            pragma("PRAGMA foreign_keys")
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            pragma("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await
                .unwrap(),
            5000
        );
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
