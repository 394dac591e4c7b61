//! The CSRF and origin guard of cookie transport: which origins may send
//! requests authenticated by the cookies ([`OriginPolicy`]), and the
//! session's `X-CSRF-Token` ([`check_token`], [`check_token_live`]).
//!
//! The own origin (that of the [`PublicUrl`] where one is set, else
//! `http://<Host>` or `https://<Host>` of the request) and every origin of
//! the allow-list pass the `Origin` check; `Sec-Fetch-Site: cross-site`
//! never does. A refusal is logged at `info` with the rule and the origin,
//! never a token.

use http::{HeaderMap, Method, header};
use session_core::SessionId;
use session_core::service::SessionService;

use crate::layer::Rejection;
use crate::public_url::PublicUrl;

/// The header that carries the session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Which browser origins may send cookie-transport requests: the service's
/// own origin and an allow-list (exact match). The default allows the own
/// origin only, taken from each request's `Host`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// The own origin when it is fixed (the public URL's); else the
    /// request's `Host` with either scheme.
    own: Option<String>,
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// The own origin (that of `public_url`, else the request's `Host`) and
    /// the origins of `allowed`, compared exactly.
    pub fn new(public_url: Option<&PublicUrl>, allowed: Vec<String>) -> Self {
        Self {
            own: public_url.map(|u| u.origin.clone()),
            allowed,
        }
    }

    /// The other origins allowed (the ones that also get CORS).
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    /// Whether `origin` is one of the allowed other origins.
    pub fn is_listed(&self, origin: &str) -> bool {
        self.allowed.iter().any(|a| a == origin)
    }

    /// Whether `origin` is the service's own origin for this request.
    fn is_own(&self, headers: &HeaderMap, origin: &str) -> bool {
        match &self.own {
            Some(own) => own.eq_ignore_ascii_case(origin),
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

    /// Whether `origin` may send cookie-transport requests: the own origin
    /// or an allowed one.
    pub fn allows(&self, headers: &HeaderMap, origin: &str) -> bool {
        self.is_listed(origin) || self.is_own(headers, origin)
    }

    /// The `Sec-Fetch-Site` and `Origin` checks of cookie transport (a
    /// login, which has no CSRF token yet, included): 403 `csrf_failed`
    /// for `Sec-Fetch-Site: cross-site` or an `Origin` not allowed. A
    /// refusal says which rule refused which origin, in the log.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Rejection> {
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
            return Err(Rejection::CsrfFailed("cross-site request refused"));
        }
        if let Some(origin) = origin
            && !self.allows(headers, &origin)
        {
            tracing::info!(
                rule = "origin",
                origin = loggable(&origin),
                "csrf check refused an origin that is neither the service's own nor in allowed_origins"
            );
            return Err(Rejection::CsrfFailed("origin not allowed"));
        }
        Ok(())
    }

    /// The start-up line: which origins cookie-transport requests may come
    /// from, and which get CORS.
    pub fn log_accepted(&self) {
        let own = self
            .own
            .clone()
            .unwrap_or_else(|| "http://<Host> or https://<Host> of each request".to_owned());
        tracing::info!(
            own_origin = %own,
            allowed_origins = ?self.allowed,
            "browser origins accepted on cookie-transport requests (the allowed ones also get CORS)"
        );
    }
}

/// Whether a request may change state: anything but GET, HEAD, OPTIONS
/// and TRACE. Such a request authenticated by the cookie needs the CSRF
/// token.
pub fn changes_state(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The full CSRF check of a cookie-transport state change: the origin
/// rules, then `X-CSRF-Token` against the token of the session's refresh
/// `generation` (one value at a time). A refresh checks against the
/// presented refresh token's generation, so a grace-window replay (a
/// second tab) carries the CSRF token issued with that token.
pub fn check_token(
    origins: &OriginPolicy,
    service: &SessionService,
    headers: &HeaderMap,
    session_id: &SessionId,
    generation: u64,
) -> Result<(), Rejection> {
    origins.check(headers)?;
    let Some(presented) = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) else {
        log_refusal("csrf_header_missing", headers);
        return Err(Rejection::CsrfFailed("missing X-CSRF-Token header"));
    };
    if !service.csrf_valid(session_id, generation, presented) {
        log_refusal("csrf_token_wrong", headers);
        return Err(Rejection::CsrfFailed("wrong CSRF token"));
    }
    Ok(())
}

/// The CSRF check of a state change made with the access-token cookie:
/// against the session's live refresh generation, read from the store (a
/// refresh in another tab moves it). A session no longer active is 401.
pub async fn check_token_live(
    origins: &OriginPolicy,
    service: &SessionService,
    headers: &HeaderMap,
    session_id: &SessionId,
) -> Result<(), Rejection> {
    origins.check(headers)?;
    let session = service
        .get_active(session_id)
        .await
        .map_err(|e| match e {
            session_core::service::ServiceError::Store(s) => Rejection::StoreUnavailable(s),
            _ => Rejection::InvalidToken,
        })?
        .ok_or(Rejection::InvalidToken)?;
    check_token(
        origins,
        service,
        headers,
        session_id,
        session.refresh.generation,
    )
}

/// Logs a refused CSRF token check (never the token).
fn log_refusal(rule: &'static str, headers: &HeaderMap) {
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "-".to_owned(), loggable);
    tracing::info!(rule, origin, "csrf check refused the request");
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_own_origin_is_the_host_with_either_scheme_unless_a_public_url_is_set() {
        let p = OriginPolicy::default();
        let h = headers(&[("host", "localhost:8080")]);
        assert!(p.allows(&h, "http://localhost:8080"));
        assert!(p.allows(&h, "https://localhost:8080"));
        assert!(!p.allows(&h, "http://localhost:8081"));
        assert!(!p.allows(&h, "http://localhost:8080.evil"));
        assert!(!p.allows(&HeaderMap::new(), "http://"));
        let url = PublicUrl::parse("https://example.com/auth").unwrap();
        let p = OriginPolicy::new(Some(&url), vec!["https://app.example".into()]);
        assert!(p.allows(&h, "https://example.com"));
        assert!(p.allows(&h, "https://app.example"));
        assert!(!p.allows(&h, "http://localhost:8080"));
    }

    #[test]
    fn only_same_origin_requests_pass_the_origin_check() {
        let p = OriginPolicy::default();
        assert!(p.check(&headers(&[("host", "app.example")])).is_ok());
        assert!(
            p.check(&headers(&[
                ("host", "app.example"),
                ("origin", "https://app.example")
            ]))
            .is_ok()
        );
        for bad in [
            &[("host", "app.example"), ("origin", "https://evil.example")][..],
            &[("host", "app.example"), ("origin", "null")],
            &[("host", "app.example"), ("sec-fetch-site", "cross-site")],
        ] {
            assert!(matches!(
                p.check(&headers(bad)),
                Err(Rejection::CsrfFailed(_))
            ));
        }
    }

    #[test]
    fn safe_methods_change_nothing() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!changes_state(&m));
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(changes_state(&m));
        }
    }
}
