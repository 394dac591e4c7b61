#![doc = include_str!("../README.md")]

mod codec;
mod feed;
mod keys;
mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use session_core::record::{RecordCipher, RecordError};
use session_core::rotation::RefreshParams;
use session_core::shared::SharedValues;
use session_core::store::MAX_CAS_ATTEMPTS;
use session_core::user::User;
use session_core::{
    FeedEvent, RevocationFeed, RevokeReason, Session, SessionId, SessionStore, StoreError,
    UserStore,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::keys::Keys;

/// How long one store operation may take before it fails with
/// [`StoreError::Unavailable`], so a dead Redis gives a fast 503, not a hang.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the sealed grace successor outlives the grace window, so that
/// clock skew between a server and Redis never drops it early.
const GRACE_SKEW_MARGIN: time::Duration = time::Duration::seconds(60);

/// Index entries whose session is gone are dropped once they are this old
/// (younger ones may belong to a create in flight).
const PRUNE_AFTER: time::Duration = time::Duration::minutes(1);

/// How long a user's login lock lives if its holder dies.
const LOCK_TTL: Duration = Duration::from_secs(10);

/// Why [`RedisStore::connect`] refused its arguments.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL is neither `redis://…` nor `redis+cluster://…`, or is malformed.
    #[error(
        "invalid Redis URL (expected redis://HOST:PORT/DB or redis+cluster://HOST:PORT,HOST:PORT,…)"
    )]
    Url(#[source] Option<RedisError>),
    /// The prefix is empty or holds braces or whitespace, which would break
    /// the key layout's hash tags.
    #[error("key prefix must be non-empty and free of '{{', '}}' and whitespace")]
    Prefix,
    /// Redis may evict keys under memory pressure: an evicted user index or
    /// epoch would let a revoke-all or password change miss sessions.
    #[error(
        "Redis maxmemory-policy is {policy:?} on {node}: Redis may evict session state \
         (a user's index or epoch) and a revoke-all would then miss sessions; set \
         maxmemory-policy to noeviction, or accept the risk with the allow_eviction option \
         (session-server: SESSION_REDIS_ALLOW_EVICTION=true)"
    )]
    EvictingPolicy {
        /// The node.
        node: String,
        /// Its policy.
        policy: String,
    },
    /// The policy could not be read (CONFIG disabled or renamed).
    #[error(
        "cannot read Redis maxmemory-policy (is CONFIG disabled?); make sure it is \
         noeviction, then start with the allow_eviction option \
         (session-server: SESSION_REDIS_ALLOW_EVICTION=true)"
    )]
    PolicyUnreadable(#[source] Option<Box<dyn std::error::Error + Send + Sync + 'static>>),
}

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
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_COMMAND_TIMEOUT,
            allow_eviction: false,
            records: None,
        }
    }
}

/// A command that did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("redis did not answer within {0:?}")]
pub struct Timeout(Duration);

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
struct LazyConn {
    connector: Connector,
    conn: tokio::sync::OnceCell<Conn>,
    /// Whether a `maxmemory-policy` other than `noeviction` is accepted.
    allow_eviction: bool,
    /// When the next attempt may start, and the pause after it fails.
    retry: std::sync::Mutex<(tokio::time::Instant, Duration)>,
}

/// Redis has not been reached yet; the next attempt waits for a backoff.
#[derive(Debug, thiserror::Error)]
#[error("redis not reached yet; reconnecting with backoff")]
pub struct NotConnected;

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
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout)
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
            .set_connection_timeout(options.timeout)
            .set_response_timeout(options.timeout)
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
        }
    }

    /// The stored string of `session`, sealed where the store has a cipher.
    fn encode(&self, session: &Session) -> Result<Vec<u8>, StoreError> {
        codec::encode(session, self.records.as_ref()).map_err(StoreError::unavailable)
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

    /// Reads the user's session epoch (0 when never moved).
    async fn read_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.epoch(user_id));
        let epoch: Option<String> = self.query(&cmd).await?;
        epoch.map_or(Ok(0), |e| {
            e.parse()
                .map_err(|_| StoreError::corrupt(Unexpected("a user epoch that is not a number")))
        })
    }

    /// Undoes a create refused after the fact: nobody was given this
    /// session's tokens, so it is removed as if never created. A failure
    /// leaves a session whose tokens nobody holds (and whose stale epoch no
    /// refresh accepts).
    async fn undo_create(&self, session: &Session) {
        let mut del = redis::cmd("DEL");
        del.arg(self.keys.session(&session.id))
            .arg(self.keys.grace(&session.id));
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.keys.index(&session.user_id))
            .arg(session.id.to_string());
        if let Err(e) = self.query::<i64>(&del).await {
            tracing::warn!(error = %e, "could not remove a session refused after its creation");
        }
        if let Err(e) = self.query::<i64>(&zrem).await {
            tracing::debug!(error = %e, "could not unindex a session refused after its creation");
        }
    }

    /// Every master's `maxmemory-policy`, by node.
    async fn eviction_policies(&self, conn: &Conn) -> Result<Vec<(String, String)>, StoreError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let unreadable = |e: Option<RedisError>| {
            StoreError::backend(ConfigError::PolicyUnreadable(
                e.map(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            ))
        };
        let policy_of = |v: Value| -> Result<String, StoreError> {
            let map: HashMap<String, String> =
                redis::from_redis_value(&v).map_err(|e| unreadable(Some(e)))?;
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
                let v = within(self.timeout, c.route_command(&cmd, routing)).await?;
                let Value::Map(by_node) = v else {
                    return Err(unreadable(None));
                };
                by_node
                    .into_iter()
                    .map(|(node, v)| {
                        let node: String =
                            redis::from_redis_value(&node).map_err(|e| unreadable(Some(e)))?;
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

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        within(self.timeout, cmd.query_async(&mut conn)).await
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection().await?;
        within(self.timeout, inv.invoke_async(&mut conn)).await
    }

    /// Reads session `id` and its grace successor (one slot, one round trip).
    async fn read(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let mut cmd = redis::cmd("MGET");
        cmd.arg(self.keys.session(id)).arg(self.keys.grace(id));
        let (value, grace): (Option<Vec<u8>>, Option<Vec<u8>>) = self.query(&cmd).await?;
        let Some(value) = value else { return Ok(None) };
        match codec::decode(*id, &value, grace, self.records.as_ref()) {
            Ok(s) => Ok(Some(s)),
            // The record key is not loaded yet: not an answer, not corrupt.
            Err(codec::DecodeError::Sealed(RecordError::NoKey)) => {
                Err(StoreError::unavailable(RecordError::NoKey))
            }
            Err(e) => Err(StoreError::corrupt(e)),
        }
    }

    /// The compare-and-swap behind every write to an existing session.
    /// `grace` (known on the refresh path) bounds how long the sealed
    /// successor is kept; without it, it is kept to the session's deadline.
    async fn write(
        &self,
        session: &Session,
        expected_version: u64,
        grace: Option<time::Duration>,
    ) -> Result<bool, StoreError> {
        let value = self.encode(session)?;
        let deadline = codec::deadline_ms(session.expires_at());
        let (g, g_deadline) = grace_field(session, grace);
        let written: i64 = self
            .invoke(
                scripts::REPLACE
                    .key(self.keys.session(&session.id))
                    .key(self.keys.grace(&session.id))
                    .arg(expected_version.to_string())
                    .arg(value)
                    .arg(deadline)
                    .arg(g)
                    .arg(g_deadline)
                    .arg(if session.revoked.is_some() { "1" } else { "0" })
                    .arg(self.keys.channel())
                    .arg(session.id.to_string()),
            )
            .await?;
        Ok(written == 1)
    }

    /// Revokes one session if it is active at `now`, starting from
    /// `snapshot` when the caller has just read it, and re-reading whenever
    /// a concurrent write moves its version.
    async fn revoke_one(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
        owner: Option<&str>,
        mut snapshot: Option<Session>,
    ) -> Result<Option<Session>, StoreError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let read = match snapshot.take() {
                Some(s) => Some(s),
                None => self.read(id).await?,
            };
            let Some(mut session) = read else {
                return Ok(None);
            };
            if !session.is_active(now) || owner.is_some_and(|u| u != session.user_id) {
                return Ok(None);
            }
            let expected = session.version;
            session.revoke(reason, now);
            if self.write(&session, expected, None).await? {
                return Ok(Some(session));
            }
        }
        Err(StoreError::Contention)
    }

    /// The sessions the user's index points to (revoked and expired ones
    /// included), oldest first. Entries whose session is gone and that are
    /// older than [`PRUNE_AFTER`] are dropped from the index; younger ones
    /// may belong to a create in flight (which adds the index entry first).
    /// Entries pointing at another user's session are ignored.
    async fn user_sessions(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let index = self.keys.index(user_id);
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(&index).arg(0).arg(-1).arg("WITHSCORES");
        let entries: Vec<(String, f64)> = self.query(&cmd).await?;
        let ids: Vec<(SessionId, f64)> = entries
            .into_iter()
            .filter_map(|(m, score)| m.parse().ok().map(|id| (id, score)))
            .collect();
        let reads = futures::future::join_all(ids.iter().map(|(id, _)| self.read(id))).await;
        let prune_before = codec::index_score(now - PRUNE_AFTER) as f64;
        let mut gone = Vec::new();
        let mut out = Vec::new();
        for ((id, score), read) in ids.into_iter().zip(reads) {
            match read? {
                Some(s) if s.user_id == user_id => out.push(s),
                Some(_) => {}
                None if score < prune_before => gone.push(id.to_string()),
                None => {}
            }
        }
        if !gone.is_empty() {
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(&index).arg(gone);
            // Pruning is housekeeping: a failure leaves entries for later.
            if let Err(e) = self.query::<i64>(&zrem).await {
                tracing::debug!(error = %e, "could not prune a user index");
            }
        }
        out.sort_by_key(|s| (s.created_at, s.id.to_string()));
        Ok(out)
    }

    /// Takes the user's limit lock, polling until the command timeout.
    async fn lock_user(&self, user_id: &str) -> Result<String, StoreError> {
        let token = SessionId::generate().to_string();
        let key = self.keys.lock(user_id);
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let mut cmd = redis::cmd("SET");
            cmd.arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(u64::try_from(LOCK_TTL.as_millis()).unwrap_or(u64::MAX));
            let got: Option<String> = self.query(&cmd).await?;
            if got.is_some() {
                return Ok(token);
            }
            if start.elapsed() >= self.timeout {
                return Err(StoreError::Contention);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    async fn unlock_user(&self, user_id: &str, token: &str) {
        let unlocked = self
            .invoke::<i64>(scripts::UNLOCK.key(self.keys.lock(user_id)).arg(token))
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(error = %e, "could not release a user's login lock; it expires by itself");
        }
    }

    async fn create_then_evict(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        self.create(session).await?;
        let others: Vec<Session> = self
            .user_sessions(&session.user_id, now)
            .await?
            .into_iter()
            .filter(|s| s.id != session.id && s.is_active(now))
            .collect();
        let keep = usize::try_from(max - 1).unwrap_or(usize::MAX);
        let excess = others.len().saturating_sub(keep);
        let mut evicted = Vec::new();
        for old in others.into_iter().take(excess) {
            let id = old.id;
            if let Some(s) = self
                .revoke_one(
                    &id,
                    RevokeReason::SessionLimit,
                    now,
                    Some(&session.user_id),
                    Some(old),
                )
                .await?
            {
                evicted.push(s);
            }
        }
        Ok(evicted)
    }
}

/// The grace successor to store, and until when: the grace window (plus a
/// margin for clock skew between servers and Redis) after the rotation,
/// never past the session's deadline.
fn grace_field(session: &Session, grace: Option<time::Duration>) -> (Vec<u8>, i64) {
    let deadline = session.expires_at();
    let Some(sealed) = session.refresh.grace_successor.clone() else {
        return (Vec::new(), codec::deadline_ms(deadline));
    };
    let until = match (grace, session.refresh.rotated_at) {
        (Some(grace), Some(at)) => (at + grace + GRACE_SKEW_MARGIN).min(deadline),
        _ => deadline,
    };
    (sealed, codec::deadline_ms(until))
}

/// Whether `e` already says the policy could not be read.
fn is_unreadable(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<ConfigError>())
        .is_some_and(|c| matches!(c, ConfigError::PolicyUnreadable(_)))
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from redis: {0}")]
struct Unexpected(&'static str);

/// Runs `fut` with the command timeout and classifies its error.
async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(e)),
        Err(_) => Err(StoreError::unavailable(Timeout(timeout))),
    }
}

/// Connection, I/O and cluster-state failures mean "cannot answer now"
/// (503); anything else is a backend failure.
fn classify(e: RedisError) -> StoreError {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::MasterDown
                | ErrorKind::ClusterConnectionNotFound
                | ErrorKind::ReadOnly
        )
        || matches!(
            e.code(),
            Some("OOM" | "LOADING" | "MASTERDOWN" | "CLUSTERDOWN" | "BUSY")
        );
    if unavailable {
        StoreError::unavailable(e)
    } else {
        StoreError::backend(e)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        // Sealed before anything is written: a cipher without its key yet
        // refuses here, leaving no index entry behind.
        let value = self.encode(session)?;
        // The index entry first: a session that exists is always in its
        // user's index (revoke_user must find it); an entry whose create
        // then fails is dropped later. The index script refuses a session
        // whose user's epoch has already moved on.
        let indexed: i64 = self
            .invoke(
                scripts::INDEX_ADD
                    .key(self.keys.index(&session.user_id))
                    .key(self.keys.epoch(&session.user_id))
                    .arg(codec::index_score(session.created_at))
                    .arg(session.id.to_string())
                    .arg(codec::deadline_ms(
                        session.absolute_expires_at.max(session.expires_at()),
                    ))
                    .arg(session.epoch),
            )
            .await?;
        if indexed != 1 {
            return Err(StoreError::Superseded);
        }
        let (g, g_deadline) = grace_field(session, None);
        let created: i64 = self
            .invoke(
                scripts::CREATE
                    .key(self.keys.session(&session.id))
                    .key(self.keys.grace(&session.id))
                    .arg(value)
                    .arg(codec::deadline_ms(session.expires_at()))
                    .arg(g)
                    .arg(g_deadline),
            )
            .await?;
        if created != 1 {
            return Err(StoreError::Conflict);
        }
        // The session lives in another slot than the epoch, so a revoke-all
        // may have moved the epoch between the index script and the
        // create, and read the index before this session existed. Looking
        // again closes that gap: if the epoch is still the session's here,
        // any later revoke-all finds the session; if not, it is undone.
        let epoch = match self.read_epoch(&session.user_id).await {
            Ok(e) => e,
            Err(e) => {
                self.undo_create(session).await;
                return Err(e);
            }
        };
        if epoch > session.epoch {
            self.undo_create(session).await;
            return Err(StoreError::Superseded);
        }
        Ok(())
    }

    async fn create_limited(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        if max == 0 {
            self.create(session).await?;
            return Ok(Vec::new());
        }
        let token = self.lock_user(&session.user_id).await?;
        let result = self.create_then_evict(session, max, now).await;
        self.unlock_user(&session.user_id, &token).await;
        result
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        self.read(id).await
    }

    async fn replace(&self, session: &Session, expected_version: u64) -> Result<bool, StoreError> {
        self.write(session, expected_version, None).await
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        self.revoke_one(id, reason, now, None, None).await
    }

    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        self.read_epoch(user_id).await
    }

    /// Moves the user's epoch on (`INCR`) before reading the index: a
    /// create begun before is then refused by the index script, or undone
    /// by its own look at the epoch after creating, or already in the
    /// index and revoked here.
    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut incr = redis::cmd("INCR");
        incr.arg(self.keys.epoch(user_id));
        self.query::<i64>(&incr).await?;
        let active: Vec<Session> = self
            .user_sessions(user_id, now)
            .await?
            .into_iter()
            .filter(|s| s.is_active(now))
            .collect();
        let revoked = futures::future::join_all(active.into_iter().map(|s| async move {
            let id = s.id;
            self.revoke_one(&id, reason, now, Some(user_id), Some(s))
                .await
        }))
        .await;
        let mut out = Vec::new();
        for r in revoked {
            out.extend(r?);
        }
        Ok(out)
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut all = self.user_sessions(user_id, now).await?;
        all.retain(|s| s.is_active(now));
        Ok(all)
    }

    async fn replace_refreshed(
        &self,
        session: &Session,
        expected_version: u64,
        params: &RefreshParams,
    ) -> Result<bool, StoreError> {
        // The grace window is known here, so the sealed successor is kept
        // for that window only (core's read-decide-CAS loop calls this).
        self.write(session, expected_version, Some(params.grace))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<Value>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// `SET key 1 NX PXAT <expires_at>`: one command on one key, so it is
    /// atomic on a single node and on a cluster, and Redis forgets the
    /// proof by itself when it expires (`now` is Redis's own clock).
    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        _now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.dpop_proof(key))
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(codec::deadline_ms(expires_at));
        let set: Option<String> = self.query(&cmd).await?;
        Ok(set.is_some())
    }
}

#[async_trait]
impl UserStore for RedisStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let added: i64 = self
            .invoke(
                scripts::CREATE_USER
                    .key(self.keys.user(&user.username))
                    .arg(&user.password_hash)
                    .arg(user.created_at.unix_timestamp_nanos().to_string()),
            )
            .await?;
        if added == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict)
        }
    }

    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.user(username));
        let fields: HashMap<String, String> = self.query(&cmd).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let password_hash = fields
            .get("h")
            .cloned()
            .ok_or_else(|| StoreError::corrupt(Unexpected("user without a password hash")))?;
        let created_at = fields
            .get("c")
            .and_then(|c| c.parse::<i128>().ok())
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(n).ok())
            .ok_or_else(|| StoreError::corrupt(Unexpected("user without a creation time")))?;
        Ok(Some(User {
            username: username.to_owned(),
            password_hash,
            created_at,
        }))
    }

    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        let set: i64 = self
            .invoke(
                scripts::SET_PASSWORD
                    .key(self.keys.user(username))
                    .key(self.keys.epoch(username))
                    .arg(password_hash),
            )
            .await?;
        Ok(set == 1)
    }

    async fn delete_user(&self, username: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.keys.user(username));
        let n: i64 = self.query(&cmd).await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl SharedValues for RedisStore {
    async fn get_shared(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.shared(name));
        self.query(&cmd).await
    }

    async fn create_shared(&self, name: &str, value: &[u8]) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.keys.shared(name)).arg(value).arg("NX");
        let set: Option<String> = self.query(&cmd).await?;
        Ok(set.is_some())
    }

    async fn replace_shared(
        &self,
        name: &str,
        expected: &[u8],
        value: &[u8],
    ) -> Result<bool, StoreError> {
        let replaced: i64 = self
            .invoke(
                scripts::REPLACE_SHARED
                    .key(self.keys.shared(name))
                    .arg(expected)
                    .arg(value),
            )
            .await?;
        Ok(replaced == 1)
    }
}

#[async_trait]
impl RevocationFeed for RedisStore {
    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>, StoreError> {
        Ok(feed::spawn(
            self.feed_nodes.as_ref().clone(),
            self.keys.channel().to_owned(),
            self.timeout,
        ))
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
