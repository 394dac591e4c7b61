#![doc = include_str!("../README.md")]

mod codec;
mod feed;
mod keys;
mod scripts;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use session_core::user::User;
use session_core::{
    FeedEvent, RevocationFeed, RevokeReason, Session, SessionId, SessionStore, StoreError, UserStore,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::keys::Keys;

/// How long one store operation may take before it fails with
/// [`StoreError::Unavailable`], so a dead Redis gives a fast 503, not a hang.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How many session-id → user-id pointers are cached in memory. The mapping
/// never changes, so the cache can never be stale; it only saves a round
/// trip.
const POINTER_CACHE_CAPACITY: usize = 65_536;

/// Why [`RedisStore::connect`] refused its arguments.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The URL is neither `redis://…` nor `redis+cluster://…`, or is malformed.
    #[error("invalid Redis URL (expected redis://HOST:PORT/DB or redis+cluster://HOST:PORT,HOST:PORT,…)")]
    Url(#[source] Option<RedisError>),
    /// The prefix is empty or holds braces or whitespace, which would break
    /// the key layout's hash tags.
    #[error("key prefix must be non-empty and free of '{{', '}}' and whitespace")]
    Prefix,
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

/// Sessions, users and the revocation feed in Redis (one node or a
/// cluster). See the crate documentation for the key layout.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    keys: Keys,
    timeout: Duration,
    /// Where the revocation feed subscribes (every node of a cluster, tried
    /// in turn; PUBLISH reaches subscribers on all of them).
    feed_nodes: Arc<Vec<redis::Client>>,
    pointers: Arc<Mutex<HashMap<SessionId, Arc<str>>>>,
    cluster: bool,
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
    pub async fn connect_with_timeout(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let keys = Keys::new(prefix).map_err(|_| StoreError::backend(ConfigError::Prefix))?;
        let bad_url = |e: RedisError| StoreError::backend(ConfigError::Url(Some(e)));
        let (conn, feed_nodes, cluster) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
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
            let conn = within(timeout, client.get_async_connection()).await?;
            (Conn::Cluster(conn), clients, true)
        } else if url.starts_with("redis://") || url.starts_with("rediss://") {
            let client = redis::Client::open(url).map_err(bad_url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout)
                .set_number_of_retries(2)
                .set_factor(50)
                .set_max_delay(1_000);
            let conn = within(timeout, ConnectionManager::new_with_config(client.clone(), config)).await?;
            (Conn::Single(conn), vec![client], false)
        } else {
            return Err(StoreError::backend(ConfigError::Url(None)));
        };
        let store = Self {
            conn,
            keys,
            timeout,
            feed_nodes: Arc::new(feed_nodes),
            pointers: Arc::new(Mutex::new(HashMap::new())),
            cluster,
        };
        store.check_eviction_policy().await;
        Ok(store)
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

    /// The key of session `id` of `user_id` (for tests and operators).
    pub fn session_key(&self, user_id: &str, id: &SessionId) -> String {
        self.keys.session(user_id, id)
    }

    /// The key of `user_id`'s session index (for tests and operators).
    pub fn user_index_key(&self, user_id: &str) -> String {
        self.keys.index(user_id)
    }

    /// The key pointing from session `id` to its user (for tests and operators).
    pub fn pointer_key(&self, id: &SessionId) -> String {
        self.keys.pointer(id)
    }

    /// Warns when Redis may evict keys that carry security state.
    async fn check_eviction_policy(&self) {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        match self.query::<HashMap<String, String>>(&cmd).await {
            Ok(map) => {
                if let Some(policy) = map.get("maxmemory-policy")
                    && policy != "noeviction"
                    && !policy.starts_with("volatile-")
                {
                    tracing::warn!(
                        policy,
                        "Redis maxmemory-policy may evict session state; set it to noeviction"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read maxmemory-policy (CONFIG disabled?)"),
        }
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        within(self.timeout, cmd.query_async(&mut conn)).await
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        within(self.timeout, inv.invoke_async(&mut conn)).await
    }

    /// The user owning session `id`, through the pointer key.
    async fn owner(&self, id: &SessionId) -> Result<Option<Arc<str>>, StoreError> {
        if let Some(uid) = self.cached_owner(id) {
            return Ok(Some(uid));
        }
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.keys.pointer(id));
        let uid: Option<Vec<u8>> = self.query(&cmd).await?;
        let Some(uid) = uid else { return Ok(None) };
        let uid: Arc<str> = String::from_utf8(uid).map_err(StoreError::corrupt)?.into();
        self.remember_owner(*id, Arc::clone(&uid));
        Ok(Some(uid))
    }

    fn cached_owner(&self, id: &SessionId) -> Option<Arc<str>> {
        let cache = self.pointers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(id).cloned()
    }

    fn remember_owner(&self, id: SessionId, uid: Arc<str>) {
        let mut cache = self.pointers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= POINTER_CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(id, uid);
    }

    async fn create_inner(
        &self,
        session: &Session,
        max: u32,
        now: Option<OffsetDateTime>,
    ) -> Result<Vec<Session>, StoreError> {
        let f = codec::encode(session);
        // The pointer first: `SET NX` is the id's uniqueness check, and a
        // pointer without a session (if the script below never runs) only
        // leads to "no such session" until it expires.
        let mut set = redis::cmd("SET");
        set.arg(self.keys.pointer(&session.id))
            .arg(session.user_id.as_bytes())
            .arg("NX")
            .arg("PXAT")
            .arg(f.deadline_ms);
        let created: Option<String> = self.query(&set).await?;
        if created.is_none() {
            return Err(StoreError::Conflict);
        }
        self.remember_owner(session.id, session.user_id.as_str().into());
        let uid = &session.user_id;
        let evict_as = now
            .map(|n| codec::revocation_field(n, RevokeReason::SessionLimit))
            .unwrap_or_default();
        let now = now.map(codec::sortable).unwrap_or_default();
        let reply: Value = self
            .invoke(
                scripts::CREATE
                    .key(self.keys.session(uid, &session.id))
                    .key(self.keys.index(uid))
                    .arg(&f.v)
                    .arg(&f.e)
                    .arg(&f.d)
                    .arg(&f.g)
                    .arg(&f.r)
                    .arg(f.deadline_ms)
                    .arg(codec::index_score(session.created_at))
                    .arg(session.id.to_string())
                    .arg(max)
                    .arg(now)
                    .arg(evict_as)
                    .arg(self.keys.session_prefix(uid))
                    .arg(self.keys.channel()),
            )
            .await?;
        let Value::Array(mut items) = reply else {
            return Err(StoreError::backend(Unexpected("create reply")));
        };
        if items.is_empty() || matches!(items[0], Value::Int(0)) {
            return Err(StoreError::Conflict);
        }
        items.remove(0);
        decode_pairs(items)
    }
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
        || matches!(e.code(), Some("OOM" | "LOADING" | "MASTERDOWN" | "CLUSTERDOWN" | "BUSY"));
    if unavailable {
        StoreError::unavailable(e)
    } else {
        StoreError::backend(e)
    }
}

fn bulk(v: Value) -> Result<Vec<u8>, StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        _ => Err(StoreError::backend(Unexpected("expected a string"))),
    }
}

fn bulk_list(v: Value) -> Result<Vec<Vec<u8>>, StoreError> {
    match v {
        Value::Array(items) => items.into_iter().map(bulk).collect(),
        Value::Map(pairs) => {
            let mut out = Vec::with_capacity(pairs.len() * 2);
            for (k, v) in pairs {
                out.push(bulk(k)?);
                out.push(bulk(v)?);
            }
            Ok(out)
        }
        Value::Nil => Ok(Vec::new()),
        _ => Err(StoreError::backend(Unexpected("expected an array"))),
    }
}

fn parse_sid(b: &[u8]) -> Result<SessionId, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StoreError::corrupt(Unexpected("malformed session id in index")))
}

fn decode_one(id: SessionId, fields: &[Vec<u8>]) -> Result<Option<Session>, StoreError> {
    codec::decode(id, fields).map_err(StoreError::corrupt)
}

/// Decodes `{sid, hgetall, sid, hgetall, …}`.
fn decode_pairs(items: Vec<Value>) -> Result<Vec<Session>, StoreError> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(sid), Some(fields)) = (it.next(), it.next()) {
        let id = parse_sid(&bulk(sid)?)?;
        if let Some(s) = decode_one(id, &bulk_list(fields)?)? {
            out.push(s);
        }
    }
    Ok(out)
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        self.create_inner(session, 0, None).await.map(|_| ())
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
        let mut evicted = self.create_inner(session, max, Some(now)).await?;
        evicted.sort_by_key(|s| (s.created_at, s.id.to_string()));
        Ok(evicted)
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let Some(uid) = self.owner(id).await? else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.keys.session(&uid, id));
        let fields: Vec<Vec<u8>> = bulk_list(self.query::<Value>(&cmd).await?)?;
        let session = decode_one(*id, &fields)?;
        if let Some(s) = &session
            && *s.user_id != *uid
        {
            return Err(StoreError::corrupt(Unexpected("session does not belong to its pointer's user")));
        }
        Ok(session)
    }

    async fn replace(&self, session: &Session, expected_version: u64) -> Result<bool, StoreError> {
        let f = codec::encode(session);
        let uid = &session.user_id;
        let sid = session.id.to_string();
        let mut inv = scripts::REPLACE.key(self.keys.session(uid, &session.id));
        let cas = self.invoke::<i64>(
            inv
                .key(self.keys.index(uid))
                .arg(expected_version.to_string())
                .arg(&f.v)
                .arg(&f.e)
                .arg(&f.d)
                .arg(&f.g)
                .arg(&f.r)
                .arg(f.deadline_ms)
                .arg(self.keys.channel())
                .arg(&sid),
        );
        // The pointer lives in another slot; extend it alongside (GT: never
        // shortens), so it never expires before the session it points to.
        let mut extend = redis::cmd("PEXPIREAT");
        extend.arg(self.keys.pointer(&session.id)).arg(f.deadline_ms).arg("GT");
        let (cas, extended) = tokio::join!(cas, self.query::<i64>(&extend));
        let written = cas? == 1;
        if written && let Err(e) = extended {
            tracing::warn!(error = %e, "could not extend a session pointer; the session may end at its previous deadline");
        }
        Ok(written)
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        let Some(uid) = self.owner(id).await? else {
            return Ok(None);
        };
        let reply: Value = self
            .invoke(
                scripts::REVOKE
                    .key(self.keys.session(&uid, id))
                    .arg(codec::sortable(now))
                    .arg(codec::revocation_field(now, reason))
                    .arg(self.keys.channel())
                    .arg(id.to_string()),
            )
            .await?;
        decode_one(*id, &bulk_list(reply)?)
    }

    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let reply: Value = self
            .invoke(
                scripts::REVOKE_USER
                    .key(self.keys.index(user_id))
                    .arg(self.keys.session_prefix(user_id))
                    .arg(codec::sortable(now))
                    .arg(codec::revocation_field(now, reason))
                    .arg(self.keys.channel()),
            )
            .await?;
        let mut out = decode_pairs(bulk_items(reply)?)?;
        out.sort_by_key(|s| (s.created_at, s.id.to_string()));
        Ok(out)
    }

    async fn list_user(&self, user_id: &str, now: OffsetDateTime) -> Result<Vec<Session>, StoreError> {
        let reply: Value = self
            .invoke(
                scripts::LIST_USER
                    .key(self.keys.index(user_id))
                    .arg(self.keys.session_prefix(user_id)),
            )
            .await?;
        let mut out: Vec<Session> = decode_pairs(bulk_items(reply)?)?
            .into_iter()
            .filter(|s| s.user_id == user_id && s.is_active(now))
            .collect();
        out.sort_by_key(|s| (s.created_at, s.id.to_string()));
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query::<Value>(&redis::cmd("PING")).await.map(|_| ())
    }
}

fn bulk_items(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(StoreError::backend(Unexpected("expected an array"))),
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
        if added == 1 { Ok(()) } else { Err(StoreError::Conflict) }
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
            .invoke(scripts::SET_PASSWORD.key(self.keys.user(username)).arg(password_hash))
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
