//! Connecting: one node or a cluster, the options, the handle made on
//! first use (with backoff and the eviction-policy check), and the calls
//! every other module makes through it (commands and scripts).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use session_core::StoreError;
use session_core::recent::{DEFAULT_RECENT_WRITES, RecentWrites};
use session_core::record::RecordCipher;

use crate::RedisStore;
use crate::error::{ConfigError, NotConnected, is_unreadable, within};
use crate::keys::Keys;

/// How long one store operation may take before it fails with
/// [`StoreError::Unavailable`], so a dead Redis gives a fast 503, not a hang.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How [`RedisStore::connect_with`] connects.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How long one store operation may take (default
    /// [`DEFAULT_COMMAND_TIMEOUT`]).
    pub timeout: Duration,
    /// Start even when Redis may evict keys (a `maxmemory-policy` other than
    /// `noeviction`) or when the policy cannot be read. Off by default: an
    /// evicted user index or epoch makes revocation fail open.
    pub allow_eviction: bool,
    /// Seal every session's private fields (IP, user agent, metadata,
    /// location, DPoP thumbprint) at rest with this cipher (contract v1.1,
    /// "At rest"). Without one they are stored in the clear; records
    /// sealed earlier then do not open.
    pub records: Option<RecordCipher>,
    /// How many sessions this instance keeps a copy of as it last wrote
    /// them, so that their next refresh plans on the copy and skips a read
    /// (default [`DEFAULT_RECENT_WRITES`]; 0 keeps none). A stale copy
    /// costs a lost compare-and-swap and a read, never a wrong answer; see
    /// [`session_core::recent`].
    pub recent_writes: u64,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_COMMAND_TIMEOUT,
            allow_eviction: false,
            records: None,
            recent_writes: DEFAULT_RECENT_WRITES,
        }
    }
}

/// One connection handle: a single node (reconnecting manager) or a cluster.
/// Both multiplex, so clones share one socket per node.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// How to make the connection handle, kept so that a store opened while
/// Redis is unreachable connects later, on first use.
#[derive(Clone)]
enum Connector {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(redis::cluster::ClusterClient),
}

/// First pause after a failed connection attempt; it doubles up to
/// [`MAX_RECONNECT_BACKOFF`]. Requests in the pause fail at once (503).
const MIN_RECONNECT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// The connection handle, made on first use and then kept (both kinds of
/// handle reconnect by themselves after a drop).
pub(crate) struct LazyConn {
    connector: Connector,
    conn: tokio::sync::OnceCell<Conn>,
    /// Whether a `maxmemory-policy` other than `noeviction` is accepted.
    allow_eviction: bool,
    /// When the next attempt may start, and the pause after it fails.
    retry: std::sync::Mutex<(tokio::time::Instant, Duration)>,
}

/// Splits `redis+cluster://[user:pass@]h1:p1,h2:p2` into `redis://` node URLs.
fn cluster_nodes(rest: &str) -> Result<Vec<String>, ConfigError> {
    let rest = rest.trim_end_matches('/');
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("redis://{auth}{h}"))
        .collect();
    if nodes.is_empty() {
        return Err(ConfigError::Url(None));
    }
    Ok(nodes)
}

impl RedisStore {
    /// Connects to `redis://HOST:PORT/DB` (one node) or
    /// `redis+cluster://HOST:PORT,HOST:PORT,…` (a cluster) and keeps every
    /// key under `{prefix}:v1:`. Commands time out after
    /// [`DEFAULT_COMMAND_TIMEOUT`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with_timeout(url, prefix, DEFAULT_COMMAND_TIMEOUT).await
    }

    /// [`RedisStore::connect`] with another command timeout.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Self::connect_with(
            url,
            prefix,
            &RedisOptions {
                timeout,
                ..RedisOptions::default()
            },
        )
        .await
    }

    /// [`RedisStore::connect`] with options: connects now, and refuses
    /// (with [`ConfigError::EvictingPolicy`] or
    /// [`ConfigError::PolicyUnreadable`] as the source of a
    /// [`StoreError::Backend`]) a Redis whose `maxmemory-policy` is not
    /// `noeviction` on every master, unless `allow_eviction` is set.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        let store = Self::open_with(url, prefix, options)?;
        store.connection().await?;
        Ok(store)
    }

    /// Checks the URL and prefix and returns a store that connects on
    /// first use, so it can be made while Redis is unreachable: until
    /// Redis answers, every operation fails with
    /// [`StoreError::Unavailable`] (and attempts back off from 100 ms to
    /// 5 s), and then the store serves without being made again. A bad
    /// URL or prefix still fails here. The eviction policy is checked at
    /// the first connection: a refused policy fails every operation (fail
    /// closed) until Redis is reconfigured. Must run inside a Tokio runtime.
    pub fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::open_with(url, prefix, &RedisOptions::default())
    }

    /// [`RedisStore::open`] with options.
    pub fn open_with(url: &str, prefix: &str, options: &RedisOptions) -> Result<Self, StoreError> {
        let timeout = options.timeout;
        let keys = Keys::new(prefix).map_err(|_| StoreError::backend(ConfigError::Prefix))?;
        let bad_url = |e: RedisError| StoreError::backend(ConfigError::Url(Some(e)));
        let (connector, feed_nodes, cluster) =
            if let Some(rest) = url.strip_prefix("redis+cluster://") {
                let nodes = cluster_nodes(rest).map_err(StoreError::backend)?;
                let clients = nodes
                    .iter()
                    .map(|n| redis::Client::open(n.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad_url)?;
                let client = ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(3)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()
                    .map_err(bad_url)?;
                (Connector::Cluster(client), clients, true)
            } else if url.starts_with("redis://") || url.starts_with("rediss://") {
                let client = redis::Client::open(url).map_err(bad_url)?;
                // No reconnect retries inside one request (redis-rs waits at least
                // 1 s before a retry): a refused connection fails the request at
                // once (503), and the next request tries to reconnect again.
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(0);
                (
                    Connector::Single(client.clone(), config),
                    vec![client],
                    false,
                )
            } else {
                return Err(StoreError::backend(ConfigError::Url(None)));
            };
        Ok(Self::assemble(
            connector, feed_nodes, cluster, keys, options,
        ))
    }

    /// A store on a single-node client the application already has (its
    /// own URL, credentials and TLS settings). Like [`RedisStore::open`],
    /// it connects on first use; the revocation feed subscribes through
    /// the same client.
    pub fn from_client(
        client: redis::Client,
        prefix: &str,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(prefix).map_err(|_| StoreError::backend(ConfigError::Prefix))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.timeout))
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(0);
        let connector = Connector::Single(client.clone(), config);
        Ok(Self::assemble(
            connector,
            vec![client],
            false,
            keys,
            options,
        ))
    }

    /// A store on a cluster client the application already has.
    /// `feed_nodes` are clients of the cluster's nodes (any of them; they
    /// are tried in turn) for the revocation feed's subscription, which a
    /// cluster client cannot make.
    pub fn from_cluster_client(
        client: redis::cluster::ClusterClient,
        feed_nodes: Vec<redis::Client>,
        prefix: &str,
        options: &RedisOptions,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(prefix).map_err(|_| StoreError::backend(ConfigError::Prefix))?;
        Ok(Self::assemble(
            Connector::Cluster(client),
            feed_nodes,
            true,
            keys,
            options,
        ))
    }

    fn assemble(
        connector: Connector,
        feed_nodes: Vec<redis::Client>,
        cluster: bool,
        keys: Keys,
        options: &RedisOptions,
    ) -> Self {
        Self {
            conn: Arc::new(LazyConn {
                connector,
                conn: tokio::sync::OnceCell::new(),
                allow_eviction: options.allow_eviction,
                retry: std::sync::Mutex::new((tokio::time::Instant::now(), MIN_RECONNECT_BACKOFF)),
            }),
            keys,
            timeout: options.timeout,
            feed_nodes: Arc::new(feed_nodes),
            cluster,
            records: options.records.clone(),
            recent: RecentWrites::new(options.recent_writes),
        }
    }

    /// The connection handle, connecting first if no attempt succeeded yet.
    async fn connection(&self) -> Result<Conn, StoreError> {
        if let Some(conn) = self.conn.conn.get() {
            return Ok(conn.clone());
        }
        let lazy = &self.conn;
        let conn = lazy
            .conn
            .get_or_try_init(|| async {
                let due = lazy
                    .retry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                if tokio::time::Instant::now() < due {
                    return Err(StoreError::unavailable(NotConnected));
                }
                let made = match &lazy.connector {
                    Connector::Single(client, config) => within(
                        self.timeout,
                        ConnectionManager::new_with_config(client.clone(), config.clone()),
                    )
                    .await
                    .map(Conn::Single),
                    Connector::Cluster(client) => {
                        within(self.timeout, client.get_async_connection())
                            .await
                            .map(Conn::Cluster)
                    }
                };
                let made = match made {
                    Ok(conn) => self
                        .check_eviction_policy(&conn, lazy.allow_eviction)
                        .await
                        .map(|()| conn),
                    Err(e) => Err(e),
                };
                let mut retry = lazy
                    .retry
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match &made {
                    Ok(_) => retry.1 = MIN_RECONNECT_BACKOFF,
                    Err(e) => {
                        tracing::warn!(error = %e, pause = ?retry.1, "redis unreachable; will reconnect");
                        *retry = (
                            tokio::time::Instant::now() + retry.1,
                            (retry.1 * 2).min(MAX_RECONNECT_BACKOFF),
                        );
                    }
                }
                made
            })
            .await?;
        Ok(conn.clone())
    }

    /// Every master's `maxmemory-policy`, by node.
    async fn eviction_policies(&self, conn: &Conn) -> Result<Vec<(String, String)>, StoreError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let unreadable = |e: Option<redis::ParsingError>| {
            StoreError::backend(ConfigError::PolicyUnreadable(
                e.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            ))
        };
        let policy_of = |v: Value| -> Result<String, StoreError> {
            let map: HashMap<String, String> =
                redis::from_redis_value(v).map_err(|e| unreadable(Some(e)))?;
            map.get("maxmemory-policy")
                .cloned()
                .ok_or_else(|| unreadable(None))
        };
        let reply = match conn {
            Conn::Single(c) => {
                let mut c = c.clone();
                let v: Value = within(self.timeout, cmd.query_async(&mut c)).await?;
                vec![("redis".to_owned(), v)]
            }
            Conn::Cluster(c) => {
                let mut c = c.clone();
                let routing = redis::cluster_routing::RoutingInfo::MultiNode((
                    redis::cluster_routing::MultipleNodeRoutingInfo::AllMasters,
                    None,
                ));
                let v = within(self.timeout, c.route_command(cmd, routing)).await?;
                let Value::Map(by_node) = v else {
                    return Err(unreadable(None));
                };
                by_node
                    .into_iter()
                    .map(|(node, v)| {
                        let node: String =
                            redis::from_redis_value(node).map_err(|e| unreadable(Some(e)))?;
                        Ok((node, v))
                    })
                    .collect::<Result<_, StoreError>>()?
            }
        };
        reply
            .into_iter()
            .map(|(node, v)| Ok((node, policy_of(v)?)))
            .collect()
    }

    /// Refuses a Redis that may evict keys carrying security state (the
    /// user index and epoch, without which a revoke-all misses sessions),
    /// unless `allow` says the deployment accepts it.
    async fn check_eviction_policy(&self, conn: &Conn, allow: bool) -> Result<(), StoreError> {
        let policies = match self.eviction_policies(conn).await {
            Ok(p) => p,
            Err(StoreError::Unavailable(e)) => return Err(StoreError::Unavailable(e)),
            Err(e) if allow => {
                tracing::warn!(error = %e, "cannot read maxmemory-policy; starting anyway (allow_eviction)");
                return Ok(());
            }
            Err(e @ StoreError::Backend(_)) if is_unreadable(&e) => return Err(e),
            Err(e) => {
                return Err(StoreError::backend(ConfigError::PolicyUnreadable(Some(
                    Box::new(e),
                ))));
            }
        };
        for (node, policy) in policies {
            if policy != "noeviction" {
                let refusal = ConfigError::EvictingPolicy { node, policy };
                if !allow {
                    return Err(StoreError::backend(refusal));
                }
                tracing::warn!(error = %refusal, "starting anyway (allow_eviction)");
            }
        }
        Ok(())
    }

    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        within(self.timeout, cmd.query_async(&mut conn)).await
    }

    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        within(self.timeout, inv.invoke_async(&mut conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_become_one_redis_url_per_node() {
        assert_eq!(
            cluster_nodes("10.0.0.1:7000,10.0.0.2:7001/").unwrap(),
            vec!["redis://10.0.0.1:7000", "redis://10.0.0.2:7001"]
        );
        assert_eq!(
            cluster_nodes("user:pw@h1:1,h2:2").unwrap(),
            vec!["redis://user:pw@h1:1", "redis://user:pw@h2:2"]
        );
        assert!(cluster_nodes("").is_err());
    }
}
