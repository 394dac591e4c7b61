//! Integration tests against real Redis: the single node at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`) and a 3-node cluster at
//! `REDIS_CLUSTER_NODES` (comma-separated `host:port`; when unset, the tests
//! start their own cluster with `redis-server`). A missing Redis fails the
//! tests; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: tests

mod clients;
mod cluster;
mod conformance;
mod eviction;
mod expiry;
mod feed;
mod index;
mod memory;
mod outage;
mod servers;
mod shared;

use std::sync::Arc;

use session_conformance::guarded::Guarded;
use session_core::{FeedEvent, SessionId};
use session_store_redis::RedisStore;
use time::OffsetDateTime;

/// The shared single node.
pub(crate) fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A prefix no other test (or concurrent run) uses.
/// Both deployments, for tests that run on each.
pub(crate) async fn both_stores() -> [Arc<Cleaned>; 2] {
    [single_store().await, cluster_store().await]
}

/// The `PEXPIREAT` value for an instant: Unix ms rounded up.
pub(crate) fn ms(t: OffsetDateTime) -> i64 {
    let n = t.unix_timestamp_nanos();
    i64::try_from(n.div_euclid(1_000_000) + i128::from(n.rem_euclid(1_000_000) != 0)).unwrap()
}

/// A feed event, or a failure after a generous bound (liveness, not speed).
pub(crate) async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<FeedEvent>) -> FeedEvent {
    tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
        .await
        .expect("a feed event within 30 s")
        .expect("the feed is still running")
}

pub(crate) fn unique_prefix() -> String {
    format!(
        "it-{}",
        SessionId::generate().to_string().replace(['-', '_'], "x")
    )
}

/// A store on the shared single node under a fresh prefix; its keys are
/// deleted when it is dropped.
pub(crate) async fn single_store() -> Arc<Cleaned> {
    single_store_with_prefix(&unique_prefix()).await
}

/// [`single_store`] under a given prefix.
pub(crate) async fn single_store_with_prefix(prefix: &str) -> Arc<Cleaned> {
    let url = redis_url();
    let store = RedisStore::connect(&url, prefix)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is required (set REDIS_URL): {e:?}"));
    Arc::new(cleaned(store, vec![url], false))
}

/// [`single_store`] sealing its records' private fields at rest.
pub(crate) async fn single_sealed_store() -> Arc<Cleaned> {
    let url = redis_url();
    let options = session_store_redis::RedisOptions {
        records: Some(session_core::record::RecordCipher::from_secrets(
            &session_core::TokenSecrets::from_master(&[5; 32]),
        )),
        ..session_store_redis::RedisOptions::default()
    };
    let store = RedisStore::connect_with(&url, &unique_prefix(), &options)
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is required (set REDIS_URL): {e:?}"));
    Arc::new(cleaned(store, vec![url], false))
}

/// A store on the test cluster under a fresh prefix; its keys are deleted
/// when it is dropped.
pub(crate) async fn cluster_store() -> Arc<Cleaned> {
    cluster_store_with_prefix(&unique_prefix()).await
}

/// [`cluster_store`] under a given prefix.
pub(crate) async fn cluster_store_with_prefix(prefix: &str) -> Arc<Cleaned> {
    let nodes = servers::cluster_nodes();
    let url = format!("redis+cluster://{}", nodes.join(","));
    let store = RedisStore::connect(&url, prefix)
        .await
        .unwrap_or_else(|e| panic!("the Redis cluster at {url} is required: {e:?}"));
    assert!(store.is_cluster());
    Arc::new(cleaned(
        store,
        nodes.iter().map(|n| format!("redis://{n}")).collect(),
        true,
    ))
}

/// A [`RedisStore`] whose keys are deleted when it is dropped.
pub(crate) type Cleaned = Guarded<RedisStore, KeyCleaner>;

pub(crate) fn cleaned(store: RedisStore, nodes: Vec<String>, cluster: bool) -> Cleaned {
    let pattern = store.key_pattern();
    Guarded::new(
        store,
        KeyCleaner {
            nodes,
            cluster,
            pattern,
        },
    )
}

/// Deletes every key matching its pattern, on every node it knows, when
/// dropped (after the store, which [`Guarded`] drops first).
#[derive(Debug)]
pub(crate) struct KeyCleaner {
    nodes: Vec<String>,
    cluster: bool,
    pattern: String,
}

/// Direct looks at a test store's keys, beside the store's own API.
pub(crate) trait Probe {
    /// A plain connection to the node that serves `key`.
    fn node_for(&self, key: &str) -> redis::Connection;
    /// Runs `cmd` (whose first argument is `key`) on the node serving `key`.
    fn raw<T: redis::FromRedisValue>(&self, key: &str, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut self.node_for(key)).unwrap()
    }
    /// The absolute expiry of `key` in Unix ms (-1 none, -2 no key).
    fn pexpiretime(&self, key: &str) -> i64 {
        self.raw(key, redis::cmd("PEXPIRETIME").arg(key))
    }
    /// Every key under the prefix, on every node.
    fn keys(&self) -> Vec<String>;
}

impl Probe for Cleaned {
    fn node_for(&self, key: &str) -> redis::Connection {
        let url = if self.guard.cluster {
            format!("redis://{}", servers::cluster_node_of(key))
        } else {
            self.guard.nodes[0].clone()
        };
        redis::Client::open(url).unwrap().get_connection().unwrap()
    }

    fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for node in &self.guard.nodes {
            let mut con = redis::Client::open(node.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&self.guard.pattern)
                .query(&mut con)
                .unwrap();
            out.extend(keys);
        }
        out
    }
}

impl Drop for KeyCleaner {
    fn drop(&mut self) {
        for node in &self.nodes {
            let Ok(client) = redis::Client::open(node.as_str()) else {
                continue;
            };
            let Ok(mut con) = client.get_connection() else {
                continue;
            };
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(&self.pattern)
                .query(&mut con)
                .unwrap_or_default();
            for key in keys {
                let _: Result<i64, _> = redis::cmd("DEL").arg(key).query(&mut con);
            }
        }
    }
}
