//! In-memory stores: [`MemoryStore`] implements [`SessionStore`],
//! [`UserStore`] and [`AuditLog`] over mutex-guarded maps.
//!
//! For unit tests of this crate and for library users' own tests. Nothing
//! survives the process, and nothing expires by itself: records stay until
//! [`SessionStore::purge_expired`] drops them, while every answer that takes
//! a `now` (listing, revoking, refreshing) already treats an expired
//! session as dead.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::{AuditEvent, AuditQuery};
use crate::secret::SessionId;
use crate::session::{RevokeReason, Session};
use crate::store::{AuditLog, SessionStore, StoreError, UserStore, WriteHints};
use crate::user::User;

/// Sessions, users and audit events held in memory.
///
/// Every operation takes one lock and finishes under it, so
/// [`SessionStore::replace`] is a true compare-and-swap and
/// [`SessionStore::create_limited`] is atomic.
#[derive(Default)]
pub struct MemoryStore {
    sessions: Mutex<HashMap<SessionId, Session>>,
    dpop_proofs: Mutex<HashMap<[u8; 32], OffsetDateTime>>,
    /// Per-user session epochs. Taken after `users` or `sessions` when
    /// both are held (never the other way round), so a create checks, and
    /// a revoke-all or password change moves, the epoch atomically.
    epochs: Mutex<HashMap<String, u64>>,
    users: Mutex<HashMap<String, User>>,
    audit: Mutex<AuditEntries>,
}

#[derive(Default)]
struct AuditEntries {
    /// In insertion order: oldest first.
    events: Vec<AuditEvent>,
    ids: HashSet<Uuid>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many session records are held, expired or revoked ones included.
    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// How many audit events are held.
    pub fn audit_len(&self) -> usize {
        lock(&self.audit).events.len()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Counts only: the records themselves are for the store's callers.
        f.debug_struct("MemoryStore")
            .field("sessions", &self.session_count())
            .field("users", &lock(&self.users).len())
            .field("audit_events", &self.audit_len())
            .finish()
    }
}

/// Takes a lock, shrugging off poisoning: every write below leaves the map
/// consistent before anything that could panic, so a poisoned map is sound.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Refuses a session opened under an epoch its user has moved past.
fn check_epoch(epochs: &HashMap<String, u64>, session: &Session) -> Result<(), StoreError> {
    if epochs.get(&session.user_id).copied().unwrap_or(0) > session.epoch {
        return Err(StoreError::Superseded);
    }
    Ok(())
}

/// Moves the user's epoch on.
fn bump_epoch(epochs: &mut HashMap<String, u64>, user_id: &str) {
    let e = epochs.entry(user_id.to_owned()).or_insert(0);
    *e = e.saturating_add(1);
}

/// The user's active sessions at `now`, oldest first (by creation time,
/// then id, so the order is total).
fn active_of_user(
    sessions: &HashMap<SessionId, Session>,
    user_id: &str,
    now: OffsetDateTime,
) -> Vec<SessionId> {
    let mut active: Vec<&Session> = sessions
        .values()
        .filter(|s| s.user_id == user_id && s.is_active(now))
        .collect();
    active.sort_by_key(|s| (s.created_at, s.id));
    active.into_iter().map(|s| s.id).collect()
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        let mut sessions = lock(&self.sessions);
        if sessions.contains_key(&session.id) {
            return Err(StoreError::Conflict);
        }
        check_epoch(&lock(&self.epochs), session)?;
        sessions.insert(session.id, session.clone());
        Ok(())
    }

    async fn create_limited(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut sessions = lock(&self.sessions);
        // Refuse before evicting anything: a conflict must change nothing.
        if sessions.contains_key(&session.id) {
            return Err(StoreError::Conflict);
        }
        check_epoch(&lock(&self.epochs), session)?;
        let mut evicted = Vec::new();
        if max > 0 {
            let active = active_of_user(&sessions, &session.user_id, now);
            let keep = usize::try_from(max - 1).unwrap_or(usize::MAX);
            let excess = active.len().saturating_sub(keep);
            for id in active.iter().take(excess) {
                if let Some(old) = sessions.get_mut(id) {
                    old.revoke(RevokeReason::SessionLimit, now);
                    evicted.push(old.clone());
                }
            }
        }
        sessions.insert(session.id, session.clone());
        Ok(evicted)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        Ok(lock(&self.sessions).get(id).cloned())
    }

    async fn replace(
        &self,
        session: &Session,
        expected_version: u64,
        _hints: WriteHints,
    ) -> Result<bool, StoreError> {
        let mut sessions = lock(&self.sessions);
        match sessions.get_mut(&session.id) {
            // A write never un-revokes (see the trait).
            Some(stored)
                if stored.version == expected_version
                    && (stored.revoked.is_none() || session.revoked.is_some()) =>
            {
                stored.clone_from(session);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        let mut sessions = lock(&self.sessions);
        match sessions.get_mut(id) {
            Some(s) if s.is_active(now) => {
                s.revoke(reason, now);
                Ok(Some(s.clone()))
            }
            _ => Ok(None),
        }
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut sessions = lock(&self.sessions);
        bump_epoch(&mut lock(&self.epochs), user_id);
        let ids = active_of_user(&sessions, user_id, now);
        let mut revoked = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(s) = sessions.get_mut(&id) {
                s.revoke(reason, now);
                revoked.push(s.clone());
            }
        }
        Ok(revoked)
    }

    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        Ok(lock(&self.epochs).get(user_id).copied().unwrap_or(0))
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let sessions = lock(&self.sessions);
        Ok(active_of_user(&sessions, user_id, now)
            .iter()
            .filter_map(|id| sessions.get(id).cloned())
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut proofs = lock(&self.dpop_proofs);
        if proofs.get(key).is_some_and(|until| now < *until) {
            return Ok(false);
        }
        if proofs.len() >= 4096 {
            proofs.retain(|_, until| now < *until);
        }
        proofs.insert(*key, expires_at);
        Ok(true)
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        lock(&self.dpop_proofs).retain(|_, until| now < *until);
        let mut sessions = lock(&self.sessions);
        let before = sessions.len();
        sessions.retain(|_, s| !s.is_expired(now));
        Ok(u64::try_from(before - sessions.len()).unwrap_or(u64::MAX))
    }
}

#[async_trait]
impl UserStore for MemoryStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let mut users = lock(&self.users);
        if users.contains_key(&user.username) {
            return Err(StoreError::Conflict);
        }
        users.insert(user.username.clone(), user.clone());
        Ok(())
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(lock(&self.users).get(username).cloned())
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        let mut users = lock(&self.users);
        let Some(user) = users.get_mut(username) else {
            return Ok(false);
        };
        password_hash.clone_into(&mut user.password_hash);
        bump_epoch(&mut lock(&self.epochs), username);
        Ok(true)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        Ok(lock(&self.users).remove(username).is_some())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut audit = lock(&self.audit);
        if audit.ids.insert(event.id) {
            audit.events.push(event.clone());
        }
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let audit = lock(&self.audit);
        // The cursor: only events inserted before it. An id this log never
        // held falls back to id order (UUID v7 ids follow time).
        let (end, cursor) = match query.before {
            None => (audit.events.len(), None),
            Some(before) => match audit.events.iter().position(|e| e.id == before) {
                Some(pos) => (pos, None),
                None => (audit.events.len(), Some(before)),
            },
        };
        let limit = usize::try_from(query.effective_limit()).unwrap_or(usize::MAX);
        Ok(audit.events[..end]
            .iter()
            .rev()
            .filter(|e| cursor.is_none_or(|c| e.id < c) && query.matches(e))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
