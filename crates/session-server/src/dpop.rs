//! DPoP at the HTTP edge (RFC 9449, contract v1.1): the `DPoP` header,
//! `Authorization: DPoP`, the URL a proof's `htu` must name, the replay
//! check against the store, and optional server nonces (`DPoP-Nonce`).
//! The proof itself is checked by `session_core::dpop`.

use std::sync::OnceLock;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac as _};
use session_core::dpop::{Jkt, MAX_PROOF_LEN, RequestFacts, verify_proof};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;
use crate::extract::MAX_TOKEN_HEADER;
use crate::state::AppState;

/// How long a server nonce is fresh; the previous window's nonce is still
/// accepted, so a nonce lives between one and two windows.
const NONCE_WINDOW_SECS: i64 = 60;

/// What a request offers for DPoP: its method and the URLs it may be known
/// by, the `DPoP` header, and for forward-auth the original request's.
#[derive(Debug, Clone)]
pub struct DpopRequest {
    method: String,
    urls: Vec<String>,
    proof: Proof,
    /// `X-Original-Method` / `X-Original-URL` (forward-auth).
    original: Option<(String, String)>,
}

#[derive(Debug, Clone)]
enum Proof {
    None,
    One(String),
    /// More than one `DPoP` header, or one that is not text or too long.
    Bad,
}

impl FromRequestParts<AppState> for DpopRequest {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
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
            return Ok(Self {
                method: String::new(),
                urls: Vec::new(),
                proof,
                original: None,
            });
        }
        let path = parts.uri.path();
        let urls = match &state.settings.public_url {
            Some(base) => vec![format!("{}{}{path}", base.origin, base.prefix)],
            None => {
                let host = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| parts.uri.authority().map(|a| a.to_string()));
                host.map(|h| vec![format!("http://{h}{path}"), format!("https://{h}{path}")])
                    .unwrap_or_default()
            }
        };
        let original = match (
            header_text(&parts.headers, "x-original-method"),
            header_text(&parts.headers, "x-original-url"),
        ) {
            (Some(m), Some(u)) => Some((m.to_owned(), u.to_owned())),
            _ => None,
        };
        Ok(Self {
            method: parts.method.as_str().to_owned(),
            urls,
            proof,
            original,
        })
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_TOKEN_HEADER)
}

impl DpopRequest {
    /// Whether the request carries a `DPoP` header at all.
    pub fn has_proof(&self) -> bool {
        !matches!(self.proof, Proof::None)
    }
}

/// Which request a proof must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This request (its method, and `SESSION_PUBLIC_URL` or its `Host`).
    This,
    /// The request a gateway is asking about (`/v1/auth/verify`):
    /// `X-Original-Method` and `X-Original-URL`.
    Original,
}

/// Checks the request's proof, when it has one: signature and claims
/// against `target` and `access_token` (its `ath`), the server nonce when
/// nonces are on, and that its `jti` was never seen before (remembered in
/// the store for the proof's window). `Ok(None)` without a `DPoP` header.
pub async fn check(
    state: &AppState,
    req: &DpopRequest,
    target: Target,
    access_token: Option<&str>,
    token_endpoint: bool,
) -> Result<Option<Jkt>, ApiError> {
    let proof = match &req.proof {
        Proof::None => return Ok(None),
        Proof::Bad => return Err(ApiError::invalid_dpop_proof("one DPoP header is allowed")),
        Proof::One(p) => p,
    };
    let (method, urls): (&str, Vec<&str>) = match target {
        Target::This => (&req.method, req.urls.iter().map(String::as_str).collect()),
        Target::Original => match &req.original {
            Some((m, u)) => (m.as_str(), vec![u.as_str()]),
            None => {
                return Err(ApiError::invalid_dpop_proof(
                    "X-Original-Method and X-Original-URL are required to check a DPoP proof",
                ));
            }
        },
    };
    let now = state.service.now();
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
        metrics::counter!("session_dpop_proofs_refused_total", "reason" => reason(&e)).increment(1);
        ApiError::invalid_dpop_proof(format!("DPoP proof refused: {e}"))
    })?;
    if state.settings.dpop_nonce {
        let fresh = verified
            .nonce
            .as_deref()
            .is_some_and(|n| nonce_is_fresh(n, now.unix_timestamp()));
        if !fresh {
            return Err(ApiError::use_dpop_nonce(
                current_nonce(now.unix_timestamp()),
                token_endpoint,
            ));
        }
    }
    let first = state
        .service
        .sessions()
        .remember_dpop_proof(&verified.replay_key, verified.remember_until, now)
        .await?;
    if !first {
        metrics::counter!("session_dpop_proofs_refused_total", "reason" => "replayed").increment(1);
        return Err(ApiError::invalid_dpop_proof(
            "this DPoP proof was already used",
        ));
    }
    Ok(Some(verified.jkt))
}

fn reason(e: &session_core::dpop::ProofError) -> &'static str {
    use session_core::dpop::ProofError as E;
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

/// The scheme of the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer`.
    Bearer,
    /// `DPoP`.
    Dpop,
}

/// The `Authorization` header's scheme and token, for `Bearer` and `DPoP`.
pub fn authorization(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if v.len() > MAX_TOKEN_HEADER {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::Dpop, token))
    } else {
        None
    }
}

// ---------------------------------------------------------------------------
// Server nonces (RFC 9449 §8): stateless, an HMAC over the time window
// under a key made once per process. A nonce from another instance is
// refused with a fresh one, which a client simply retries with.
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
pub fn current_nonce(now: i64) -> String {
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

    #[test]
    fn the_authorization_header_names_bearer_or_dpop() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "DPoP abc".parse().unwrap());
        assert_eq!(authorization(&h), Some((Scheme::Dpop, "abc")));
        h.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(authorization(&h), Some((Scheme::Bearer, "abc")));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(authorization(&h), None);
        h.insert(header::AUTHORIZATION, "DPoP ".parse().unwrap());
        assert_eq!(authorization(&h), None);
    }
}
