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
//!
//! `strict` asks the store on every request, but it too keeps a token's
//! verified claims once it has seen it valid, so that the signature (the
//! costliest check) is checked once per token, not once per request.
//!
//! Three rules keep the cache from failing open:
//!
//! - **The key ring.** An entry is used only while the key ring is the
//!   one its signature was checked against (its generation moves with
//!   every change of keys), so a key revoked by an immediate rotation has
//!   its tokens refused at once, cached or not.
//! - **The epoch.** Every change of the feed's state (and every overflow
//!   of the revocation set, below) moves an epoch. A request reads the
//!   epoch before it asks the store and caches what the store said with
//!   that epoch; an entry is used only while the epoch has not moved since.
//!   So a store read that spans a feed outage can never serve, from the
//!   cache, a session revoked in the gap.
//! - **No silent drop.** The revocation set is bounded; when it is full of
//!   live entries, a revocation that does not fit switches this instance to
//!   `strict` until every cached token that could belong to it has expired.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration as StdDuration, Instant};

use session_core::keys::AccessClaims;
use session_core::service::SessionService;
use session_core::{FeedEvent, RevocationFeed, Session, SessionId, StoreError};
use sha2::{Digest, Sha256};

/// How access tokens are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValidationMode {
    /// Signature and claims only: revocation is felt at expiry.
    Stateless,
    /// Plus a store lookup on every request.
    Strict,
    /// Signature and claims, a cache of tokens seen valid, and an
    /// in-process revocation set kept current by the store's feed.
    Cached,
}

impl ValidationMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stateless => "stateless",
            Self::Strict => "strict",
            Self::Cached => "cached",
        }
    }
}

impl FromStr for ValidationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stateless" => Ok(Self::Stateless),
            "strict" => Ok(Self::Strict),
            "cached" => Ok(Self::Cached),
            other => Err(format!(
                "expected stateless, strict or cached, not {other:?}"
            )),
        }
    }
}

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
#[non_exhaustive]
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
    auth: Arc<Authenticated>,
    /// The epoch read before the store read this entry comes from; the
    /// entry is trusted only while the epoch has not moved since.
    epoch: u64,
    /// The key ring's generation read before the signature was checked;
    /// the entry is used at all only while the ring is still that one (an
    /// immediate rotation revokes a key: its tokens are refused at once,
    /// cached or not).
    keys: u64,
}

/// How many revoked session ids the set holds before it overflows.
const REVOKED_CAPACITY: usize = 1_000_000;

/// The session ids revoked lately, each kept as long as a token of its
/// session can stay cached. Bounded; a revocation is never dropped: when
/// the set is full of live entries it records an overflow instead, and the
/// validator goes strict until the overflow has run its course.
#[derive(Debug)]
struct RevokedSet {
    inner: RwLock<Revoked>,
    capacity: usize,
    ttl: StdDuration,
}

#[derive(Debug, Default)]
struct Revoked {
    ids: HashMap<SessionId, Instant>,
    /// Strict until then: a revocation did not fit.
    overflowed_until: Option<Instant>,
}

impl RevokedSet {
    fn new(capacity: usize, ttl: StdDuration) -> Self {
        Self {
            inner: RwLock::default(),
            capacity,
            ttl,
        }
    }

    /// Adds `id`; false when it did not fit (the set is now overflowed).
    fn insert(&self, id: SessionId, now: Instant) -> bool {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let until = now + self.ttl;
        if inner.ids.len() >= self.capacity && !inner.ids.contains_key(&id) {
            inner.ids.retain(|_, expires| *expires > now);
        }
        if inner.ids.len() < self.capacity || inner.ids.contains_key(&id) {
            inner.ids.insert(id, until);
            return true;
        }
        inner.overflowed_until = Some(until);
        false
    }

    fn contains(&self, id: &SessionId, now: Instant) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.ids.get(id).is_some_and(|expires| *expires > now)
    }

    fn overflowed(&self, now: Instant) -> bool {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.overflowed_until.is_some_and(|until| now < until)
    }
}

/// The validator shared by all requests of one server.
#[derive(Debug)]
pub struct Validator {
    mode: ValidationMode,
    service: Arc<SessionService>,
    cache: moka::sync::Cache<[u8; 32], Arc<Entry>>,
    revoked: RevokedSet,
    feed_live: AtomicBool,
    /// Moves whenever what the cache may trust changes (feed state,
    /// revocation-set overflow); see the module documentation.
    epoch: AtomicU64,
    /// Runs once right after the next store read (tests: what happens
    /// while a read is in flight).
    #[cfg(test)]
    after_store_read: tests::Hook,
}

impl Validator {
    /// A validator; `has_feed` says whether a cross-instance feed exists
    /// (until it reports `Connected`, the cache is bypassed).
    pub fn new(mode: ValidationMode, service: Arc<SessionService>, has_feed: bool) -> Self {
        Self::with_capacity(mode, service, has_feed, REVOKED_CAPACITY)
    }

    fn with_capacity(
        mode: ValidationMode,
        service: Arc<SessionService>,
        has_feed: bool,
        revoked_capacity: usize,
    ) -> Self {
        let ttl = service.config().lifetimes.access_token + session_core::keys::MAX_LEEWAY;
        let ttl = StdDuration::from_secs(u64::try_from(ttl.whole_seconds()).unwrap_or(900) + 5);
        Self {
            mode,
            service,
            cache: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(ttl)
                .build(),
            revoked: RevokedSet::new(revoked_capacity, ttl),
            feed_live: AtomicBool::new(!has_feed),
            epoch: AtomicU64::new(0),
            #[cfg(test)]
            after_store_read: tests::Hook::default(),
        }
    }

    /// The service it checks sessions with.
    pub fn service(&self) -> &Arc<SessionService> {
        &self.service
    }

    /// The mode configured.
    pub fn mode(&self) -> ValidationMode {
        self.mode
    }

    /// The mode in force right now (`cached` falls back to `strict` while
    /// the feed is down).
    pub fn effective_mode(&self) -> ValidationMode {
        self.effective_mode_at(Instant::now())
    }

    fn effective_mode_at(&self, now: Instant) -> ValidationMode {
        match self.mode {
            ValidationMode::Cached
                if !self.feed_live.load(Ordering::SeqCst) || self.revoked.overflowed(now) =>
            {
                ValidationMode::Strict
            }
            m => m,
        }
    }

    /// Records a revocation. One that does not fit in the bounded set
    /// switches this instance to strict validation until every token cached
    /// before it has expired; it is never dropped silently.
    pub fn revoked(&self, id: SessionId) {
        if !self.revoked.insert(id, Instant::now()) {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            metrics::counter!("session_revocation_set_overflows_total").increment(1);
            tracing::warn!(
                "revocation set full; validating against the store until cached tokens expire"
            );
        }
    }

    /// Moves the epoch: entries being computed from store reads started
    /// before this are not cached.
    fn new_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Checks an access token. A cached answer is shared, not copied.
    pub async fn authenticate(
        &self,
        token: &str,
        need_session: bool,
    ) -> Result<Arc<Authenticated>, AuthError> {
        let now = self.service.now().unix_timestamp();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // The epoch and the key ring's generation are read before the mode,
        // before the signature is checked and before any store read.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let keys = self.service.keys_generation();
        let mode = self.effective_mode();
        let seen = self
            .cache
            .get(&digest)
            .filter(|e| e.keys == keys && e.epoch == epoch);
        if let Some(e) = &seen {
            if e.auth.claims.exp + session_core::keys::MAX_LEEWAY.whole_seconds() <= now {
                return Err(AuthError::Invalid);
            }
            if mode == ValidationMode::Cached
                && self.revoked.contains(&e.auth.session_id, Instant::now())
            {
                return Err(AuthError::Invalid);
            }
            if mode != ValidationMode::Strict && (e.auth.session.is_some() || !need_session) {
                return Ok(e.auth.clone());
            }
        }
        // A token seen valid under this ring keeps its verified claims (the
        // signature check is the request's costliest step); `strict` still
        // asks the store below, every time.
        let claims = match &seen {
            Some(e) => e.auth.claims.clone(),
            None => self
                .service
                .verify_access(token)
                .map_err(|_| AuthError::Invalid)?,
        };
        let session_id: SessionId = claims.sid.parse().map_err(|_| AuthError::Invalid)?;
        if mode == ValidationMode::Cached && self.revoked.contains(&session_id, Instant::now()) {
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
            #[cfg(test)]
            self.after_store_read.run();
            if s.user_id != claims.sub {
                return Err(AuthError::Invalid);
            }
            Some(Arc::new(s))
        };
        let auth = Arc::new(Authenticated {
            claims,
            session_id,
            session,
        });
        // Cached by the epoch rule (see the module documentation): an
        // entry made in `strict` is trusted for its session only once the
        // mode is `cached` again with the epoch unmoved, as any other.
        // `strict` caches a token once; later requests only reuse its
        // claims.
        if (mode != ValidationMode::Strict || seen.is_none())
            && self.epoch.load(Ordering::SeqCst) == epoch
        {
            self.cache.insert(
                digest,
                Arc::new(Entry {
                    auth: auth.clone(),
                    epoch,
                    keys,
                }),
            );
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

    /// Applies one event of the revocation feed.
    fn on_feed_event(&self, event: FeedEvent) {
        match event {
            FeedEvent::Connected => {
                // Epoch first: an entry from a read begun before this is
                // never used, even if inserted after the purge.
                self.new_epoch();
                self.cache.invalidate_all();
                self.feed_live.store(true, Ordering::SeqCst);
                tracing::info!("revocation feed connected");
            }
            FeedEvent::Revoked(id) => self.revoked(id),
            FeedEvent::Disconnected => {
                self.feed_live.store(false, Ordering::SeqCst);
                self.new_epoch();
                tracing::warn!("revocation feed dropped; validating against the store");
            }
        }
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
                        v.feed_live.store(false, Ordering::SeqCst);
                        v.new_epoch();
                        drop(v);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(StdDuration::from_secs(5));
                        continue;
                    }
                };
                drop(v);
                while let Some(event) = rx.recv().await {
                    let Some(v) = this.upgrade() else { return };
                    if event == FeedEvent::Connected {
                        backoff = StdDuration::from_millis(100);
                    }
                    v.on_feed_event(event);
                }
                if let Some(v) = this.upgrade() {
                    v.feed_live.store(false, Ordering::SeqCst);
                    v.new_epoch();
                }
                tokio::time::sleep(backoff).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use std::sync::Mutex;

    use session_core::keys::{KeyRing, SigningAlgorithm, VerifyPolicy};
    use session_core::memory::MemoryStore;
    use session_core::service::{ServiceConfig, ServiceParts};
    use session_core::{
        Actor, ClientInfo, Clock as _, RevokeReason, SessionStore, SystemClock, TokenSecrets,
    };

    use super::*;

    /// A closure run once at a point inside `authenticate`.
    #[derive(Default)]
    pub(super) struct Hook(Mutex<Option<Box<dyn FnOnce() + Send>>>);

    impl std::fmt::Debug for Hook {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Hook")
        }
    }

    impl Hook {
        pub(super) fn run(&self) {
            let hook = self.0.lock().unwrap().take();
            if let Some(hook) = hook {
                hook();
            }
        }

        fn set(&self, f: impl FnOnce() + Send + 'static) {
            *self.0.lock().unwrap() = Some(Box::new(f));
        }
    }

    fn service(store: &Arc<MemoryStore>) -> Arc<SessionService> {
        let now = SystemClock.now();
        let policy = VerifyPolicy {
            issuer: "test".into(),
            audience: "test".into(),
            leeway: session_core::keys::MAX_LEEWAY,
        };
        Arc::new(SessionService::new(ServiceParts {
            sessions: store.clone(),
            users: store.clone(),
            audit: store.clone(),
            keys: Arc::new(KeyRing::generate(SigningAlgorithm::EdDSA, policy, now, None).unwrap()),
            secrets: TokenSecrets::from_master(&[7; 32]),
            clock: Arc::new(SystemClock),
            config: ServiceConfig::default(),
        }))
    }

    async fn open(service: &SessionService) -> (String, SessionId) {
        let issued = service
            .open_session("u", None, &ClientInfo::default(), Actor::Admin)
            .await
            .unwrap();
        (issued.access_token.expose().to_owned(), issued.session.id)
    }

    #[tokio::test]
    async fn a_store_read_spanning_a_feed_reconnect_is_never_served_from_the_cache() {
        let store = Arc::new(MemoryStore::new());
        let service = service(&store);
        let v = Arc::new(Validator::new(
            ValidationMode::Cached,
            service.clone(),
            true,
        ));
        v.on_feed_event(FeedEvent::Connected);
        let (token, id) = open(&service).await;

        // While the store read is in flight, the feed drops and comes back:
        // a revocation published in that gap was missed by this instance.
        let during = Arc::downgrade(&v);
        v.after_store_read.set(move || {
            let v = during.upgrade().unwrap();
            v.on_feed_event(FeedEvent::Disconnected);
            v.on_feed_event(FeedEvent::Connected);
        });
        assert!(
            v.authenticate(&token, false).await.is_ok(),
            "active when read"
        );
        // Revoked on another instance, in the gap (no hook, no feed event).
        store
            .revoke(&id, RevokeReason::Admin, service.now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.effective_mode(), ValidationMode::Cached);
        assert!(
            matches!(v.authenticate(&token, false).await, Err(AuthError::Invalid)),
            "the answer of a read older than the reconnect was cached"
        );
    }

    #[tokio::test]
    async fn a_read_within_one_epoch_is_cached() {
        let store = Arc::new(MemoryStore::new());
        let service = service(&store);
        let v = Arc::new(Validator::new(
            ValidationMode::Cached,
            service.clone(),
            true,
        ));
        v.on_feed_event(FeedEvent::Connected);
        let (token, id) = open(&service).await;
        assert!(v.authenticate(&token, false).await.is_ok());
        // Revoked in the store behind the cache's back: the cache answers,
        // which shows the entry was kept (the feed would have said so).
        store
            .revoke(&id, RevokeReason::Admin, service.now())
            .await
            .unwrap()
            .unwrap();
        assert!(v.authenticate(&token, false).await.is_ok());
        // Any change of the feed's state stops that.
        v.on_feed_event(FeedEvent::Disconnected);
        v.on_feed_event(FeedEvent::Connected);
        assert!(matches!(
            v.authenticate(&token, false).await,
            Err(AuthError::Invalid)
        ));
    }

    #[tokio::test]
    async fn a_revocation_that_does_not_fit_the_set_makes_validation_strict_until_tokens_expire() {
        let store = Arc::new(MemoryStore::new());
        let service = service(&store);
        let v = Arc::new(Validator::with_capacity(
            ValidationMode::Cached,
            service.clone(),
            false,
            2,
        ));
        v.follow_service();
        let mut sessions = Vec::new();
        for _ in 0..3 {
            sessions.push(open(&service).await);
        }
        let (token, last) = sessions[2].clone();
        assert!(v.authenticate(&token, false).await.is_ok(), "cached");
        for (_, id) in &sessions {
            service
                .revoke(
                    id,
                    RevokeReason::Admin,
                    Actor::Admin,
                    &ClientInfo::default(),
                )
                .await
                .unwrap()
                .unwrap();
        }
        let now = Instant::now();
        assert!(!v.revoked.contains(&last, now), "the set is full");
        assert_eq!(v.effective_mode_at(now), ValidationMode::Strict);
        assert!(
            matches!(v.authenticate(&token, false).await, Err(AuthError::Invalid)),
            "a revocation that did not fit was dropped"
        );
        // Once every token cached before the overflow has expired, the
        // cache is trusted again.
        let later = now + v.revoked.ttl + StdDuration::from_secs(1);
        assert_eq!(v.effective_mode_at(later), ValidationMode::Cached);
    }

    #[test]
    fn the_revoked_set_forgets_expired_ids_to_make_room() {
        let set = RevokedSet::new(1, StdDuration::from_secs(10));
        let t0 = Instant::now();
        let (a, b) = (SessionId::generate(), SessionId::generate());
        assert!(set.insert(a, t0));
        assert!(set.insert(a, t0), "the same id again fits");
        assert!(!set.insert(b, t0 + StdDuration::from_secs(1)));
        assert!(set.overflowed(t0 + StdDuration::from_secs(1)));
        let t1 = t0 + StdDuration::from_secs(11);
        assert!(!set.contains(&a, t1));
        assert!(set.insert(b, t1), "a's entry expired: room for b");
        assert!(set.contains(&b, t1));
        assert!(!set.overflowed(t1 + StdDuration::from_secs(1)));
    }
}
