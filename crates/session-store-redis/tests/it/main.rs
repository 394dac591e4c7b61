//! Integration tests against real Redis: the single node at `REDIS_URL`
//! (default `redis://127.0.0.1:6379`) and a 3-node cluster at
//! `REDIS_CLUSTER_NODES` (comma-separated `host:port`; when unset, the tests
//! start their own cluster with `redis-server`). A missing Redis fails the
//! tests; nothing is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // reason: tests

mod cluster;
mod conformance;
mod expiry;
mod feed;
mod index;
mod memory;
mod outage;
mod servers;

use std::sync::Arc;

use async_trait::async_trait;
use session_core::rotation::{NextRefresh, RefreshParams};
use session_core::secret::PresentedRefresh;
use session_core::store::RefreshResult;
use session_core::user::User;
use session_core::{
    FeedEvent, RevokeReason, Session, SessionId, SessionStore, StoreError, UserStore,
};
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
    Arc::new(Cleaned::new(store, vec![url], false))
}

/// A store on the test cluster under a fresh prefix; its keys are deleted
/// when it is dropped.
pub(crate) async fn cluster_store() -> Arc<Cleaned> {
    let nodes = servers::cluster_nodes();
    let url = format!("redis+cluster://{}", nodes.join(","));
    let store = RedisStore::connect(&url, &unique_prefix())
        .await
        .unwrap_or_else(|e| panic!("the Redis cluster at {url} is required: {e:?}"));
    assert!(store.is_cluster());
    Arc::new(Cleaned::new(
        store,
        nodes.iter().map(|n| format!("redis://{n}")).collect(),
        true,
    ))
}

/// A [`RedisStore`] that deletes every key under its prefix on drop, on
/// every node it knows.
#[derive(Debug)]
pub(crate) struct Cleaned {
    pub(crate) store: RedisStore,
    nodes: Vec<String>,
    cluster: bool,
}

impl Cleaned {
    fn new(store: RedisStore, nodes: Vec<String>, cluster: bool) -> Self {
        Self {
            store,
            nodes,
            cluster,
        }
    }

    /// A plain connection to the node that serves `key`.
    pub(crate) fn node_for(&self, key: &str) -> redis::Connection {
        let url = if self.cluster {
            format!("redis://{}", servers::cluster_node_of(key))
        } else {
            self.nodes[0].clone()
        };
        redis::Client::open(url).unwrap().get_connection().unwrap()
    }

    /// Runs `cmd` (whose first argument is `key`) on the node serving `key`.
    pub(crate) fn raw<T: redis::FromRedisValue>(&self, key: &str, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut self.node_for(key)).unwrap()
    }

    /// The absolute expiry of `key` in Unix ms (-1 none, -2 no key).
    pub(crate) fn pexpiretime(&self, key: &str) -> i64 {
        self.raw(key, redis::cmd("PEXPIRETIME").arg(key))
    }

    /// Every key under the prefix, on every node.
    pub(crate) fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let mut con = redis::Client::open(node.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(self.store.key_pattern())
                .query(&mut con)
                .unwrap();
            out.extend(keys);
        }
        out
    }
}

impl Drop for Cleaned {
    fn drop(&mut self) {
        for node in &self.nodes {
            let Ok(client) = redis::Client::open(node.as_str()) else {
                continue;
            };
            let Ok(mut con) = client.get_connection() else {
                continue;
            };
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(self.store.key_pattern())
                .query(&mut con)
                .unwrap_or_default();
            for key in keys {
                let _: Result<i64, _> = redis::cmd("DEL").arg(key).query(&mut con);
            }
        }
    }
}

#[async_trait]
impl SessionStore for Cleaned {
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
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.store.get(id).await
    }
    async fn replace(&self, session: &Session, expected_version: u64) -> Result<bool, StoreError> {
        self.store.replace(session, expected_version).await
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
    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.store.list_user(user_id, now).await
    }
    async fn refresh(
        &self,
        presented: &PresentedRefresh,
        next: &NextRefresh,
        params: &RefreshParams,
        now: OffsetDateTime,
    ) -> Result<RefreshResult, StoreError> {
        self.store.refresh(presented, next, params, now).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.store.purge_expired(now).await
    }
}

#[async_trait]
impl UserStore for Cleaned {
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
