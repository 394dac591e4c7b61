//! What browsers need from the public listener that is this service's own:
//! the methods of its routes, for CORS preflights. The rules themselves —
//! which origins may send cookie-transport requests, CSRF tokens, CORS,
//! the cookies' attributes and paths — are session-axum's (`OriginPolicy`,
//! `csrf`, `cors`, `CookieWriter`), configured from `SESSION_PUBLIC_URL`
//! and `SESSION_ALLOWED_ORIGINS` in `state.rs`.

/// The methods of a public route, for a preflight answer; `None` for a
/// path that is not a public API route.
pub fn route_methods(path: &str) -> Option<&'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflights_name_the_methods_of_the_route() {
        assert_eq!(route_methods("/v1/auth/login"), Some("POST"));
        assert_eq!(route_methods("/v1/sessions/abc"), Some("DELETE"));
        assert_eq!(route_methods("/v1/session"), Some("GET, HEAD"));
        assert_eq!(route_methods("/v1/sessions/a/b"), None);
        assert_eq!(route_methods("/nope"), None);
    }
}
