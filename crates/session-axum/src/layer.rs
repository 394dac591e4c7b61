//! [`SessionLayer`] and the extractors [`Authenticated`] and
//! [`OptionalSession`].

use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use session_core::RevocationFeed;
use session_core::service::SessionService;
use tower::{Layer, Service};

use crate::jwks::JwksVerifier;
use crate::token::{ACCESS_COOKIE, bearer, cookie};
use crate::validate::{AuthError, Authenticated, ValidationMode, Validator};

/// What checks a request's token: the session service (any validation
/// mode), or only the issuer's published keys.
#[derive(Debug, Clone)]
enum Checker {
    Service(Arc<Validator>),
    Jwks(Arc<JwksVerifier>),
}

/// Puts the token checker in every request's extensions, where the
/// extractors find it. Clone it freely: every clone shares one validator
/// (one cache, one revocation set).
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

    /// A layer over an existing validator (the server shares its own).
    pub fn from_validator(validator: Arc<Validator>) -> Self {
        Self {
            checker: Checker::Service(validator),
        }
    }

    /// For an app with no access to the session store: tokens are checked
    /// against the issuer's JWKS only (signature and claims, the
    /// `stateless` mode), so a revoked session's token is accepted until it
    /// expires. A state change authenticated by the cookie is refused (the
    /// CSRF token cannot be checked without the service): such apps take
    /// bearer tokens.
    pub fn jwks(verifier: Arc<JwksVerifier>) -> Self {
        Self {
            checker: Checker::Jwks(verifier),
        }
    }

    /// The validator the extractors use, unless the layer checks the JWKS
    /// only.
    pub fn validator(&self) -> Option<&Arc<Validator>> {
        match &self.checker {
            Checker::Service(v) => Some(v),
            Checker::Jwks(_) => None,
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
    /// No usable access token, or it is invalid, expired, revoked, or bound
    /// to a DPoP key (the layer does not check proofs: such a token is
    /// refused, never accepted as a bearer token). 401 `invalid_token`.
    #[error("the access token is missing, invalid, expired or revoked")]
    InvalidToken,
    /// A state-changing request authenticated by the cookie without the
    /// session's `X-CSRF-Token`, or from another origin. 403 `csrf_failed`.
    #[error("{0}")]
    CsrfFailed(&'static str),
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
            _ => {}
        }
        res
    }
}

/// Whether the request may change state: anything but GET, HEAD, OPTIONS
/// and TRACE.
fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Refuses a cross-site request: `Sec-Fetch-Site: cross-site`, or an
/// `Origin` that is not the request's own host.
fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| s.eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h);
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

async fn authenticate(parts: &Parts) -> Result<Option<Authenticated>, Rejection> {
    let checker = parts
        .extensions
        .get::<Checker>()
        .cloned()
        .ok_or(Rejection::MissingLayer)?;
    let (token, from_cookie) = if let Some(t) = bearer(&parts.headers) {
        (t, false)
    } else if parts.headers.contains_key(header::AUTHORIZATION) {
        // Another scheme (DPoP, Basic…) or an unreadable header: not ours
        // to accept.
        return Err(Rejection::InvalidToken);
    } else if let Some(t) = cookie(&parts.headers, ACCESS_COOKIE) {
        (t, true)
    } else {
        return Ok(None);
    };
    let auth = match &checker {
        Checker::Service(validator) => match validator.authenticate(token, false).await {
            Ok(auth) => Arc::unwrap_or_clone(auth),
            Err(AuthError::Store(e)) => return Err(Rejection::StoreUnavailable(e)),
            Err(_) => return Err(Rejection::InvalidToken),
        },
        Checker::Jwks(verifier) => {
            let claims = verifier
                .verify(token)
                .await
                .map_err(|_| Rejection::InvalidToken)?;
            let session_id = claims.sid.parse().map_err(|_| Rejection::InvalidToken)?;
            Authenticated {
                claims,
                session_id,
                session: None,
            }
        }
    };
    if auth.claims.cnf.is_some() {
        return Err(Rejection::InvalidToken);
    }
    if from_cookie && changes_state(&parts.method) {
        if !same_origin(&parts.headers) {
            return Err(Rejection::CsrfFailed("cross-origin request"));
        }
        let Some(presented) = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Rejection::CsrfFailed("missing X-CSRF-Token header"));
        };
        let Checker::Service(validator) = &checker else {
            return Err(Rejection::CsrfFailed(
                "a change made with the cookie needs the session service; send the token as a bearer token",
            ));
        };
        // Against the session's live refresh generation: a refresh in
        // another tab moves it.
        let service = validator.service();
        let session = service
            .get_active(&auth.session_id)
            .await
            .map_err(|e| match e {
                session_core::service::ServiceError::Store(s) => Rejection::StoreUnavailable(s),
                _ => Rejection::InvalidToken,
            })?
            .ok_or(Rejection::InvalidToken)?;
        if !service.csrf_valid(&auth.session_id, session.refresh.generation, presented) {
            return Err(Rejection::CsrfFailed("wrong CSRF token"));
        }
    }
    Ok(Some(auth))
}

/// The extractor: a request with a valid access token whose session is
/// active (as the layer's [`ValidationMode`] checks it). The token comes
/// from `Authorization: Bearer`, else from the `__Host-session` cookie; a
/// state-changing request authenticated by the cookie must also come from
/// the page's own origin and carry the session's `X-CSRF-Token`.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_same_origin_requests_pass_the_origin_check() {
        assert!(same_origin(&headers(&[("host", "app.example")])));
        assert!(same_origin(&headers(&[
            ("host", "app.example"),
            ("origin", "https://app.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "app.example"),
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "app.example"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "app.example"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn safe_methods_change_nothing() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(!changes_state(&m));
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_state(&m));
        }
    }
}
