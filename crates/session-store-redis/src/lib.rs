#![doc = include_str!("../README.md")]

mod codec;
mod connection;
mod error;
mod feed;
mod keys;
mod scripts;
mod sessions;
mod shared;
mod users;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use session_core::SessionId;
use session_core::recent::RecentWrites;
use session_core::record::RecordCipher;

use crate::connection::LazyConn;
pub use crate::connection::{DEFAULT_COMMAND_TIMEOUT, RedisOptions};
pub use crate::error::{ConfigError, NotConnected, Timeout};
use crate::keys::Keys;

/// Sessions, users and the revocation feed in Redis (one node or a
/// cluster). See the crate documentation for the key layout.
#[derive(Clone)]
pub struct RedisStore {
    conn: Arc<LazyConn>,
    keys: Keys,
    timeout: Duration,
    /// Where the revocation feed subscribes (every node of a cluster, tried
    /// in turn; PUBLISH reaches subscribers on all of them).
    feed_nodes: Arc<Vec<redis::Client>>,
    cluster: bool,
    records: Option<RecordCipher>,
    /// The sessions this instance wrote last, for refresh to plan on.
    recent: RecentWrites,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.cluster)
            .field("keys", &self.keys)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Whether this store talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The pub/sub channel revocations are published on.
    pub fn revocation_channel(&self) -> &str {
        self.keys.channel()
    }

    /// The glob pattern matching every key this store writes (for tests and
    /// operators: `redis-cli --scan --pattern …`).
    pub fn key_pattern(&self) -> String {
        self.keys.pattern()
    }

    /// The key of session `id` (for tests and operators).
    pub fn session_key(&self, id: &SessionId) -> String {
        self.keys.session(id)
    }

    /// The key of session `id`'s sealed grace successor (for tests and operators).
    pub fn grace_key(&self, id: &SessionId) -> String {
        self.keys.grace(id)
    }

    /// The key of `user_id`'s session index (for tests and operators).
    pub fn user_index_key(&self, user_id: &str) -> String {
        self.keys.index(user_id)
    }

    /// The key of `user_id`'s session epoch (for tests and operators).
    pub fn user_epoch_key(&self, user_id: &str) -> String {
        self.keys.epoch(user_id)
    }
}
