//! A Redis that is gone or frozen gives `StoreError::Unavailable` within the
//! command timeout, never a hang; one that comes back is used again.

use std::time::Duration;

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, unique_user,
};
use session_core::user::User;
use session_core::{
    Lifetimes, RevocationFeed as _, RevokeReason, SessionStore, StoreError, UserStore,
};
use session_store_redis::RedisStore;

use crate::servers::{Throwaway, free_port};
use session_core::ApplyRefresh as _;
use session_core::WriteHints;

/// A generous bound that tells "answers" from "hangs" (not a speed check).
const NOT_A_HANG: Duration = Duration::from_secs(20);

fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    let start = std::time::Instant::now();
    let out = tokio::time::timeout(NOT_A_HANG, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"));
    println!("{what}: answered after {:?}", start.elapsed());
    out
}

/// Pings until the store answers again (its connection reconnects in the
/// background after an outage).
pub(crate) async fn wait_until_answering(store: &RedisStore) {
    bounded("reconnecting", async {
        while store.ping().await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_a_stopped_redis_is_unavailable_and_a_restarted_one_is_used_again() {
    let mut server = Throwaway::start();
    let store = RedisStore::connect(&server.url(), "outage").await.unwrap();
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("outage");
    let (session, _, p0) = open_session(&secrets, &user, &Lifetimes::default(), now);
    store.create(&session).await.unwrap();

    server.stop();
    let (other, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
    let (_, _, next) = mint(&secrets, &session.id, 1);
    assert_unavailable("ping", bounded("ping", store.ping()).await);
    assert_unavailable("create", bounded("create", store.create(&other)).await);
    assert_unavailable(
        "create_limited",
        bounded("create_limited", store.create_limited(&other, 2, now)).await,
    );
    assert_unavailable(
        "replace",
        bounded("replace", store.replace(&session, 0, WriteHints::NONE)).await,
    );
    assert_unavailable(
        "revoke",
        bounded(
            "revoke",
            store.revoke(&session.id, RevokeReason::Admin, now),
        )
        .await,
    );
    assert_unavailable(
        "revoke_user",
        bounded(
            "revoke_user",
            store.revoke_user(&user, RevokeReason::Admin, now),
        )
        .await,
    );
    assert_unavailable(
        "list_user",
        bounded("list_user", store.list_user(&user, now)).await,
    );
    assert_unavailable(
        "refresh",
        bounded(
            "refresh",
            store.refresh(&p0, &next, &params(default_grace()), now),
        )
        .await,
    );
    assert_unavailable(
        "get_user",
        bounded("get_user", store.get_user("nobody")).await,
    );
    let u = User {
        username: unique_user("u"),
        password_hash: "x".into(),
        created_at: now,
    };
    assert_unavailable(
        "create_user",
        bounded("create_user", store.create_user(&u)).await,
    );

    server.restart();
    wait_until_answering(&store).await;
    // The restarted server is empty (no persistence): the session is gone,
    // and the store works normally again.
    assert!(store.get(&session.id).await.unwrap().is_none());
    store.create(&other).await.unwrap();
    assert_eq!(store.get(&other.id).await.unwrap().unwrap(), other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_times_out_as_unavailable() {
    let server = Throwaway::start();
    let store =
        RedisStore::connect_with_timeout(&server.url(), "frozen", Duration::from_millis(500))
            .await
            .unwrap();
    store.ping().await.unwrap();
    server.freeze();
    assert_unavailable("ping", bounded("ping", store.ping()).await);
    let (s, _, _) = open_session(
        &secrets(),
        &unique_user("frozen"),
        &Lifetimes::default(),
        base_time(),
    );
    assert_unavailable("get", bounded("get", store.get(&s.id)).await);
    server.thaw();
    wait_until_answering(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_port_nobody_listens_on_is_unavailable() {
    let port = free_port();
    let r = bounded(
        "connect",
        RedisStore::connect(&format!("redis://127.0.0.1:{port}"), "nobody"),
    )
    .await;
    assert_unavailable("connect", r);
    let r = bounded(
        "cluster connect",
        RedisStore::connect(&format!("redis+cluster://127.0.0.1:{port}"), "nobody"),
    )
    .await;
    assert_unavailable("cluster connect", r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_urls_and_prefixes_are_refused() {
    for (url, prefix) in [
        ("http://127.0.0.1:6379", "p"),
        ("redis+cluster://", "p"),
        (crate::redis_url().as_str(), "a{b}"),
        (crate::redis_url().as_str(), ""),
    ] {
        match RedisStore::connect(url, prefix).await {
            Err(StoreError::Backend(_)) => {}
            other => panic!("{url} / {prefix:?}: expected a configuration error, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_cannot_subscribe_keeps_trying_without_reporting_connected() {
    let mut server = Throwaway::start();
    let store = RedisStore::connect(&server.url(), "latefeed")
        .await
        .unwrap();
    server.stop();
    let mut rx = store.subscribe().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "no event while Redis is down"
    );
    server.restart();
    assert_eq!(
        crate::next_event(&mut rx).await,
        session_core::FeedEvent::Connected
    );
}
