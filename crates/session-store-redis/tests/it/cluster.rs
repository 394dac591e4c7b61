//! Behaviour specific to a Redis cluster: one slot per user, races across
//! connections, and pub/sub across nodes.

use std::collections::HashSet;
use std::sync::Arc;

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, unique_user,
};
use session_core::rotation::RefreshOutcome;
use session_core::{FeedEvent, Lifetimes, RevocationFeed, RevokeReason, SessionStore};
use time::Duration;

use crate::{Probe as _, cluster_store, next_event, servers};
use session_core::ApplyRefresh as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_of_one_token_on_the_cluster_rotate_exactly_once() {
    let store = cluster_store().await;
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = open_session(&secrets, &unique_user("race"), &Lifetimes::default(), now);
    store.create(&session).await.unwrap();

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let (_, presented, next) = mint(&secrets, &session.id, 1);
            tokio::spawn(async move {
                let r = store
                    .refresh(&p0, &next, &params(default_grace()), now)
                    .await
                    .unwrap();
                (r.outcome, presented.digest)
            })
        })
        .collect();
    let mut rotated = Vec::new();
    let mut replays = HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            (RefreshOutcome::Rotated, digest) => rotated.push(digest),
            (RefreshOutcome::GraceReplay { sealed }, _) => {
                replays.insert(sealed);
            }
            (other, _) => panic!("a concurrent refresh inside grace gave {other:?}"),
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one refresh rotates");
    assert!(
        replays.len() <= 1,
        "every other refresh replays the one successor"
    );
    let stored = store.get(&session.id).await.unwrap().unwrap();
    assert_eq!(stored.refresh.generation, 1);
    assert_eq!(
        stored.refresh.current, rotated[0],
        "the winner's successor is the live token"
    );
    if let Some(sealed) = replays.into_iter().next() {
        assert_eq!(Some(sealed), stored.refresh.grace_successor);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_refreshes_without_grace_rotate_once_and_revoke_the_family() {
    let store = cluster_store().await;
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) =
        open_session(&secrets, &unique_user("race0"), &Lifetimes::default(), now);
    store.create(&session).await.unwrap();

    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            let (_, _, next) = mint(&secrets, &session.id, 1);
            tokio::spawn(async move {
                store
                    .refresh(&p0, &next, &params(Duration::ZERO), now)
                    .await
                    .unwrap()
                    .outcome
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let rotated = outcomes
        .iter()
        .filter(|o| **o == RefreshOutcome::Rotated)
        .count();
    assert_eq!(rotated, 1, "exactly one refresh rotates: {outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            RefreshOutcome::Rotated | RefreshOutcome::Reused | RefreshOutcome::Revoked
        )),
        "{outcomes:?}"
    );
    let stored = store.get(&session.id).await.unwrap().unwrap();
    assert_eq!(
        stored.revoked.map(|r| r.reason),
        Some(RevokeReason::ReuseDetected),
        "a replay without grace is a reuse: the family is revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_never_exceed_the_per_user_limit_on_the_cluster() {
    let store = cluster_store().await;
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("limit");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let (session, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
            tokio::spawn(async move { store.create_limited(&session, 3, now).await.unwrap().len() })
        })
        .collect();
    let mut evicted = 0;
    for t in tasks {
        evicted += t.await.unwrap();
    }
    assert_eq!(
        evicted, 17,
        "every login beyond the limit evicts exactly one session"
    );
    assert_eq!(store.list_user(&user, now).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_and_its_grace_successor_live_in_one_slot() {
    let store = cluster_store().await;
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = open_session(&secrets, "user{with}braces", &Lifetimes::default(), now);
    store.create(&session).await.unwrap();
    let (_, _, next) = mint(&secrets, &session.id, 1);
    let r = store
        .refresh(&p0, &next, &params(default_grace()), now)
        .await
        .unwrap();
    assert_eq!(r.outcome, RefreshOutcome::Rotated);
    let s = store.store.session_key(&session.id);
    let g = store.store.grace_key(&session.id);
    let slot = |k: &str| -> i64 { store.raw(k, redis::cmd("CLUSTER").arg("KEYSLOT").arg(k)) };
    assert_eq!(slot(&s), slot(&g));
    let stored = store.get(&session.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        r.session.unwrap(),
        "both keys read back in one MGET"
    );
    assert_eq!(
        store.list_user(&session.user_id, now).await.unwrap().len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_on_every_node_reach_a_subscriber_on_one_node() {
    let store = cluster_store().await;
    let mut rx = store.store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);

    let secrets = secrets();
    let now = base_time();
    // Open sessions until they sit on every node of the cluster.
    let nodes: HashSet<String> = servers::cluster_nodes().into_iter().collect();
    let mut covered = HashSet::new();
    let mut sessions = Vec::new();
    while covered != nodes {
        assert!(sessions.len() < 500, "sessions never covered every node");
        let (s, _, _) = open_session(&secrets, &unique_user("fanout"), &Lifetimes::default(), now);
        store.create(&s).await.unwrap();
        covered.insert(servers::cluster_node_of(&store.store.session_key(&s.id)));
        sessions.push(s);
    }
    let mut expected = HashSet::new();
    for s in &sessions {
        store
            .revoke(&s.id, RevokeReason::Admin, now)
            .await
            .unwrap()
            .unwrap();
        expected.insert(s.id);
    }
    let mut seen = HashSet::new();
    while seen != expected {
        match next_event(&mut rx).await {
            FeedEvent::Revoked(id) => {
                seen.insert(id);
            }
            other => panic!("unexpected feed event {other:?}"),
        }
    }
}
