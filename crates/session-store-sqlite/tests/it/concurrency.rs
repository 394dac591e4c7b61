//! Writers on one file, through separate store handles (as two server
//! processes would be), never break the compare-and-swap or the limit.

use std::sync::Arc;

use futures::future::join_all;
use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::SessionStore;
use session_core::rotation::RefreshOutcome;
use session_core::session::{Lifetimes, RevokeReason};
use session_store_sqlite::SqliteStore;

use crate::support::db_path;
use session_core::ApplyRefresh as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_refreshes_of_one_token_on_one_file_rotate_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let handles = [
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ];
    let secrets = Arc::new(secrets());
    let now = base_time();
    let (session, _, presented) =
        open_session(&secrets, &unique_user("race"), &Lifetimes::default(), now);
    handles[0].create(&session).await.unwrap();

    let tasks = (0..20).map(|i| {
        let store = Arc::clone(&handles[i % 2]);
        let secrets = Arc::clone(&secrets);
        tokio::spawn(async move {
            let (_, _, next) = mint(&secrets, &presented.session_id, 1);
            store
                .refresh(&presented, &next, &params(default_grace()), secs(now, 1))
                .await
                .unwrap()
        })
    });
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let rotated: Vec<_> = results
        .iter()
        .filter(|r| r.outcome == RefreshOutcome::Rotated)
        .collect();
    assert_eq!(rotated.len(), 1, "exactly one refresh rotates");
    let winner = rotated[0].session.clone().unwrap();
    let sealed = winner.refresh.grace_successor.clone().unwrap();
    for r in &results {
        match &r.outcome {
            RefreshOutcome::Rotated => {}
            RefreshOutcome::GraceReplay { sealed: replayed } => {
                assert_eq!(replayed, &sealed, "every loser gets the winner's successor");
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let stored = handles[1].get(&session.id).await.unwrap().unwrap();
    assert_eq!(stored, winner);
    assert_eq!(stored.refresh.generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_never_exceed_the_per_user_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let handles = [
        Arc::new(SqliteStore::open(&path).await.unwrap()),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ];
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("limit");
    let tasks = (0..12).map(|i| {
        let store = Arc::clone(&handles[i % 2]);
        let (session, _, _) = open_session(&secrets, &user, &Lifetimes::default(), secs(now, 0));
        tokio::spawn(async move { store.create_limited(&session, 3, now).await.unwrap() })
    });
    let evicted: usize = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap().len())
        .sum();

    let active = handles[0].list_user(&user, secs(now, 1)).await.unwrap();
    assert_eq!(active.len(), 3, "the limit holds under concurrent logins");
    assert_eq!(evicted, 9, "every other session was evicted exactly once");
    let revoked = handles[1]
        .revoke_user(&user, RevokeReason::RevokeAll, secs(now, 2))
        .await
        .unwrap();
    assert_eq!(revoked.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audit_appends_are_group_committed_and_each_lands_once() {
    use session_core::AuditLog as _;
    use session_core::audit::{Actor, AuditEvent, AuditKind, AuditQuery};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let store = std::sync::Arc::new(
        session_store_sqlite::SqliteStore::open(&path)
            .await
            .unwrap(),
    );
    let base = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let mut tasks = Vec::new();
    for i in 0..300i64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let e = AuditEvent::new(
                AuditKind::SessionRevoked,
                Actor::Admin,
                base + time::Duration::milliseconds(i),
            )
            .user("group-commit");
            // Every append returns only once its event is committed; a
            // repeat of the same id is a no-op.
            store.append(&e).await.unwrap();
            store.append(&e).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.close().await;
    let reopened = session_store_sqlite::SqliteStore::open(&path)
        .await
        .unwrap();
    let events = reopened
        .query(&AuditQuery {
            user_id: Some("group-commit".into()),
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 300);
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 300);
}

/// Rotations of many sessions at once share commits (group commit); each
/// still wins alone, in order, and every one of them is on disk after the
/// file is closed and opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_rotation_chains_of_many_sessions_all_land_and_survive_a_reopen() {
    const SESSIONS: usize = 40;
    const ROTATIONS: u64 = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let secrets = Arc::new(secrets());
    let now = base_time();
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let (session, _, presented) =
            open_session(&secrets, &unique_user("chains"), &Lifetimes::default(), now);
        store.create(&session).await.unwrap();
        let (store, secrets) = (Arc::clone(&store), Arc::clone(&secrets));
        tasks.push(tokio::spawn(async move {
            let mut presented = presented;
            for generation in 1..=ROTATIONS {
                let (_, following, next) = mint(&secrets, &session.id, generation);
                let step = i64::try_from(generation).unwrap() * 60;
                let result = store
                    .refresh(&presented, &next, &params(default_grace()), secs(now, step))
                    .await
                    .unwrap();
                assert_eq!(
                    result.outcome,
                    RefreshOutcome::Rotated,
                    "rotation {generation}"
                );
                presented = following;
            }
            session.id
        }));
    }
    let ids: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    store.close().await;

    let reopened = SqliteStore::open(&path).await.unwrap();
    for id in &ids {
        let stored = reopened.get(id).await.unwrap().unwrap();
        assert_eq!(stored.refresh.generation, ROTATIONS);
        assert!(stored.revoked.is_none());
    }
}

/// A create refused inside a shared batch (its id is taken) rolls back
/// alone: the evictions it made before its insert failed are undone, and
/// the creates committed beside it stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_refused_in_a_batch_undoes_its_own_evictions_only() {
    use session_core::StoreError;

    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let secrets = secrets();
    let now = base_time();
    let (taken, _, _) = open_session(&secrets, &unique_user("taken"), &Lifetimes::default(), now);
    store.create(&taken).await.unwrap();

    let mut tasks = Vec::new();
    let mut bystanders = Vec::new();
    for i in 0..30 {
        let user = unique_user("batch");
        let (mut session, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
        if i % 3 == 0 {
            // The user's one session would be evicted (limit 1) before the
            // insert of a session whose id is already stored fails.
            let (existing, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
            store.create(&existing).await.unwrap();
            bystanders.push((user.clone(), existing.id));
            session.id = taken.id;
        }
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            (
                session.id,
                store.create_limited(&session, 1, secs(now, 1)).await,
            )
        }));
    }
    let results: Vec<_> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let refused = results
        .iter()
        .filter(|(_, r)| matches!(r, Err(StoreError::Conflict)))
        .count();
    assert_eq!(refused, 10, "each create of the taken id is refused");
    for (id, result) in results.iter().filter(|(id, _)| *id != taken.id) {
        assert!(result.as_ref().unwrap().is_empty(), "no session to evict");
        assert!(
            store.get(id).await.unwrap().is_some(),
            "committed beside the refused"
        );
    }
    for (user, id) in &bystanders {
        let active = store.list_user(user, secs(now, 2)).await.unwrap();
        assert_eq!(active.len(), 1, "the refused create's eviction was undone");
        assert_eq!(active[0].id, *id);
    }
    let stored = store.get(&taken.id).await.unwrap().unwrap();
    assert_eq!(stored, taken, "the taken id still holds its own session");
}

/// Compare-and-swaps of many sessions at once share one statement
/// (`group.rs`); each still wins or loses by its own version: the ones
/// that expected the stored version land, the ones that expected another
/// leave their session as it was, whatever the others in the batch did.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaces_in_one_batch_win_or_lose_by_their_own_version() {
    use session_core::WriteHints;

    const SESSIONS: usize = 48;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&db_path(dir.path())).await.unwrap());
    let secrets = secrets();
    let now = base_time();
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        let (session, _, _) =
            open_session(&secrets, &unique_user("cas"), &Lifetimes::default(), now);
        store.create(&session).await.unwrap();
        sessions.push(session);
    }
    let tasks = sessions.iter().enumerate().map(|(i, session)| {
        let store = Arc::clone(&store);
        let mut next = session.clone();
        next.version += 1;
        next.last_seen_at = secs(now, 30);
        next.metadata = serde_json::json!({ "written": i });
        // Every third expects a version that is not stored.
        let expected = if i % 3 == 0 {
            session.version + 7
        } else {
            session.version
        };
        async move { store.replace(&next, expected, WriteHints::NONE).await }
    });
    let won: Vec<bool> = join_all(tasks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for (i, (session, won)) in sessions.iter().zip(won).enumerate() {
        let stored = store.get(&session.id).await.unwrap().unwrap();
        if i % 3 == 0 {
            assert!(!won, "session {i} expected a stale version");
            assert_eq!(stored.version, session.version, "session {i} untouched");
            assert_eq!(stored.metadata, session.metadata, "session {i} untouched");
        } else {
            assert!(won, "session {i} expected the stored version");
            assert_eq!(stored.version, session.version + 1);
            assert_eq!(stored.metadata, serde_json::json!({ "written": i }));
            assert_eq!(stored.last_seen_at, secs(now, 30));
        }
    }
}
