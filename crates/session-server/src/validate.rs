//! Access-token validation in the three modes of the contract.
//!
//! `cached` (the default) verifies a token's signature and claims once,
//! asks the store once whether its session is active, and then answers
//! from memory until the token expires — unless its session id lands in
//! the revocation set, which the service (this instance) and the store's
//! feed (every instance) keep current. While the feed is down the cache is
//! bypassed (every request asks the store, as in `strict`), and when it
//! comes back the cache is emptied, so no revocation published in the gap
//! can be missed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration as StdDuration;

use session_core::keys::AccessClaims;
use session_core::service::SessionService;
use session_core::{FeedEvent, RevocationFeed, Session, SessionId, StoreError};
use sha2::{Digest, Sha256};

use crate::config::ValidationMode;

/// A request that presented a valid access token.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// Its verified claims.
    pub claims: AccessClaims,
    /// Its session id.
    pub session_id: SessionId,
    /// The session as read from the store when the token was first seen
    /// (absent in `stateless` mode until asked for).
    pub session: Option<Arc<Session>>,
}

/// Why a token did not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Invalid, expired, or its session is revoked or gone.
    #[error("invalid token")]
    Invalid,
    /// The store could not answer: refuse (503), never wave through.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Entry {
    auth: Authenticated,
}

/// The validator shared by all requests of one server.
#[derive(Debug)]
pub struct Validator {
    mode: ValidationMode,
    service: Arc<SessionService>,
    cache: moka::sync::Cache<[u8; 32], Arc<Entry>>,
    revoked: moka::sync::Cache<SessionId, ()>,
    feed_live: AtomicBool,
}

impl Validator {
    /// A validator; `has_feed` says whether a cross-instance feed exists
    /// (until it reports `Connected`, the cache is bypassed).
    pub fn new(mode: ValidationMode, service: Arc<SessionService>, has_feed: bool) -> Self {
        let ttl = service.config().lifetimes.access_token + session_core::keys::MAX_LEEWAY;
        let ttl = StdDuration::from_secs(u64::try_from(ttl.whole_seconds()).unwrap_or(900) + 5);
        Self {
            mode,
            service,
            cache: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ttl)
                .build(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(ttl)
                .build(),
            feed_live: AtomicBool::new(!has_feed),
        }
    }

    /// The mode configured.
    pub fn mode(&self) -> ValidationMode {
        self.mode
    }

    /// The mode in force right now (`cached` falls back to `strict` while
    /// the feed is down).
    pub fn effective_mode(&self) -> ValidationMode {
        match self.mode {
            ValidationMode::Cached if !self.feed_live.load(Ordering::Acquire) => {
                ValidationMode::Strict
            }
            m => m,
        }
    }

    /// Records a revocation.
    pub fn revoked(&self, id: SessionId) {
        self.revoked.insert(id, ());
    }

    /// Checks an access token.
    pub async fn authenticate(
        &self,
        token: &str,
        need_session: bool,
    ) -> Result<Authenticated, AuthError> {
        let now = self.service.now().unix_timestamp();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mode = self.effective_mode();
        if mode != ValidationMode::Strict
            && let Some(e) = self.cache.get(&digest)
        {
            {
                if e.auth.claims.exp + session_core::keys::MAX_LEEWAY.whole_seconds() <= now {
                    return Err(AuthError::Invalid);
                }
                if mode == ValidationMode::Cached && self.revoked.contains_key(&e.auth.session_id) {
                    return Err(AuthError::Invalid);
                }
                if e.auth.session.is_some() || !need_session {
                    return Ok(e.auth.clone());
                }
            }
        }
        let claims = self
            .service
            .verify_access(token)
            .map_err(|_| AuthError::Invalid)?;
        let session_id: SessionId = claims.sid.parse().map_err(|_| AuthError::Invalid)?;
        if mode == ValidationMode::Cached && self.revoked.contains_key(&session_id) {
            return Err(AuthError::Invalid);
        }
        let session = if mode == ValidationMode::Stateless && !need_session {
            None
        } else {
            let s = self
                .service
                .get_active(&session_id)
                .await
                .map_err(|e| match e {
                    session_core::service::ServiceError::Store(s) => AuthError::Store(s),
                    _ => AuthError::Invalid,
                })?
                .ok_or(AuthError::Invalid)?;
            if s.user_id != claims.sub {
                return Err(AuthError::Invalid);
            }
            Some(Arc::new(s))
        };
        let auth = Authenticated {
            claims,
            session_id,
            session,
        };
        if mode != ValidationMode::Strict {
            self.cache
                .insert(digest, Arc::new(Entry { auth: auth.clone() }));
        }
        Ok(auth)
    }

    /// Follows this instance's own revocations synchronously: a
    /// revocation is in the set before the call that made it returns.
    pub fn follow_service(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        self.service.on_revoke(Arc::new(move |id| {
            if let Some(v) = this.upgrade() {
                v.revoked(id);
            }
        }));
    }

    /// Follows a store's cross-instance revocation feed, resubscribing
    /// after any failure; the cache is bypassed while it is down.
    pub fn follow_feed(self: &Arc<Self>, feed: Arc<dyn RevocationFeed>) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = StdDuration::from_millis(100);
            loop {
                let rx = feed.subscribe().await;
                let Some(v) = this.upgrade() else { return };
                let mut rx = match rx {
                    Ok(rx) => rx,
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation feed unavailable; validating against the store");
                        v.feed_live.store(false, Ordering::Release);
                        drop(v);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(StdDuration::from_secs(5));
                        continue;
                    }
                };
                drop(v);
                while let Some(event) = rx.recv().await {
                    let Some(v) = this.upgrade() else { return };
                    match event {
                        FeedEvent::Connected => {
                            v.cache.invalidate_all();
                            v.feed_live.store(true, Ordering::Release);
                            backoff = StdDuration::from_millis(100);
                            tracing::info!("revocation feed connected");
                        }
                        FeedEvent::Revoked(id) => v.revoked(id),
                        FeedEvent::Disconnected => {
                            v.feed_live.store(false, Ordering::Release);
                            tracing::warn!("revocation feed dropped; validating against the store");
                        }
                    }
                }
                if let Some(v) = this.upgrade() {
                    v.feed_live.store(false, Ordering::Release);
                }
                tokio::time::sleep(backoff).await;
            }
        });
    }
}
