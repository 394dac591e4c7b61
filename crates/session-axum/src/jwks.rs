//! [`JwksVerifier`]: access tokens checked against the JWKS of a running
//! session-server, for an app that has no access to the session store.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use session_core::keys::{
    AccessClaims, JwksError, PublicKeySet, SigningAlgorithm, TokenError, VerifyPolicy,
};
use session_core::{Clock, SystemClock};

/// How often an unknown `kid` may trigger a new fetch.
pub const REFETCH_COOLDOWN: Duration = Duration::from_secs(5);
/// How long a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 64 * 1024;

/// Why the JWKS could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The request failed or timed out.
    #[error("fetching the JWKS failed")]
    Http(#[source] reqwest::Error),
    /// The issuer answered with an error status.
    #[error("the JWKS endpoint answered {0}")]
    Status(reqwest::StatusCode),
    /// The answer is too large or not JSON.
    #[error("the JWKS is not a JSON document of at most 64 KiB")]
    NotJson,
    /// The document is not a usable key set.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Verifies access tokens with the issuer's published keys only:
/// signature and claims (the `stateless` mode), no store, so a revoked
/// session's token is accepted until it expires (minutes). Keys are fetched
/// at start, re-read by [`JwksVerifier::spawn_refresh`], and fetched again
/// (at most every [`REFETCH_COOLDOWN`]) when a token names a key not yet
/// loaded, so a rotation is picked up without waiting. A failed fetch keeps
/// the keys already loaded; a key never loaded is never trusted.
#[derive(Debug)]
pub struct JwksVerifier {
    url: String,
    set: PublicKeySet,
    http: reqwest::Client,
    last_fetch: Mutex<Option<Instant>>,
}

impl JwksVerifier {
    /// Fetches `url` (the issuer's `/.well-known/jwks.json`) once; fails
    /// when the first set cannot be loaded.
    pub async fn fetch(
        url: impl Into<String>,
        alg: SigningAlgorithm,
        policy: VerifyPolicy,
    ) -> Result<Arc<Self>, FetchError> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(FetchError::Http)?;
        let this = Self {
            url: url.into(),
            set: PublicKeySet::new(alg, policy)?,
            http,
            last_fetch: Mutex::new(None),
        };
        this.refresh().await?;
        Ok(Arc::new(this))
    }

    /// Reads the JWKS again; the keys stay as they were if it fails.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        *self
            .last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        let res = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(FetchError::Http)?;
        if !res.status().is_success() {
            return Err(FetchError::Status(res.status()));
        }
        let body = res.bytes().await.map_err(FetchError::Http)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::NotJson);
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| FetchError::NotJson)?;
        Ok(self.set.load_jwks(&doc)?)
    }

    /// Re-reads the JWKS every `every` in the background (stops when the
    /// verifier is dropped). Must be called inside a Tokio runtime.
    pub fn spawn_refresh(self: &Arc<Self>, every: Duration) {
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(v) = this.upgrade() else { return };
                if let Err(e) = v.refresh().await {
                    tracing::warn!(error = %e, url = %v.url, "JWKS refresh failed; keeping the keys already loaded");
                }
            }
        });
    }

    /// The key ids loaded.
    pub fn kids(&self) -> Vec<String> {
        self.set.kids()
    }

    /// Verifies an access token; a token naming a key not loaded causes one
    /// new fetch (unless one was made within [`REFETCH_COOLDOWN`]).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        match self.set.verify(token, SystemClock.now()) {
            Err(TokenError::UnknownKey) if self.may_refetch() => {
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, url = %self.url, "JWKS fetch for an unknown key failed");
                }
                self.set.verify(token, SystemClock.now())
            }
            other => other,
        }
    }

    fn may_refetch(&self) -> bool {
        self.last_fetch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at.elapsed() >= REFETCH_COOLDOWN)
    }
}
