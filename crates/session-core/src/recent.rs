//! The sessions a store instance wrote last, kept in its own memory so that
//! the next refresh of one of them can plan on that copy instead of reading
//! the record back (one store round trip fewer on the hot path).
//!
//! A copy is a hint, never an answer: it may be stale, because another
//! instance or process may have written the record since. What makes it safe
//! is the compare-and-swap every store already does. Every write that
//! changes what a refresh decides moves the record's version, so a write
//! planned on a stale copy finds another version and loses; the refresh
//! then forgets the copy and reads the record from the store (see
//! [`crate::store::SessionStore::recent`] and [`crate::ApplyRefresh`]).
//!
//! Bounded: the least useful copies are evicted past the capacity. A
//! revoked session is not kept (nothing will refresh it).

use std::sync::Arc;

use crate::secret::SessionId;
use crate::session::Session;

/// How many sessions a store keeps copies of by default (a few MiB).
pub const DEFAULT_RECENT_WRITES: u64 = 10_000;

/// Copies of the sessions this instance wrote last, by id. Cloning shares
/// them.
#[derive(Clone)]
pub struct RecentWrites {
    copies: Option<moka::sync::Cache<SessionId, Arc<Session>>>,
}

impl std::fmt::Debug for RecentWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentWrites")
            .field(
                "capacity",
                &self.copies.as_ref().and_then(|c| c.policy().max_capacity()),
            )
            .finish()
    }
}

impl Default for RecentWrites {
    fn default() -> Self {
        Self::new(DEFAULT_RECENT_WRITES)
    }
}

impl RecentWrites {
    /// Keeps copies of up to `capacity` sessions; 0 keeps none (every
    /// refresh reads the store).
    pub fn new(capacity: u64) -> Self {
        Self {
            copies: (capacity > 0).then(|| moka::sync::Cache::new(capacity)),
        }
    }

    /// The store has just written `session` (a create, or a compare-and-swap
    /// it won): keep it as the copy of its record, or forget the copy when
    /// the session is revoked.
    pub fn wrote(&self, session: &Session) {
        let Some(copies) = &self.copies else { return };
        if session.revoked.is_some() {
            copies.invalidate(&session.id);
        } else {
            copies.insert(session.id, Arc::new(session.clone()));
        }
    }

    /// A write to session `id` lost (or its outcome is unknown): its copy,
    /// if any, is stale.
    pub fn forget(&self, id: &SessionId) {
        if let Some(copies) = &self.copies {
            copies.invalidate(id);
        }
    }

    /// The copy of session `id`, if this instance keeps one.
    pub fn get(&self, id: &SessionId) -> Option<Session> {
        self.copies.as_ref()?.get(id).map(|s| Session::clone(&s))
    }
}
