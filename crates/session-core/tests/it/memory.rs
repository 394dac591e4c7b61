//! `MemoryStore` against the whole conformance suite (one test per check,
//! each on a fresh store), plus what is particular to keeping records in
//! memory.

use std::sync::Arc;

use session_conformance::fixtures::{
    base_time, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::ApplyRefresh as _;
use session_core::WriteHints;
use session_core::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use session_core::memory::MemoryStore;
use session_core::rotation::RefreshOutcome;
use session_core::secret::SessionId;
use session_core::session::{Lifetimes, RevokeReason, Session};
use session_core::store::{AuditLog, SessionStore, StoreError};
use time::{Duration, OffsetDateTime};

async fn fresh() -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new())
}

mod sessions {
    session_conformance::session_store_tests!(super::fresh());
}

mod audit {
    session_conformance::audit_log_tests!(super::fresh());
}

mod users {
    session_conformance::user_store_tests!(super::fresh());
}

mod accounts {
    session_conformance::session_and_user_store_tests!(super::fresh());
}

/// A `MemoryStore` that yields to the scheduler around every read and
/// write, so that concurrent refreshes really interleave between their
/// read and their compare-and-swap (the bare store never yields).
#[derive(Debug, Default)]
struct Interleaving(MemoryStore);

#[async_trait::async_trait]
impl SessionStore for Interleaving {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        self.0.create(session).await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        tokio::task::yield_now().await;
        let got = self.0.get(id).await;
        tokio::task::yield_now().await;
        got
    }

    async fn replace(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<bool, StoreError> {
        tokio::task::yield_now().await;
        self.0.replace(session, expected_version, hints).await
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        self.0.revoke(id, reason, now).await
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.0.revoke_user(user_id, reason, now).await
    }

    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        self.0.user_epoch(user_id).await
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.0.list_user(user_id, now).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        SessionStore::ping(&self.0).await
    }

    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.0.remember_dpop_proof(key, expires_at, now).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_that_interleave_between_read_and_write_leave_one_live_successor() {
    for _ in 0..4 {
        let store: Arc<dyn SessionStore> = Arc::new(Interleaving::default());
        session_conformance::sessions::concurrent_rotations_of_one_token_leave_one_live_successor(
            Arc::clone(&store),
        )
        .await;
        session_conformance::sessions::concurrent_rotations_without_grace_revoke_the_family(store)
            .await;
    }
}

#[tokio::test]
async fn every_check_passes_with_all_three_traits_on_one_shared_store() {
    let store = fresh().await;
    session_conformance::session_store_suite(Arc::clone(&store)).await;
    session_conformance::audit_log_suite(Arc::clone(&store)).await;
    session_conformance::user_store_suite(store).await;
}

#[tokio::test]
async fn expired_records_stay_readable_until_purged_and_purging_keeps_live_ones() {
    let store = MemoryStore::new();
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("purge");
    let short = Lifetimes {
        idle_timeout: Duration::minutes(5),
        ..Lifetimes::default()
    };
    let (dying, _, _) = open_session(&secrets, &user, &short, now);
    let (living, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
    store.create(&dying).await.unwrap();
    store.create(&living).await.unwrap();

    let later = secs(now, 600);
    assert_eq!(
        store.list_user(&user, later).await.unwrap().len(),
        1,
        "listing already omits it"
    );
    assert!(
        store.get(&dying.id).await.unwrap().is_some(),
        "get has no clock: the record stays"
    );

    assert_eq!(store.purge_expired(later).await.unwrap(), 1);
    assert_eq!(store.get(&dying.id).await.unwrap(), None);
    assert_eq!(store.get(&living.id).await.unwrap(), Some(living));
    assert_eq!(
        store.purge_expired(later).await.unwrap(),
        0,
        "nothing left to purge"
    );
    assert_eq!(store.session_count(), 1);
}

#[tokio::test]
async fn a_conflicting_create_limited_evicts_nobody() {
    let store = MemoryStore::new();
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("limit-conflict");
    let (first, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
    store.create(&first).await.unwrap();

    let err = store
        .create_limited(&first, 1, secs(now, 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    assert_eq!(
        store.get(&first.id).await.unwrap(),
        Some(first),
        "the limit evicted nothing"
    );
}

#[tokio::test]
async fn a_revoked_session_is_gone_from_every_read_that_takes_a_time() {
    let store = MemoryStore::new();
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("revoked-reads");
    let (session, _, p0) = open_session(&secrets, &user, &Lifetimes::default(), now);
    store.create(&session).await.unwrap();
    store
        .revoke(&session.id, RevokeReason::Logout, now)
        .await
        .unwrap()
        .unwrap();

    assert!(store.list_user(&user, now).await.unwrap().is_empty());
    assert!(
        store
            .revoke_user(&user, RevokeReason::Admin, now)
            .await
            .unwrap()
            .is_empty()
    );
    let (_, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(Duration::seconds(10)), now)
        .await
        .unwrap();
    assert_eq!(result.outcome, RefreshOutcome::Revoked);
}

#[tokio::test]
async fn an_audit_cursor_this_log_never_held_pages_by_id_order() {
    let log = MemoryStore::new();
    let now = base_time();
    let user = unique_user("foreign-cursor");
    let events: Vec<_> = (0..4)
        .map(|i| {
            AuditEvent::new(AuditKind::SessionRefreshed, Actor::User, secs(now, i * 10)).user(&user)
        })
        .collect();
    for e in &events {
        log.append(e).await.unwrap();
    }
    // An id from between the second and the third event, never appended.
    let foreign = AuditEvent::new(AuditKind::LoginFailed, Actor::System, secs(now, 15)).id;
    let page = log
        .query(&AuditQuery {
            user_id: Some(user),
            before: Some(foreign),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page, vec![events[1].clone(), events[0].clone()]);
    assert_eq!(log.audit_len(), 4);
}

#[test]
fn debug_output_shows_counts_not_records() {
    let store = MemoryStore::new();
    let shown = format!("{store:?}");
    assert!(shown.contains("sessions: 0"), "{shown}");
}
