//! A store in its own temporary directory, removed when the store goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use session_core::audit::{AuditEvent, AuditQuery};
use session_core::rotation::{NextRefresh, RefreshParams};
use session_core::session::{RevokeReason, Session};
use session_core::store::RefreshResult;
use session_core::user::User;
use session_core::{AuditLog, PresentedRefresh, SessionId, SessionStore, StoreError, UserStore};
use session_store_sqlite::SqliteStore;
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;
use tempfile::TempDir;
use time::OffsetDateTime;

/// A [`SqliteStore`] on a fresh file that lives as long as this value.
/// (The conformance macros want an `Arc` of a store; this keeps the
/// temporary directory alive beside it.)
#[derive(Debug)]
pub(crate) struct TempStore {
    pub(crate) store: SqliteStore,
    // Dropped after `store`, so the files go once the pool is released.
    pub(crate) dir: TempDir,
}

impl TempStore {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = SqliteStore::open(&db_path(dir.path()))
            .await
            .expect("open the store");
        Self { store, dir }
    }
}

/// Where the tests put the database in a directory (as the server does).
pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("sessions.db")
}

/// A fresh store for the conformance macros.
pub(crate) async fn fresh() -> Arc<TempStore> {
    Arc::new(TempStore::new().await)
}

/// A plain connection to the file, outside the store, as an operator's
/// `sqlite3` shell would have: no pragmas of the store's own.
pub(crate) async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("a raw connection to the database file")
}

/// Every byte of the database and its WAL and shared-memory files.
pub(crate) fn bytes_on_disk(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() {
            all.extend(std::fs::read(&path).expect("read a database file"));
        }
    }
    all
}

#[async_trait]
impl SessionStore for TempStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        self.store.create(session).await
    }

    async fn create_limited(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.store.create_limited(session, max, now).await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.store.get(id).await
    }

    async fn replace(&self, session: &Session, expected_version: u64) -> Result<bool, StoreError> {
        self.store.replace(session, expected_version).await
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        self.store.revoke(id, reason, now).await
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.store.revoke_user(user_id, reason, now).await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.store.list_user(user_id, now).await
    }

    async fn refresh(
        &self,
        presented: &PresentedRefresh,
        next: &NextRefresh,
        params: &RefreshParams,
        now: OffsetDateTime,
    ) -> Result<RefreshResult, StoreError> {
        self.store.refresh(presented, next, params, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        SessionStore::ping(&self.store).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.store.purge_expired(now).await
    }
}

#[async_trait]
impl UserStore for TempStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        self.store.create_user(user).await
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.store.get_user(username).await
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.store.set_password(username, password_hash).await
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        self.store.delete_user(username).await
    }
}

#[async_trait]
impl AuditLog for TempStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.store.append(event).await
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.store.query(query).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        AuditLog::ping(&self.store).await
    }
}
