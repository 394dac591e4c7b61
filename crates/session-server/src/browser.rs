//! What browsers need from the public listener: which origins may send
//! cookie-transport requests and CORS for the configured ones. The
//! cookies' attributes and paths are session-axum's `CookieWriter`.
//!
//! The own origin (that of `SESSION_PUBLIC_URL`, else `http://<Host>` or
//! `https://<Host>` of the request) and every origin of
//! `SESSION_ALLOWED_ORIGINS` pass the `Origin` check; only the configured
//! ones get CORS headers (the own origin needs none). A refusal is logged
//! at `info` with the rule and the origin, never a token.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Settings;
use crate::error::ApiError;
use crate::state::AppState;

/// The request headers a cross-origin page may send (preflight answer).
pub const CORS_ALLOW_HEADERS: &str =
    "Authorization, Content-Type, X-CSRF-Token, X-Session-Transport, DPoP";
/// How long a browser may cache a preflight answer (seconds).
pub const CORS_MAX_AGE: &str = "600";

/// An origin as it may appear in a log line: printable, at most 200 bytes.
fn loggable(origin: &str) -> String {
    let mut s: String = origin.escape_debug().collect();
    if s.len() > 200 {
        let mut cut = 200;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Whether `origin` is the service's own origin for this request.
fn is_own_origin(settings: &Settings, headers: &HeaderMap, origin: &str) -> bool {
    match &settings.public_url {
        Some(url) => url.origin.eq_ignore_ascii_case(origin),
        None => {
            let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
                return false;
            };
            let host = host.trim();
            !host.is_empty()
                && ["http://", "https://"].iter().any(|scheme| {
                    origin
                        .strip_prefix(scheme)
                        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
                })
        }
    }
}

/// Whether `origin` may send cookie-transport requests: the own origin or
/// one of `SESSION_ALLOWED_ORIGINS` (exact match).
pub fn origin_allowed(settings: &Settings, headers: &HeaderMap, origin: &str) -> bool {
    settings.allowed_origins.iter().any(|a| a == origin) || is_own_origin(settings, headers, origin)
}

/// The `Sec-Fetch-Site` and `Origin` checks of cookie transport (login
/// included). A refusal says which rule refused which origin, in the log.
pub fn check_origin(settings: &Settings, headers: &HeaderMap) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).map(|v| {
        v.to_str()
            .map_or_else(|_| "<not text>".to_owned(), str::to_owned)
    });
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("cross-site"))
    {
        tracing::info!(
            rule = "sec_fetch_site",
            origin = origin.as_deref().map_or_else(|| "-".to_owned(), loggable),
            "csrf check refused a cross-site request (Sec-Fetch-Site: cross-site)"
        );
        return Err(ApiError::csrf_failed("cross-site request refused"));
    }
    if let Some(origin) = origin
        && !origin_allowed(settings, headers, &origin)
    {
        tracing::info!(
            rule = "origin",
            origin = loggable(&origin),
            "csrf check refused an origin that is neither the service's own nor in allowed_origins"
        );
        return Err(ApiError::csrf_failed("origin not allowed"));
    }
    Ok(())
}

/// Logs a refused CSRF token check (never the token).
pub fn log_csrf_refusal(rule: &'static str, headers: &HeaderMap) {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "-".to_owned(), loggable);
    tracing::info!(rule, origin, "csrf check refused the request");
}

/// The start-up line: which origins cookie-transport requests may come
/// from, and which get CORS.
pub fn log_accepted_origins(settings: &Settings) {
    let own = settings.public_url.as_ref().map_or_else(
        || "http://<Host> or https://<Host> of each request".to_owned(),
        |u| u.origin.clone(),
    );
    tracing::info!(
        own_origin = %own,
        allowed_origins = ?settings.allowed_origins,
        "browser origins accepted on cookie-transport requests (the allowed ones also get CORS)"
    );
}

/// The methods of a public route, for a preflight answer; `None` for a
/// path that is not a public API route.
fn route_methods(path: &str) -> Option<&'static str> {
    match path {
        "/v1/auth/login" | "/v1/auth/refresh" | "/v1/auth/logout" => Some("POST"),
        "/v1/auth/verify"
        | "/v1/session"
        | "/v1/sessions"
        | "/.well-known/jwks.json"
        | "/healthz"
        | "/readyz" => Some("GET, HEAD"),
        p => p
            .strip_prefix("/v1/sessions/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(|_| "DELETE"),
    }
}

/// CORS for the origins of `SESSION_ALLOWED_ORIGINS`: preflights answered
/// 204, and allow-origin + allow-credentials on their responses. Other
/// origins get no CORS header. `Vary: Origin` goes on every response
/// while any origin is configured, so no cache mixes the answers.
pub async fn cors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let settings = &state.settings;
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| settings.allowed_origins.iter().any(|a| a == o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = match (&origin, route_methods(req.uri().path())) {
        (Some(_), Some(methods)) if preflight => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(methods),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(CORS_ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(CORS_MAX_AGE),
            );
            res
        }
        _ => next.run(req).await,
    };
    let h = res.headers_mut();
    if !settings.allowed_origins.is_empty() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawSettings;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut raw = RawSettings::defaults();
        for (k, v) in extra {
            raw.set(k, *v).unwrap();
        }
        raw.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_own_origin_is_the_host_with_either_scheme_unless_a_public_url_is_set() {
        let s = settings(&[]);
        let h = headers(&[("host", "localhost:8080")]);
        assert!(origin_allowed(&s, &h, "http://localhost:8080"));
        assert!(origin_allowed(&s, &h, "https://localhost:8080"));
        assert!(!origin_allowed(&s, &h, "http://localhost:8081"));
        assert!(!origin_allowed(&s, &h, "http://localhost:8080.evil"));
        assert!(!origin_allowed(&s, &HeaderMap::new(), "http://"));
        let s = settings(&[("public_url", "https://example.com/auth")]);
        assert!(origin_allowed(&s, &h, "https://example.com"));
        assert!(!origin_allowed(&s, &h, "http://localhost:8080"));
    }

    #[test]
    fn preflights_name_the_methods_of_the_route() {
        assert_eq!(route_methods("/v1/auth/login"), Some("POST"));
        assert_eq!(route_methods("/v1/sessions/abc"), Some("DELETE"));
        assert_eq!(route_methods("/v1/session"), Some("GET, HEAD"));
        assert_eq!(route_methods("/v1/sessions/a/b"), None);
        assert_eq!(route_methods("/nope"), None);
    }
}
