//! Where a request's tokens may come from: the `Authorization` header and
//! the contract's cookies, never a query string. Header values longer than
//! [`MAX_TOKEN_HEADER`] are not read.

use http::{HeaderMap, header};

/// Name of the access-token cookie.
pub const ACCESS_COOKIE: &str = "__Host-session";
/// Name of the refresh-token cookie.
pub const REFRESH_COOKIE: &str = "__Secure-refresh";
/// Name of the readable CSRF cookie (not `HttpOnly`: the page reads it).
pub const CSRF_COOKIE: &str = "__Host-csrf";
/// Longest header value read for tokens.
pub const MAX_TOKEN_HEADER: usize = 8192;

/// The value of the cookie `name`, by exact name only.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= MAX_TOKEN_HEADER)
}

/// The bearer token of the `Authorization` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if v.len() > MAX_TOKEN_HEADER {
        return None;
    }
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Whether the client asked for bearer transport (`X-Session-Transport:
/// bearer`): its tokens travel in headers and bodies, never in cookies.
pub fn wants_bearer(headers: &HeaderMap) -> bool {
    headers
        .get("x-session-transport")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("bearer"))
}

/// The scheme of the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer`: an access token not bound to a key.
    Bearer,
    /// `DPoP`: a DPoP-bound access token, sent with a proof.
    Dpop,
}

/// The `Authorization` header's scheme and token, for `Bearer` and `DPoP`;
/// `None` for any other scheme, an empty token or an unreadable header.
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

/// Where a request's access token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `Authorization` header (`Bearer` or `DPoP`).
    Header,
    /// The `__Host-session` cookie: a state change needs the CSRF token.
    Cookie,
}

/// The access token a request presents: `Authorization: Bearer` or
/// `Authorization: DPoP`, else — unless the request asked for bearer
/// transport ([`wants_bearer`]) — the `__Host-session` cookie. An
/// `Authorization` header of another scheme is not a token.
pub fn access_token(headers: &HeaderMap) -> Option<(&str, Source, Option<Scheme>)> {
    match authorization(headers) {
        Some((scheme, t)) => Some((t, Source::Header, Some(scheme))),
        None if !wants_bearer(headers) => {
            cookie(headers, ACCESS_COOKIE).map(|t| (t, Source::Cookie, None))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

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

    #[test]
    fn the_cookie_counts_only_without_a_token_header_and_outside_bearer_transport() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "__Host-session=c".parse().unwrap());
        assert_eq!(access_token(&h), Some(("c", Source::Cookie, None)));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(access_token(&h), Some(("c", Source::Cookie, None)));
        h.insert(header::AUTHORIZATION, "Bearer b".parse().unwrap());
        assert_eq!(
            access_token(&h),
            Some(("b", Source::Header, Some(Scheme::Bearer)))
        );
        h.remove(header::AUTHORIZATION);
        h.insert("x-session-transport", "bearer".parse().unwrap());
        assert_eq!(access_token(&h), None);
    }
}
