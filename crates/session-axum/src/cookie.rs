//! [`CookieWriter`]: the cookies of cookie transport, their attributes and
//! paths. Every cookie is `Secure; SameSite=Strict`; the access and refresh
//! cookies are `HttpOnly`, the CSRF cookie is not (the page reads it).

use axum::response::Response;
use http::{HeaderValue, header};

use crate::public_url::PublicUrl;
use crate::token::{ACCESS_COOKIE, CSRF_COOKIE, REFRESH_COOKIE};

/// Writes the contract's cookies: `__Host-session` (access token, `Path=/`),
/// `__Secure-refresh` (refresh token, `Path=<prefix>/v1/auth`) and
/// `__Host-csrf` (CSRF token, `Path=/`, readable by the page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieWriter {
    refresh_path: String,
}

impl Default for CookieWriter {
    /// No path prefix: the refresh cookie's path is `/v1/auth`.
    fn default() -> Self {
        Self::new(None)
    }
}

impl CookieWriter {
    /// The writer for a service reached at `public_url` (its path prefix
    /// starts the refresh cookie's path), or at the root.
    pub fn new(public_url: Option<&PublicUrl>) -> Self {
        let prefix = public_url.map_or("", |u| u.prefix.as_str());
        Self {
            refresh_path: format!("{prefix}/v1/auth"),
        }
    }

    /// The refresh cookie's path: the public URL's prefix + `/v1/auth`.
    pub fn refresh_path(&self) -> &str {
        &self.refresh_path
    }

    /// Appends one `Set-Cookie` (`Secure; SameSite=Strict` always). A value
    /// that cannot be a header is not written.
    pub fn set(
        res: &mut Response,
        name: &str,
        value: &str,
        path: &str,
        max_age: i64,
        http_only: bool,
    ) {
        let http_only = if http_only { "; HttpOnly" } else { "" };
        let v = format!(
            "{name}={value}; Path={path}; Max-Age={max_age}{http_only}; Secure; SameSite=Strict"
        );
        if let Ok(v) = HeaderValue::from_str(&v) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }

    /// Sets the three cookies of a login or refresh: the access token for
    /// `access_max_age` seconds, the refresh and CSRF tokens for
    /// `session_max_age` (what is left of the session).
    pub fn set_tokens(
        &self,
        res: &mut Response,
        tokens: IssuedCookies<'_>,
        access_max_age: i64,
        session_max_age: i64,
    ) {
        Self::set(res, ACCESS_COOKIE, tokens.access, "/", access_max_age, true);
        Self::set(
            res,
            REFRESH_COOKIE,
            tokens.refresh,
            &self.refresh_path,
            session_max_age,
            true,
        );
        Self::set(res, CSRF_COOKIE, tokens.csrf, "/", session_max_age, false);
    }

    /// Clears the three cookies of cookie transport.
    pub fn clear(&self, res: &mut Response) {
        Self::set(res, ACCESS_COOKIE, "", "/", 0, true);
        Self::set(res, REFRESH_COOKIE, "", &self.refresh_path, 0, true);
        Self::set(res, CSRF_COOKIE, "", "/", 0, false);
    }
}

/// The plaintext tokens [`CookieWriter::set_tokens`] puts in cookies.
#[derive(Clone, Copy)]
pub struct IssuedCookies<'a> {
    /// The access token.
    pub access: &'a str,
    /// The refresh token.
    pub refresh: &'a str,
    /// The CSRF token.
    pub csrf: &'a str,
}

impl std::fmt::Debug for IssuedCookies<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedCookies(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use axum::response::IntoResponse as _;

    use super::*;

    fn set_cookies(res: &Response) -> Vec<&str> {
        res.headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn the_refresh_cookie_path_follows_the_public_url_prefix() {
        assert_eq!(CookieWriter::default().refresh_path(), "/v1/auth");
        let url = PublicUrl::parse("https://example.com/auth/").unwrap();
        assert_eq!(
            CookieWriter::new(Some(&url)).refresh_path(),
            "/auth/v1/auth"
        );
    }

    #[test]
    fn issued_cookies_have_the_contracts_attributes_and_clearing_empties_all_three() {
        let url = PublicUrl::parse("https://example.com/auth").unwrap();
        let writer = CookieWriter::new(Some(&url));
        let mut res = ().into_response();
        let tokens = IssuedCookies {
            access: "a",
            refresh: "r",
            csrf: "c",
        };
        writer.set_tokens(&mut res, tokens, 900, 3600);
        assert_eq!(
            set_cookies(&res),
            [
                "__Host-session=a; Path=/; Max-Age=900; HttpOnly; Secure; SameSite=Strict",
                "__Secure-refresh=r; Path=/auth/v1/auth; Max-Age=3600; HttpOnly; Secure; SameSite=Strict",
                "__Host-csrf=c; Path=/; Max-Age=3600; Secure; SameSite=Strict",
            ]
        );
        let mut res = ().into_response();
        writer.clear(&mut res);
        assert_eq!(
            set_cookies(&res),
            [
                "__Host-session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
                "__Secure-refresh=; Path=/auth/v1/auth; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
                "__Host-csrf=; Path=/; Max-Age=0; Secure; SameSite=Strict",
            ]
        );
    }
}
