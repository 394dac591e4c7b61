//! [`PublicUrl`]: the service's URL as browsers and DPoP clients see it,
//! behind a reverse proxy that may strip a path prefix.

/// The public URL (`https://example.com/auth`): its origin is the service's
/// own origin ([`crate::csrf::OriginPolicy`]) and the origin of the URLs a
/// DPoP proof's `htu` names ([`crate::dpop::DpopVerifier`]); its path is
/// the prefix the refresh cookie's path starts with
/// ([`crate::cookie::CookieWriter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// `scheme://host[:port]`, lower case, as browsers send it in `Origin`.
    pub origin: String,
    /// The path prefix the reverse proxy strips (`/auth`), or `""`.
    pub prefix: String,
}

/// Why a public URL was refused; says which value and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPublicUrl(String);

impl PublicUrl {
    /// Parses `http(s)://host[:port][/prefix]` (no query, no fragment, no
    /// user info, nothing in the path a cookie's `Path` cannot hold).
    pub fn parse(v: &str) -> Result<Self, InvalidPublicUrl> {
        let invalid = |why: &str| InvalidPublicUrl(format!("{v:?}: {why}"));
        let uri: http::Uri = v
            .trim()
            .parse()
            .map_err(|_| invalid("not a URL (expected e.g. https://example.com/auth)"))?;
        let scheme = uri
            .scheme_str()
            .map(str::to_ascii_lowercase)
            .filter(|s| s == "http" || s == "https")
            .ok_or_else(|| invalid("expected an http:// or https:// URL"))?;
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("no host"))?
            .as_str()
            .to_ascii_lowercase();
        if authority.contains('@') {
            return Err(invalid("no user info allowed"));
        }
        if uri.query().is_some() || v.contains('#') {
            return Err(invalid("no query or fragment allowed"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        if prefix.contains(|c: char| c == ';' || c == ',' || c.is_whitespace()) {
            return Err(invalid("the path cannot go into a cookie"));
        }
        Ok(Self {
            origin: format!("{scheme}://{authority}"),
            prefix,
        })
    }
}
