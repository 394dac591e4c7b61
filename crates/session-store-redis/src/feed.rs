//! The revocation feed: a pub/sub subscription in a background task that
//! reconnects by itself, started by the store's [`RevocationFeed`]
//! implementation.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use session_core::{FeedEvent, RevocationFeed, SessionId, StoreError};
use tokio::sync::mpsc;

use crate::RedisStore;

/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a quiet subscription is pinged, so a silently dead connection
/// (no FIN, no RST) is noticed.
const KEEPALIVE: Duration = Duration::from_secs(5);
const CHANNEL_CAPACITY: usize = 1024;

/// Starts the task; it ends when the receiver is dropped.
pub(crate) fn spawn(
    nodes: Vec<redis::Client>,
    channel: String,
    timeout: Duration,
) -> mpsc::Receiver<FeedEvent> {
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    tokio::spawn(run(nodes, channel, timeout, tx));
    rx
}

async fn run(
    nodes: Vec<redis::Client>,
    channel: String,
    timeout: Duration,
    tx: mpsc::Sender<FeedEvent>,
) {
    let mut backoff = MIN_BACKOFF;
    let mut next_node = 0usize;
    loop {
        if tx.is_closed() || nodes.is_empty() {
            return;
        }
        let node = &nodes[next_node % nodes.len()];
        next_node = next_node.wrapping_add(1);
        match subscribe(node, &channel, timeout).await {
            Ok((sink, stream)) => {
                backoff = MIN_BACKOFF;
                if tx.send(FeedEvent::Connected).await.is_err() {
                    return;
                }
                tracing::info!(channel, "revocation feed subscribed");
                if !pump(sink, stream, timeout, &tx).await {
                    return;
                }
                tracing::warn!(channel, "revocation feed disconnected; reconnecting");
                if tx.send(FeedEvent::Disconnected).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(channel, error = %e, "revocation feed cannot subscribe; retrying");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = tx.closed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn subscribe(
    node: &redis::Client,
    channel: &str,
    timeout: Duration,
) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), redis::RedisError> {
    let attempt = async {
        let (mut sink, stream) = node.get_async_pubsub().await?.split();
        sink.subscribe(channel).await?;
        Ok((sink, stream))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "subscribing timed out",
        ))),
    }
}

/// Forwards messages until the connection drops (returns true) or the
/// receiver is gone (returns false).
async fn pump(
    mut sink: redis::aio::PubSubSink,
    mut stream: redis::aio::PubSubStream,
    timeout: Duration,
    tx: &mpsc::Sender<FeedEvent>,
) -> bool {
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        tokio::select! {
            msg = stream.next() => {
                let Some(msg) = msg else { return true };
                let payload = msg.get_payload_bytes();
                match std::str::from_utf8(payload).ok().and_then(|s| s.parse::<SessionId>().ok()) {
                    Some(sid) => {
                        if tx.send(FeedEvent::Revoked(sid)).await.is_err() {
                            return false;
                        }
                    }
                    None => tracing::warn!("revocation feed ignored a malformed message"),
                }
            }
            _ = keepalive.tick() => {
                let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                if !matches!(ping, Ok(Ok(_))) {
                    return true;
                }
            }
            () = tx.closed() => return false,
        }
    }
}

#[async_trait]
impl RevocationFeed for RedisStore {
    async fn subscribe(&self) -> Result<mpsc::Receiver<FeedEvent>, StoreError> {
        Ok(spawn(
            self.feed_nodes.as_ref().clone(),
            self.keys.channel().to_owned(),
            self.timeout,
        ))
    }
}
