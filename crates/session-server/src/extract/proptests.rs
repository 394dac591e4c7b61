//! Hostile-input generation against every parser of request bytes in this
//! module: JSON bodies, cookies, `Authorization`, `X-Forwarded-For`. None
//! may panic, answer with a 5xx, echo a value into an error, or take long.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;
use proptest::prelude::*;

use super::*;

/// Generous: these parsers take microseconds; a case near this bound is a
/// complexity bug (backtracking, quadratic scans), not a slow machine.
const BOUND: Duration = Duration::from_millis(250);

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // reason: only parsed
struct Login {
    username: String,
    password: String,
}

#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // reason: only parsed
struct Create {
    user_id: String,
    metadata: Option<serde_json::Value>,
    ip: Option<String>,
    user_agent: Option<String>,
}

/// JSON-ish text: real JSON values, fragments of JSON syntax, and noise.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n:e}")),
        "[a-z0-9\\\\\"\\u{0}-\\u{1f}\\u{80}-\\u{10ffff}]{0,12}"
            .prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
        Just("1e999999".to_owned()),
        Just("-0.0e-0".to_owned()),
        Just("\"\\ud800\"".to_owned()),
    ];
    let value = leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("username".to_owned()),
                        Just("password".to_owned()),
                        Just("user_id".to_owned()),
                        Just("metadata".to_owned()),
                        "[a-z_]{0,8}",
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| {
                let fields: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).unwrap_or_default()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    prop_oneof![
        4 => value.prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => (value_fragments(), value_fragments()).prop_map(|(a, b)| [a, b].concat()),
    ]
}

fn value_fragments() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(&b"{"[..]),
            Just(&b"}"[..]),
            Just(&b"["[..]),
            Just(&b"]"[..]),
            Just(&b","[..]),
            Just(&b":"[..]),
            Just(&b"\""[..]),
            Just(&b"\\u"[..]),
            Just(&b"\"password\""[..]),
            Just(&b"1"[..]),
            Just(&b" "[..]),
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn timed<T>(f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    assert!(started.elapsed() < BOUND, "took {:?}", started.elapsed());
    out
}

fn client_error(e: &ApiError) -> bool {
    matches!(e.status().as_u16(), 400 | 422)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_body_is_parsed_or_refused_with_a_4xx(body in jsonish()) {
        timed(|| {
            if let Err(e) = parse_strict::<Login>(&body) {
                prop_assert!(client_error(&e), "{}", e.status());
            }
            if let Err(e) = parse_strict::<Create>(&body) {
                prop_assert!(client_error(&e), "{}", e.status());
            }
            if let Err(e) = parse_strict::<serde_json::Value>(&body) {
                prop_assert!(client_error(&e), "{}", e.status());
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_wrongly_typed_value_is_never_echoed(
        secret in "[A-Za-z0-9]{8,24}",
        shape in 0..6usize,
    ) {
        let digits: String = secret.bytes().map(|b| char::from(b'1' + b % 9)).collect();
        let password = match shape {
            0 => digits.clone(),
            1 => format!("{digits}.5"),
            2 => format!("[\"{secret}\"]"),
            3 => format!("{{\"{secret}\":1}}"),
            4 => format!("-{digits}"),
            _ => format!("[{digits}]"),
        };
        let body = format!(r#"{{"username":"u","password":{password}}}"#);
        let e = parse_strict::<Login>(body.as_bytes()).unwrap_err();
        prop_assert!(client_error(&e));
        let text = format!("{e:?}");
        prop_assert!(!text.contains(&secret) && !text.contains(&digits), "{text}");
    }

    #[test]
    fn any_cookie_header_yields_at_most_a_bounded_exact_value(
        raw in prop::collection::vec(any::<u8>(), 0..2048),
        text in "[ -~]{0,512}",
    ) {
        for bytes in [raw.as_slice(), text.as_bytes()] {
            let Ok(v) = HeaderValue::from_bytes(bytes) else { continue };
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, v);
            for name in [ACCESS_COOKIE, REFRESH_COOKIE] {
                if let Some(found) = timed(|| cookie(&h, name)) {
                    prop_assert!(!found.is_empty() && found.len() <= MAX_TOKEN_HEADER);
                    prop_assert!(!found.contains(';'));
                }
            }
        }
    }

    #[test]
    fn any_authorization_header_yields_at_most_a_bearer_token(
        raw in prop::collection::vec(any::<u8>(), 0..2048),
        text in "(Bearer|bearer|Basic|DPoP)?[ \t]{0,3}[ -~]{0,256}",
    ) {
        for bytes in [raw.as_slice(), text.as_bytes()] {
            let Ok(v) = HeaderValue::from_bytes(bytes) else { continue };
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v);
            if let Some(t) = timed(|| bearer(&h)) {
                prop_assert!(!t.is_empty() && t.len() <= MAX_TOKEN_HEADER);
            }
        }
    }
}

/// One `X-Forwarded-For` entry as generated.
#[derive(Debug, Clone)]
enum Entry {
    Trusted(u8),
    Outside(u8),
    Outside6(u16),
    Junk(String),
}

impl Entry {
    fn text(&self) -> String {
        match self {
            Self::Trusted(n) => format!("10.0.0.{n}"),
            Self::Outside(n) => format!("203.0.113.{n}"),
            Self::Outside6(n) => format!("2001:db8::{n:x}"),
            Self::Junk(s) => s.clone(),
        }
    }
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        3 => any::<u8>().prop_map(Entry::Trusted),
        3 => any::<u8>().prop_map(Entry::Outside),
        1 => any::<u16>().prop_map(Entry::Outside6),
        // Not addresses: words, ports, brackets, empty.
        1 => "([a-z-]{1,10}|203\\.0\\.113\\.[0-9]{1,3}:[0-9]{1,5}|\\[2001:db8::1\\]|unknown|_hidden|)"
            .prop_map(Entry::Junk),
    ]
}

/// The contract's walk, spelled out: from the right, skip trusted proxies,
/// the first other address is the client; a non-address ends the walk at
/// the last address walked.
fn contract_walk(peer: IpAddr, entries: &[Entry], trusted: &IpNet) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut last = peer;
    for e in entries.iter().rev() {
        let Ok(ip) = e.text().trim().parse::<IpAddr>() else {
            return last;
        };
        if !trusted.contains(&ip) {
            return ip;
        }
        last = ip;
    }
    last
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn forwarded_for_follows_the_contract_walk(
        lines in prop::collection::vec(prop::collection::vec(entry(), 0..6), 0..4),
        peer_trusted in any::<bool>(),
        spaces in any::<bool>(),
    ) {
        let trusted: IpNet = "10.0.0.0/8".parse().unwrap();
        let peer: IpAddr = if peer_trusted { "10.9.9.9" } else { "198.51.100.1" }.parse().unwrap();
        let sep = if spaces { ", " } else { "," };
        let mut h = HeaderMap::new();
        let mut all = Vec::new();
        for line in &lines {
            let text: Vec<String> = line.iter().map(Entry::text).collect();
            // A line that cannot be a header value is one the client could
            // not send either.
            let Ok(v) = HeaderValue::from_str(&text.join(sep)) else { return Ok(()) };
            h.append("x-forwarded-for", v);
            if line.is_empty() {
                all.push(Entry::Junk(String::new()));
            } else {
                all.extend(line.iter().cloned());
            }
        }
        let got = timed(|| client_ip(peer, &h, &[trusted]));
        prop_assert_eq!(got, contract_walk(peer, &all, &trusted));
    }

    #[test]
    fn any_forwarded_for_bytes_give_the_peer_or_an_address_listed(
        raw in prop::collection::vec(any::<u8>(), 0..1024),
    ) {
        let trusted: IpNet = "127.0.0.0/8".parse().unwrap();
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let Ok(v) = HeaderValue::from_bytes(&raw) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v);
        let got = timed(|| client_ip(peer, &h, &[trusted]));
        let listed = String::from_utf8_lossy(&raw)
            .split(',')
            .any(|e| e.trim().parse::<IpAddr>() == Ok(got));
        prop_assert!(got == peer || listed);
    }
}
