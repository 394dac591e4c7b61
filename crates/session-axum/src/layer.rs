//! [`SessionLayer`] and the extractors [`Authenticated`] and
//! [`OptionalSession`].

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode, header};
use session_core::RevocationFeed;
use session_core::service::SessionService;
use tower::{Layer, Service};

use crate::csrf::{CSRF_HEADER, OriginPolicy, changes_state};
use crate::dpop::{DpopRequest, DpopTarget, DpopVerifier};
use crate::guard::{Guard, check_binding};
use crate::jwks::JwksVerifier;
use crate::token::{Source, access_token};
use crate::validate::{Authenticated, ValidationMode, Validator};

/// What checks a request's token: the session service (any validation
/// mode), or only the issuer's published keys.
#[derive(Debug, Clone)]
enum Checker {
    Service(Guard),
    Jwks(Arc<JwksVerifier>, Arc<OriginPolicy>),
}

/// Puts the token checker in every request's extensions, where the
/// extractors find it. Clone it freely: every clone shares one validator
/// (one cache, one revocation set).
///
/// By default the own origin (the request's `Host`) is the only one
/// allowed on cookie-transport changes ([`SessionLayer::with_origins`]),
/// and a DPoP-bound token is accepted as `Authorization: DPoP` with a good
/// proof, each proof once (remembered in the service's session store;
/// [`SessionLayer::with_dpop`]).
#[derive(Debug, Clone)]
pub struct SessionLayer {
    checker: Checker,
}

impl SessionLayer {
    /// Validates in `mode` against `service`, following the revocations
    /// this process makes through it. Without a cross-instance feed,
    /// `cached` mode suits a single instance only: use
    /// [`SessionLayer::with_feed`] when several share a store.
    pub fn new(service: Arc<SessionService>, mode: ValidationMode) -> Self {
        let validator = Arc::new(Validator::new(mode, service, false));
        validator.follow_service();
        Self::from_validator(validator)
    }

    /// As [`SessionLayer::new`], and follows `feed` (a Redis store's
    /// revocation channel): a session revoked by any instance is refused
    /// here within the feed's propagation time. Until the feed is
    /// connected, and whenever it drops, every request asks the store
    /// (`strict`). Must be called inside a Tokio runtime.
    pub fn with_feed(
        service: Arc<SessionService>,
        mode: ValidationMode,
        feed: Arc<dyn RevocationFeed>,
    ) -> Self {
        let validator = Arc::new(Validator::new(mode, service, true));
        validator.follow_service();
        validator.follow_feed(feed);
        Self::from_validator(validator)
    }

    /// A layer over an existing validator, with [`Guard::new`]'s defaults.
    pub fn from_validator(validator: Arc<Validator>) -> Self {
        Self::from_guard(Guard::new(validator))
    }

    /// A layer over an existing guard (the server shares its own).
    pub fn from_guard(guard: Guard) -> Self {
        Self {
            checker: Checker::Service(guard),
        }
    }

    /// Allows these origins on cookie-transport changes (the own origin,
    /// and the listed ones).
    #[must_use]
    pub fn with_origins(self, origins: OriginPolicy) -> Self {
        let checker = match self.checker {
            Checker::Service(guard) => Checker::Service(guard.with_origins(origins)),
            Checker::Jwks(verifier, _) => Checker::Jwks(verifier, Arc::new(origins)),
        };
        Self { checker }
    }

    /// Checks DPoP proofs with `dpop` (a public URL, server nonces);
    /// `None`: a DPoP-bound token is refused. Layers built with
    /// [`SessionLayer::jwks`] have no store to remember proofs in and refuse
    /// bound tokens whatever this says.
    #[must_use]
    pub fn with_dpop(self, dpop: Option<DpopVerifier>) -> Self {
        let checker = match self.checker {
            Checker::Service(guard) => Checker::Service(guard.with_dpop(dpop)),
            jwks @ Checker::Jwks(..) => jwks,
        };
        Self { checker }
    }

    /// For an app with no access to the session store: tokens are checked
    /// against the issuer's JWKS only (signature and claims, the
    /// `stateless` mode), so a revoked session's token is accepted until it
    /// expires. A state change authenticated by the cookie is refused (the
    /// CSRF token cannot be checked without the service): such apps take
    /// bearer tokens.
    pub fn jwks(verifier: Arc<JwksVerifier>) -> Self {
        Self {
            checker: Checker::Jwks(verifier, Arc::new(OriginPolicy::default())),
        }
    }

    /// The validator the extractors use, unless the layer checks the JWKS
    /// only.
    pub fn validator(&self) -> Option<&Arc<Validator>> {
        self.guard().map(Guard::validator)
    }

    /// The guard the extractors use, unless the layer checks the JWKS only.
    pub fn guard(&self) -> Option<&Guard> {
        match &self.checker {
            Checker::Service(g) => Some(g),
            Checker::Jwks(..) => None,
        }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionMiddleware<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionMiddleware {
            inner,
            checker: self.checker.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around an app.
#[derive(Debug, Clone)]
pub struct SessionMiddleware<S> {
    inner: S,
    checker: Checker,
}

impl<S, B> Service<Request<B>> for SessionMiddleware<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert(self.checker.clone());
        self.inner.call(req)
    }
}

/// Why a request was refused; answers with the contract's JSON error body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No usable access token, or it is invalid, expired or revoked; or a
    /// DPoP-bound token sent as `Bearer` or in the cookie, or an unbound one
    /// sent as `DPoP`. 401 `invalid_token` with `WWW-Authenticate: Bearer`.
    #[error("the access token is missing, invalid, expired or revoked")]
    InvalidToken,
    /// A state-changing request authenticated by the cookie without the
    /// session's `X-CSRF-Token`, or from another origin. 403 `csrf_failed`.
    #[error("{0}")]
    CsrfFailed(&'static str),
    /// A DPoP proof is missing, malformed, replayed or does not match. 401
    /// `invalid_dpop_proof` with a `WWW-Authenticate: DPoP` challenge.
    #[error("{0}")]
    InvalidDpopProof(String),
    /// Server nonces are on and the proof has no fresh one:
    /// `use_dpop_nonce` with the nonce to use in `DPoP-Nonce` (RFC 9449 §8,
    /// §9), 400 at a token endpoint, else 401 with a `DPoP` challenge.
    #[error("this server requires a DPoP nonce: retry with the one in DPoP-Nonce")]
    UseDpopNonce {
        /// The nonce to retry with.
        nonce: String,
        /// Whether the request was a login or refresh.
        token_endpoint: bool,
    },
    /// The store could not answer: refused, never waved through. 503
    /// `store_unavailable`.
    #[error("the session store is unavailable")]
    StoreUnavailable(#[source] session_core::StoreError),
    /// The route is not behind a [`SessionLayer`]: a wiring mistake. 500.
    #[error("the route is not behind a SessionLayer")]
    MissingLayer,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::InvalidToken => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::CsrfFailed(_) => (StatusCode::FORBIDDEN, "csrf_failed"),
            Self::InvalidDpopProof(_) => (StatusCode::UNAUTHORIZED, "invalid_dpop_proof"),
            Self::UseDpopNonce {
                token_endpoint: true,
                ..
            } => (StatusCode::BAD_REQUEST, "use_dpop_nonce"),
            Self::UseDpopNonce { .. } => (StatusCode::UNAUTHORIZED, "use_dpop_nonce"),
            Self::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::MissingLayer => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        if let Self::StoreUnavailable(e) = &self {
            tracing::warn!(error = %e, "session check refused: store unavailable");
        }
        let body = serde_json::json!({ "error": code, "message": self.to_string() });
        let mut res = (status, axum::Json(body)).into_response();
        let headers = res.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Self::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            Self::StoreUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::InvalidDpopProof(_) => {
                if let Some(v) = crate::dpop::challenge("invalid_dpop_proof") {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::UseDpopNonce {
                nonce,
                token_endpoint,
            } => {
                if !token_endpoint && let Some(v) = crate::dpop::challenge("use_dpop_nonce") {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
                if let Ok(v) = HeaderValue::from_str(&nonce) {
                    headers.insert("dpop-nonce", v);
                }
            }
            _ => {}
        }
        res
    }
}

async fn authenticate(parts: &Parts) -> Result<Option<Authenticated>, Rejection> {
    let checker = parts
        .extensions
        .get::<Checker>()
        .cloned()
        .ok_or(Rejection::MissingLayer)?;
    let changes = changes_state(&parts.method);
    match &checker {
        Checker::Service(guard) => {
            let dpop = DpopRequest::from_parts(parts);
            let Some((auth, source)) = guard
                .authenticate_optional(&parts.headers, false, &dpop, DpopTarget::This)
                .await?
            else {
                return Ok(None);
            };
            if source == Source::Cookie && changes {
                guard
                    .check_csrf_live(&parts.headers, &auth.session_id)
                    .await?;
            }
            Ok(Some(Arc::unwrap_or_clone(auth)))
        }
        Checker::Jwks(verifier, origins) => {
            let Some((token, source, scheme)) = access_token(&parts.headers) else {
                return Ok(None);
            };
            let claims = verifier
                .verify(token)
                .await
                .map_err(|_| Rejection::InvalidToken)?;
            let session_id = claims.sid.parse().map_err(|_| Rejection::InvalidToken)?;
            check_binding(&claims, token, scheme, None).await?;
            if source == Source::Cookie && changes {
                origins.check(&parts.headers)?;
                if !parts.headers.contains_key(CSRF_HEADER) {
                    return Err(Rejection::CsrfFailed("missing X-CSRF-Token header"));
                }
                return Err(Rejection::CsrfFailed(
                    "a change made with the cookie needs the session service; send the token as a bearer token",
                ));
            }
            Ok(Some(Authenticated {
                claims,
                session_id,
                session: None,
            }))
        }
    }
}

/// The extractor: a request with a valid access token whose session is
/// active (as the layer's [`ValidationMode`] checks it). The token comes
/// from `Authorization: Bearer` (or `DPoP` with a proof, for a bound
/// token), else from the `__Host-session` cookie; a state-changing request
/// authenticated by the cookie must also come from an allowed origin and
/// carry the session's `X-CSRF-Token`.
impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts).await?.ok_or(Rejection::InvalidToken)
    }
}

/// `Option<Authenticated>`: `None` when the request carries no token at
/// all; a token that is present and fails is still refused.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Authenticated {
    type Rejection = Rejection;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        authenticate(parts).await
    }
}

/// The session of a request that may or may not be signed in: `None`
/// without a token, the session with a valid one; an invalid token is
/// refused (401) rather than treated as anonymous.
#[derive(Debug, Clone)]
pub struct OptionalSession(pub Option<Authenticated>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalSession {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        authenticate(parts).await.map(OptionalSession)
    }
}
