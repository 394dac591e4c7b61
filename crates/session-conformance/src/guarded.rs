//! A store kept together with what must outlive it in a test (a temporary
//! directory, a key cleaner), forwarding every trait method to the store.
//!
//! The conformance macros want an `Arc` of a store; a test that also owns
//! a resource wraps the two in [`Guarded`] instead of writing its own
//! forwarding impls. Every method is forwarded, the ones with default
//! bodies too, so a store's overrides are what the checks exercise.

use async_trait::async_trait;
use session_core::audit::{AuditEvent, AuditQuery};
use session_core::session::{RevokeReason, Session};
use session_core::user::User;
use session_core::{
    AuditLog, GuessedCreate, SessionId, SessionStore, StoreError, UserStore, WriteHints,
};
use time::OffsetDateTime;

/// `store`, plus a `guard` dropped after it.
#[derive(Debug)]
pub struct Guarded<S, G> {
    /// The store under test. Declared first, so it is dropped first.
    pub store: S,
    /// What must live as long as the store and go after it.
    pub guard: G,
}

impl<S, G> Guarded<S, G> {
    /// Wraps `store` with `guard`.
    pub fn new(store: S, guard: G) -> Self {
        Self { store, guard }
    }
}

#[async_trait]
impl<S: SessionStore, G: Send + Sync + std::fmt::Debug> SessionStore for Guarded<S, G> {
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

    async fn create_at_guessed_epoch(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<GuessedCreate, StoreError> {
        self.store.create_at_guessed_epoch(session, max, now).await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.store.get(id).await
    }

    fn recent(&self, id: &SessionId) -> Option<Session> {
        self.store.recent(id)
    }

    async fn replace(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<bool, StoreError> {
        self.store.replace(session, expected_version, hints).await
    }

    async fn replace_reading_epoch(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<(bool, u64), StoreError> {
        self.store
            .replace_reading_epoch(session, expected_version, hints)
            .await
    }

    async fn clear_expired_grace(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.store.clear_expired_grace(id, now).await
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

    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        self.store.user_epoch(user_id).await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.store.list_user(user_id, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        SessionStore::ping(&self.store).await
    }

    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.store.remember_dpop_proof(key, expires_at, now).await
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.store.purge_expired(now).await
    }
}

#[async_trait]
impl<S: UserStore, G: Send + Sync + std::fmt::Debug> UserStore for Guarded<S, G> {
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
impl<S: AuditLog, G: Send + Sync + std::fmt::Debug> AuditLog for Guarded<S, G> {
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
