//! DPoP at the HTTP edge (RFC 9449): the `DPoP` header ([`DpopRequest`]),
//! the URLs a proof's `htu` may name, the replay check against the store,
//! and optional server nonces (`DPoP-Nonce`) — [`DpopVerifier`]. The proof
//! itself is checked by [`session_core::dpop`]; where the access token
//! comes from (`Authorization: DPoP`) is [`crate::token::authorization`].

use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac as _};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, header};
use session_core::dpop::{Jkt, MAX_PROOF_LEN, ProofError, RequestFacts, verify_proof};
use session_core::service::SessionService;
use session_core::{Clock, SessionStore};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use crate::layer::Rejection;
use crate::public_url::PublicUrl;
use crate::token::MAX_TOKEN_HEADER;

/// How long a server nonce is fresh; the previous window's nonce is still
/// accepted, so a nonce lives between one and two windows.
const NONCE_WINDOW_SECS: i64 = 60;

/// What a request offers for DPoP: the `DPoP` header and, only when there
/// is one, the method, path and host a proof must name, and for
/// forward-auth the original request's (`X-Original-Method`,
/// `X-Original-URL`). An extractor that never fails: a bad header is
/// refused when a proof is checked.
#[derive(Debug, Clone)]
pub struct DpopRequest {
    proof: Proof,
    method: String,
    path: String,
    host: Option<String>,
    original: Option<(String, String)>,
}

#[derive(Debug, Clone)]
enum Proof {
    None,
    One(String),
    /// More than one `DPoP` header, or one that is not text or too long.
    Bad,
}

impl DpopRequest {
    /// Reads the request's head.
    pub fn from_parts(parts: &Parts) -> Self {
        let mut values = parts.headers.get_all("dpop").iter();
        let proof = match (values.next(), values.next()) {
            (None, _) => Proof::None,
            (Some(v), None) => match v.to_str() {
                Ok(s) if s.len() <= MAX_PROOF_LEN => Proof::One(s.trim().to_owned()),
                _ => Proof::Bad,
            },
            _ => Proof::Bad,
        };
        if matches!(proof, Proof::None) {
            // The common case pays for nothing more.
            return Self {
                proof,
                method: String::new(),
                path: String::new(),
                host: None,
                original: None,
            };
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        let original = match (
            header_text(&parts.headers, "x-original-method"),
            header_text(&parts.headers, "x-original-url"),
        ) {
            (Some(m), Some(u)) => Some((m.to_owned(), u.to_owned())),
            _ => None,
        };
        Self {
            proof,
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            host,
            original,
        }
    }

    /// Whether the request carries a `DPoP` header at all.
    pub fn has_proof(&self) -> bool {
        !matches!(self.proof, Proof::None)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for DpopRequest {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_TOKEN_HEADER)
}

/// Which request a proof must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpopTarget {
    /// This request: its method, and its URL under the public URL where one
    /// is set, else under its `Host` with either scheme.
    This,
    /// The request a gateway is asking about (forward-auth):
    /// `X-Original-Method` and `X-Original-URL`.
    Original,
}

/// Checks DPoP proofs: signature and claims (`typ`, `alg`, `htm`, `htu`,
/// `iat`, `ath`), the server nonce when nonces are on, and that each `jti`
/// is used once — remembered in the store ([`SessionStore::remember_dpop_proof`])
/// for the proof's window, so a proof replayed on any instance sharing
/// the store is refused.
#[derive(Debug)]
pub struct DpopVerifier {
    replay: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    public_url: Option<PublicUrl>,
    nonces: bool,
}

/// The service's clock, as a [`Clock`].
#[derive(Debug)]
struct ServiceClock(Arc<SessionService>);

impl Clock for ServiceClock {
    fn now(&self) -> OffsetDateTime {
        self.0.now()
    }
}

impl DpopVerifier {
    /// Remembers proofs in `replay` and reads the time from `clock`; no
    /// public URL (a proof names this request's `Host`), no nonces.
    pub fn new(replay: Arc<dyn SessionStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            replay,
            clock,
            public_url: None,
            nonces: false,
        }
    }

    /// With the service's session store and clock.
    pub fn for_service(service: &Arc<SessionService>) -> Self {
        Self::new(
            service.sessions().clone(),
            Arc::new(ServiceClock(service.clone())),
        )
    }

    /// A proof's `htu` must name this public URL (origin and prefix) plus
    /// the request's path, instead of the request's `Host`.
    #[must_use]
    pub fn with_public_url(mut self, public_url: Option<PublicUrl>) -> Self {
        self.public_url = public_url;
        self
    }

    /// Requires a fresh server nonce in every proof (RFC 9449 §8): a proof
    /// without one is answered `use_dpop_nonce` with a nonce in
    /// `DPoP-Nonce`. Nonces are stateless (an HMAC over the time window
    /// under a key made once per process): a nonce from another instance is
    /// refused with a fresh one, which a client simply retries with.
    #[must_use]
    pub fn with_nonces(mut self, on: bool) -> Self {
        self.nonces = on;
        self
    }

    /// The URLs a proof for this request may name.
    fn urls(&self, req: &DpopRequest) -> Vec<String> {
        let path = &req.path;
        match &self.public_url {
            Some(base) => vec![format!("{}{}{path}", base.origin, base.prefix)],
            None => req
                .host
                .as_ref()
                .map(|h| vec![format!("http://{h}{path}"), format!("https://{h}{path}")])
                .unwrap_or_default(),
        }
    }

    /// Checks the request's proof, when it has one: against `target` and
    /// `access_token` (its `ath`), the server nonce when nonces are on, and
    /// that its `jti` was never seen before. `Ok(None)` without a `DPoP`
    /// header. `token_endpoint` says whether a missing nonce is answered as
    /// at a token endpoint (400) or at a resource (401 with a challenge).
    pub async fn check(
        &self,
        req: &DpopRequest,
        target: DpopTarget,
        access_token: Option<&str>,
        token_endpoint: bool,
    ) -> Result<Option<Jkt>, Rejection> {
        let proof = match &req.proof {
            Proof::None => return Ok(None),
            Proof::Bad => {
                return Err(Rejection::InvalidDpopProof(
                    "one DPoP header is allowed".into(),
                ));
            }
            Proof::One(p) => p,
        };
        let own_urls;
        let (method, urls): (&str, Vec<&str>) = match target {
            DpopTarget::This => {
                own_urls = self.urls(req);
                (&req.method, own_urls.iter().map(String::as_str).collect())
            }
            DpopTarget::Original => match &req.original {
                Some((m, u)) => (m.as_str(), vec![u.as_str()]),
                None => {
                    return Err(Rejection::InvalidDpopProof(
                        "X-Original-Method and X-Original-URL are required to check a DPoP proof"
                            .into(),
                    ));
                }
            },
        };
        let now = self.clock.now();
        let verified = verify_proof(
            proof,
            &RequestFacts {
                method,
                urls: &urls,
                access_token,
                now,
            },
        )
        .map_err(|e| {
            metrics::counter!("session_dpop_proofs_refused_total", "reason" => reason(&e))
                .increment(1);
            Rejection::InvalidDpopProof(format!("DPoP proof refused: {e}"))
        })?;
        if self.nonces {
            let fresh = verified
                .nonce
                .as_deref()
                .is_some_and(|n| nonce_is_fresh(n, now.unix_timestamp()));
            if !fresh {
                return Err(Rejection::UseDpopNonce {
                    nonce: current_nonce(now.unix_timestamp()),
                    token_endpoint,
                });
            }
        }
        let first = self
            .replay
            .remember_dpop_proof(&verified.replay_key, verified.remember_until, now)
            .await
            .map_err(Rejection::StoreUnavailable)?;
        if !first {
            metrics::counter!("session_dpop_proofs_refused_total", "reason" => "replayed")
                .increment(1);
            return Err(Rejection::InvalidDpopProof(
                "this DPoP proof was already used".into(),
            ));
        }
        Ok(Some(verified.jkt))
    }
}

fn reason(e: &ProofError) -> &'static str {
    use ProofError as E;
    match e {
        E::WrongType => "typ",
        E::AlgorithmNotAccepted => "alg",
        E::InvalidKey | E::PrivateKey => "jwk",
        E::BadSignature => "signature",
        E::MethodMismatch => "htm",
        E::UrlMismatch => "htu",
        E::IatOutOfWindow => "iat",
        E::AthMismatch => "ath",
        _ => "malformed",
    }
}

/// The `WWW-Authenticate` value of a DPoP challenge with `error` (RFC 9449
/// §7.1): `DPoP error="<error>", algs="ES256 EdDSA"`.
pub fn challenge(error: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "DPoP error=\"{error}\", algs=\"{}\"",
        session_core::dpop::ALGORITHMS
    ))
    .ok()
}

// ---------------------------------------------------------------------------
// Server nonces (RFC 9449 §8): stateless, an HMAC over the time window
// under a key made once per process.
// ---------------------------------------------------------------------------

fn nonce_key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(session_core::secret::random_bytes::<32>)
}

fn nonce_for_window(window: i64) -> String {
    // HMAC takes keys of any length, so this never fails; an empty nonce
    // would match nothing a proof may carry (`nonce` is never empty).
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(nonce_key()) else {
        return String::new();
    };
    mac.update(b"dpop-nonce\0");
    mac.update(&window.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = window.to_be_bytes().to_vec();
    out.extend_from_slice(&tag[..16]);
    URL_SAFE_NO_PAD.encode(out)
}

/// The nonce to hand out at `now` (unix seconds).
fn current_nonce(now: i64) -> String {
    nonce_for_window(now.div_euclid(NONCE_WINDOW_SECS))
}

fn nonce_is_fresh(nonce: &str, now: i64) -> bool {
    let window = now.div_euclid(NONCE_WINDOW_SECS);
    [window, window - 1]
        .iter()
        .any(|w| bool::from(nonce_for_window(*w).as_bytes().ct_eq(nonce.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_fresh_for_its_window_and_the_next_only() {
        let n = current_nonce(1_000);
        assert!(nonce_is_fresh(&n, 1_000));
        assert!(nonce_is_fresh(&n, 1_000 + NONCE_WINDOW_SECS));
        assert!(!nonce_is_fresh(&n, 1_000 + 2 * NONCE_WINDOW_SECS));
        assert!(!nonce_is_fresh("made-up", 1_000));
    }
}
