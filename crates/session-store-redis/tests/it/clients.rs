//! Stores built from the application's own clients (`from_client`,
//! `from_cluster_client`): sessions round-trip, revocations reach the
//! feed, and records are sealed when the options say so.

use session_conformance::fixtures::{base_time, open_session, secrets, unique_user};
use session_core::record::RecordCipher;
use session_core::{
    FeedEvent, Lifetimes, RevocationFeed, RevokeReason, SessionStore, TokenSecrets,
};
use session_store_redis::{RedisOptions, RedisStore};

use crate::{cleaned, next_event, redis_url, servers, unique_prefix};

async fn sessions_and_feed_work(store: &RedisStore) {
    let mut rx = store.subscribe().await.unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Connected);
    let now = base_time();
    let (mut s, _, _) = open_session(
        &secrets(),
        &unique_user("own-client"),
        &Lifetimes::default(),
        now,
    );
    s.user_agent = Some("OwnClient/1".into());
    store.create(&s).await.unwrap();
    let back = store.get(&s.id).await.unwrap().unwrap();
    assert_eq!(back.user_agent.as_deref(), Some("OwnClient/1"));
    store
        .revoke(&s.id, RevokeReason::Admin, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_event(&mut rx).await, FeedEvent::Revoked(s.id));
}

fn sealed() -> RedisOptions {
    RedisOptions {
        records: Some(RecordCipher::from_secrets(&TokenSecrets::from_master(
            &[9; 32],
        ))),
        ..RedisOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_own_client_serves_and_publishes() {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let store = RedisStore::from_client(client, &unique_prefix(), &sealed()).unwrap();
    let store = cleaned(store, vec![url], false);
    sessions_and_feed_work(&store.store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_on_the_applications_own_cluster_client_serves_and_publishes() {
    let nodes = servers::cluster_nodes();
    let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
    let client = redis::cluster::ClusterClient::new(urls.clone()).unwrap();
    let feed = urls
        .iter()
        .map(|u| redis::Client::open(u.as_str()).unwrap())
        .collect();
    let store = RedisStore::from_cluster_client(client, feed, &unique_prefix(), &sealed()).unwrap();
    assert!(store.is_cluster());
    let store = cleaned(store, urls, true);
    sessions_and_feed_work(&store.store).await;
}
