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
