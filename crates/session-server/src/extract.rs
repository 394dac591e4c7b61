//! Reading requests: strict JSON bodies, the client's address, tokens from
//! the only places they may come from (the `Authorization` header, the JSON
//! body, the contract's cookies — never a query string).

use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use serde::de::{DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use session_core::ClientInfo;

use crate::error::ApiError;
use crate::state::AppState;

pub use session_axum::token::{
    ACCESS_COOKIE, CSRF_COOKIE, MAX_TOKEN_HEADER, REFRESH_COOKIE, bearer, cookie, wants_bearer,
};

/// Deepest JSON nesting accepted.
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest user agent kept; longer ones are cut (on a char boundary).
pub const MAX_USER_AGENT: usize = 512;

/// A JSON body: `application/json`, within the body limit, at most
/// [`MAX_JSON_DEPTH`] deep, no duplicate keys anywhere, then typed.
#[derive(Debug)]
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.settings.body_limit;
        let (parts, body) = req.into_parts();
        read_json(&parts.headers, body, limit).await.map(StrictJson)
    }
}

/// Reads a JSON body: content type, size limit, strict parse.
pub async fn read_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ));
    }
    let bytes = read_body(body, limit).await?;
    parse_strict(&bytes)
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body over {limit} bytes"),
        )
    })
}

/// Parses JSON refusing duplicate keys and deep nesting, then types it.
/// Syntax errors and a body that is not a JSON object are 400; shape
/// errors (wrong field types, missing fields) are 422 with a fixed message
/// per field that never quotes the value sent.
pub fn parse_strict<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.deserialize_any(Checker { depth: 0 })
        .and_then(|()| de.end())
        .map_err(|e| ApiError::invalid_request(format!("malformed JSON: {}", short(&e))))?;
    // serde would read a struct from an array too (`["token"]`); every
    // JSON body of the contract is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_request(
            "the request body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        if e.inner().is_data() {
            ApiError::unprocessable(shape_message(&e))
        } else {
            ApiError::invalid_request(format!("malformed JSON: {}", short(e.inner())))
        }
    })
}

// Only syntax messages come from serde_json as they are: they give a
// position, never a value.
fn short(e: &serde_json::Error) -> String {
    let mut s = e.to_string();
    s.truncate(160);
    s
}

/// A name the service chose (a field of its own request types), safe to
/// show; anything else is not repeated.
fn safe_name(name: &str) -> Option<&str> {
    (!name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
    .then_some(name)
}

/// The 422 message of a shape error. serde's own messages quote the value
/// (`invalid type: integer `12345`, expected a string` — a password, once),
/// so only the field's name is kept, in a fixed sentence.
fn shape_message(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let text = e.inner().to_string();
    let quoted = text.split('`').nth(1).and_then(safe_name);
    if text.starts_with("missing field") {
        return quoted.map_or_else(
            || "a required field is missing".to_owned(),
            |f| format!("missing field `{f}`"),
        );
    }
    if text.starts_with("unknown field") {
        return quoted.map_or_else(
            || "the body has a field this request does not take".to_owned(),
            |f| format!("unknown field `{f}`"),
        );
    }
    let path = e.path().to_string();
    match safe_name(&path) {
        Some(field) if path != "." => format!("field `{field}` has the wrong type or value"),
        _ => "a field has the wrong type or value".to_owned(),
    }
}

struct Checker {
    depth: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for Checker {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checker {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_JSON_DEPTH {
            return Err(serde::de::Error::custom("nested too deeply"));
        }
        while seq.next_element_seed(Checker { depth })?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.depth + 1;
        if depth > MAX_JSON_DEPTH {
            return Err(serde::de::Error::custom("nested too deeply"));
        }
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Checker { depth })?;
        }
        Ok(())
    }
}

/// The client as the server sees it: address (after trusted proxies) and
/// user agent.
#[derive(Debug, Clone)]
pub struct Client(pub ClientInfo);

impl FromRequestParts<AppState> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let ip = peer.map(|p| client_ip(p, &parts.headers, &state.settings.trusted_proxies));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                let mut ua = ua.to_owned();
                if ua.len() > MAX_USER_AGENT {
                    let mut cut = MAX_USER_AGENT;
                    while !ua.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    ua.truncate(cut);
                }
                ua
            });
        Ok(Self(ClientInfo {
            location: ip.and_then(|ip| state.geoip.as_ref()?.lookup(ip)),
            ip: ip.map(|ip| ip.to_string()),
            user_agent,
            // Set by the handlers that check a DPoP proof.
            dpop_jkt: None,
        }))
    }
}

/// The TCP peer, or — when the peer is a trusted proxy — the client named
/// by `X-Forwarded-For`, walked from the right (contract v1.1 "Client IP"):
/// trusted proxies are skipped and the first address that is not one is
/// the client. An entry that is not an IP address ends the walk, and the
/// last address walked before it (a trusted proxy, or the peer) is the
/// client: nothing left of a forged entry is believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    let mut client = peer;
    if !is_trusted(&client) {
        return client;
    }
    // Several header lines are one list, in order (RFC 9110 5.3).
    let lines: Vec<_> = headers.get_all("x-forwarded-for").iter().collect();
    for line in lines.into_iter().rev() {
        let Ok(line) = line.to_str() else {
            return client;
        };
        for entry in line.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                return client;
            };
            client = ip;
            if !is_trusted(&client) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Login {
        #[allow(dead_code)]
        username: String,
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(parse_strict::<Login>(br#"{"username":"a"}"#).is_ok());
        assert_eq!(
            parse_strict::<Login>(br#"{"username":"a","username":"b"}"#)
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        assert!(parse_strict::<serde_json::Value>(br#"{"a":{"b":1,"b":2}}"#).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            parse_strict::<serde_json::Value>(deep.as_bytes())
                .unwrap_err()
                .code(),
            "invalid_request"
        );
        let ok = format!("{{\"a\":{}{}}}", "[".repeat(10), "]".repeat(10));
        assert!(parse_strict::<serde_json::Value>(ok.as_bytes()).is_ok());
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Credentials {
        username: String,
        password: String,
        limit: Option<u32>,
    }

    fn message(e: ApiError) -> String {
        let res = axum::response::IntoResponse::into_response(e);
        let body = futures::executor::block_on(axum::body::to_bytes(res.into_body(), 4096));
        String::from_utf8(body.unwrap().to_vec()).unwrap()
    }

    #[test]
    fn shape_errors_name_the_field_but_never_echo_the_value() {
        for (body, field) in [
            (&br#"{"username":"a","password":98765432}"#[..], "password"),
            (br#"{"username":"a","password":98765.4321}"#, "password"),
            (br#"{"username":"a","password":true}"#, "password"),
            (
                br#"{"username":"a","password":"p","limit":"98765432"}"#,
                "limit",
            ),
            (
                br#"{"username":"a","password":"p","limit":-98765432}"#,
                "limit",
            ),
        ] {
            let e = parse_strict::<Credentials>(body).unwrap_err();
            assert_eq!(e.code(), "invalid_field");
            let text = message(e);
            assert!(!text.contains("98765") && !text.contains("true"), "{text}");
            assert!(text.contains(&format!("`{field}`")), "{text}");
        }
        let missing = message(parse_strict::<Credentials>(br#"{"username":"a"}"#).unwrap_err());
        assert!(missing.contains("missing field `password`"), "{missing}");
        let unknown = message(
            parse_strict::<Credentials>(br#"{"username":"a","password":"p","pasword":"x"}"#)
                .unwrap_err(),
        );
        assert!(unknown.contains("unknown field `pasword`"), "{unknown}");
        let odd = message(
            parse_strict::<Credentials>(br#"{"username":"a","password":"p","hunter 2!":1}"#)
                .unwrap_err(),
        );
        assert!(!odd.contains("hunter"), "{odd}");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_a_bad_request() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Introspect {
            token: String,
        }
        for body in [
            &br#"["token"]"#[..],
            br#""token""#,
            b"42",
            b" null ",
            b"true",
        ] {
            assert_eq!(
                parse_strict::<Introspect>(body).unwrap_err().code(),
                "invalid_request",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse_strict::<Introspect>(b" \n{\"token\":\"t\"}").is_ok());
    }

    #[test]
    fn wrong_shapes_are_unprocessable_and_syntax_errors_are_bad_requests() {
        assert_eq!(
            parse_strict::<Login>(br#"{"username":5}"#)
                .unwrap_err()
                .code(),
            "invalid_field"
        );
        assert_eq!(
            parse_strict::<Login>(b"{nope").unwrap_err().code(),
            "invalid_request"
        );
        assert_eq!(
            parse_strict::<Login>(b"{} trailing").unwrap_err().code(),
            "invalid_request"
        );
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let outsider: IpAddr = "203.0.113.9".parse().unwrap();
        let h = xff("198.51.100.7, 10.2.2.2");
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(outsider, &h, &trusted), outsider);
        assert_eq!(client_ip(peer, &h, &[]), peer);
        assert_eq!(client_ip(peer, &xff("garbage"), &trusted), peer);
        // The right-most untrusted entry wins, not a spoofed left-most one.
        let h = xff("1.1.1.1, 198.51.100.7");
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_for_is_walked_from_the_right_and_stops_at_a_non_address() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // The contract's two examples.
        assert_eq!(
            client_ip(peer, &xff("not-an-ip, 203.0.113.7"), &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(peer, &xff("203.0.113.7, not-an-ip, 10.9.9.9"), &trusted),
            ip("10.9.9.9")
        );
        // A bad entry right at the end: the peer is the client.
        assert_eq!(
            client_ip(peer, &xff("203.0.113.7, not-an-ip"), &trusted),
            peer
        );
        // Trusted hops are skipped; only trusted ones: the left-most of them.
        assert_eq!(
            client_ip(
                peer,
                &xff("198.51.100.1, 203.0.113.7, 10.2.2.2, 10.3.3.3"),
                &trusted
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(peer, &xff("10.2.2.2, 10.3.3.3"), &trusted),
            ip("10.2.2.2")
        );
        // An address with a port, or an empty entry, is not an address.
        assert_eq!(client_ip(peer, &xff("203.0.113.7:443"), &trusted), peer);
        assert_eq!(client_ip(peer, &xff("203.0.113.7,"), &trusted), peer);
        // Several header lines are one list: the last line is walked first.
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        h.append("x-forwarded-for", "203.0.113.7, 10.2.2.2".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), ip("203.0.113.7"));
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        h.append("x-forwarded-for", "10.2.2.2".parse().unwrap());
        assert_eq!(client_ip(peer, &h, &trusted), ip("198.51.100.1"));
        // IPv6 works the same way.
        let trusted6: Vec<IpNet> = vec!["fd00::/8".parse().unwrap()];
        assert_eq!(
            client_ip(ip("fd00::1"), &xff("junk, 2001:db8::7, fd00::2"), &trusted6),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn only_the_exact_cookie_name_counts() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "session=a; __Host-sessionX=b; __Host-session=c"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("c"));
        assert_eq!(cookie(&h, REFRESH_COOKIE), None);
    }

    #[test]
    fn bearer_tokens_come_from_the_authorization_header() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
