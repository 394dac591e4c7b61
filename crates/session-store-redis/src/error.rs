//! The crate's errors, and how a Redis error maps onto [`StoreError`]:
//! by kind, never by message, keeping the original error as the source.

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};
use session_core::StoreError;

/// Why [`RedisStore::connect`](crate::RedisStore::connect) refused its arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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

/// A command that did not answer in time.
#[derive(Debug, thiserror::Error)]
#[error("redis did not answer within {0:?}")]
pub struct Timeout(Duration);

/// Redis has not been reached yet; the next attempt waits for a backoff.
#[derive(Debug, thiserror::Error)]
#[error("redis not reached yet; reconnecting with backoff")]
pub struct NotConnected;

/// Whether `e` already says the policy could not be read.
pub(crate) fn is_unreadable(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<ConfigError>())
        .is_some_and(|c| matches!(c, ConfigError::PolicyUnreadable(_)))
}

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from redis: {0}")]
pub(crate) struct Unexpected(pub(crate) &'static str);

/// Runs `fut` with the command timeout and classifies its error.
pub(crate) async fn within<T>(
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
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
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
