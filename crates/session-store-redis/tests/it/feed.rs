//! The revocation feed: every kind of revocation is published, and the feed
//! says when it loses and regains its subscription.

use std::collections::HashSet;

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, unique_user,
};
use session_core::rotation::RefreshOutcome;
use session_core::{FeedEvent, Lifetimes, RevocationFeed, RevokeReason, SessionId, SessionStore};
use session_store_redis::RedisStore;

use crate::servers::Throwaway;
use crate::{next_event, single_store};
use session_core::ApplyRefresh as _;

async fn expect_revoked(
    rx: &mut tokio::sync::mpsc::Receiver<FeedEvent>,
    mut want: HashSet<SessionId>,
) {
    while !want.is_empty() {
        match next_event(rx).await {
            FeedEvent::Revoked(id) => assert!(want.remove(&id), "unexpected revocation of {id}"),
            other => panic!("unexpected feed event {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_revocation_is_published_on_the_feed() {
    let store = single_store().await;
    let mut rx = store.store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);
    let secrets = secrets();
    let now = base_time();
    let lifetimes = Lifetimes::default();

    // revoke (logout)
    let (a, _, _) = open_session(&secrets, &unique_user("feed"), &lifetimes, now);
    store.create(&a).await.unwrap();
    store
        .revoke(&a.id, RevokeReason::Logout, now)
        .await
        .unwrap()
        .unwrap();
    expect_revoked(&mut rx, HashSet::from([a.id])).await;

    // revoke_user
    let user = unique_user("feed-all");
    let (b1, _, _) = open_session(&secrets, &user, &lifetimes, now);
    let (b2, _, _) = open_session(&secrets, &user, &lifetimes, now);
    store.create(&b1).await.unwrap();
    store.create(&b2).await.unwrap();
    assert_eq!(
        store
            .revoke_user(&user, RevokeReason::RevokeAll, now)
            .await
            .unwrap()
            .len(),
        2
    );
    expect_revoked(&mut rx, HashSet::from([b1.id, b2.id])).await;

    // reuse of a rotated-away token
    let (c, _, p0) = open_session(&secrets, &unique_user("feed-reuse"), &lifetimes, now);
    store.create(&c).await.unwrap();
    let (_, _, next) = mint(&secrets, &c.id, 1);
    let grace0 = params(time::Duration::ZERO);
    assert_eq!(
        store
            .refresh(&p0, &next, &grace0, now)
            .await
            .unwrap()
            .outcome,
        RefreshOutcome::Rotated
    );
    let (_, _, next) = mint(&secrets, &c.id, 1);
    assert_eq!(
        store
            .refresh(&p0, &next, &grace0, now)
            .await
            .unwrap()
            .outcome,
        RefreshOutcome::Reused
    );
    expect_revoked(&mut rx, HashSet::from([c.id])).await;

    // anomaly: another user agent
    let (d, _, p0) = open_session(&secrets, &unique_user("feed-anomaly"), &lifetimes, now);
    store.create(&d).await.unwrap();
    let (_, _, next) = mint(&secrets, &d.id, 1);
    let mut odd = params(default_grace());
    odd.client.user_agent = Some("curl/8".into());
    assert_eq!(
        store.refresh(&p0, &next, &odd, now).await.unwrap().outcome,
        RefreshOutcome::AnomalyRevoked
    );
    expect_revoked(&mut rx, HashSet::from([d.id])).await;

    // session limit
    let user = unique_user("feed-limit");
    let (e1, _, _) = open_session(&secrets, &user, &lifetimes, now);
    let (e2, _, _) = open_session(
        &secrets,
        &user,
        &lifetimes,
        now + time::Duration::seconds(1),
    );
    store.create(&e1).await.unwrap();
    let evicted = store.create_limited(&e2, 1, now).await.unwrap();
    assert_eq!(evicted.len(), 1);
    expect_revoked(&mut rx, HashSet::from([e1.id])).await;

    // Nothing is published for a no-op (already revoked).
    assert!(
        store
            .revoke(&a.id, RevokeReason::Admin, now)
            .await
            .unwrap()
            .is_none()
    );
    let (f, _, _) = open_session(&secrets, &unique_user("feed-marker"), &lifetimes, now);
    store.create(&f).await.unwrap();
    store
        .revoke(&f.id, RevokeReason::Admin, now)
        .await
        .unwrap()
        .unwrap();
    expect_revoked(&mut rx, HashSet::from([f.id])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reports_a_restart_as_disconnected_then_connected() {
    let mut server = Throwaway::start();
    let store = RedisStore::connect(&server.url(), "feedrestart")
        .await
        .unwrap();
    let mut rx = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);

    server.stop();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Disconnected);
    server.restart();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);

    // And the feed works again after it.
    let secrets = secrets();
    let now = base_time();
    let (s, _, _) = open_session(&secrets, &unique_user("after"), &Lifetimes::default(), now);
    crate::outage::wait_until_answering(&store).await;
    store.create(&s).await.unwrap();
    store
        .revoke(&s.id, RevokeReason::Admin, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Revoked(s.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_feed_stays_connected_and_a_frozen_one_is_reported_disconnected() {
    let server = Throwaway::start();
    let store = RedisStore::connect_with_timeout(
        &server.url(),
        "keepalive",
        std::time::Duration::from_millis(500),
    )
    .await
    .unwrap();
    let mut rx = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);

    // Two keepalive pings (every 5 s) pass without an event.
    let quiet = tokio::time::timeout(std::time::Duration::from_secs(11), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "a healthy quiet feed reports nothing, got {quiet:?}"
    );

    // A server that stops answering (no FIN, no RST) is noticed by the
    // keepalive.
    server.freeze();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Disconnected);
    server.thaw();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);
}
