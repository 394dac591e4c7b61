//! Hostile input: every one gets a clear 4xx JSON error, never a 500, a
//! panic or a hang, and nothing already stored is lost.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac as _};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::harness::*;

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let h = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    let c = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap()).unwrap();
    (h, c, it.next().unwrap().to_owned())
}

fn hs256(key: &[u8], header: &Value, claims: &Value) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Hostile variants of a valid token.
async fn hostile_tokens(app: &App, good: &str) -> Vec<(&'static str, String)> {
    let (h, c, sig) = parts(good);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let jwks: Value = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let public_bytes = URL_SAFE_NO_PAD.decode(&x).unwrap();
    let with_header = |patch: Value| {
        let mut h2 = h.clone();
        for (k, v) in patch.as_object().unwrap() {
            h2[k] = v.clone();
        }
        format!("{}.{}.{}", b64(&h2), b64(&c), sig)
    };
    let with_claims = |patch: Value| {
        let mut c2 = c.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c2.as_object_mut().unwrap().remove(k);
            } else {
                c2[k] = v.clone();
            }
        }
        format!("{}.{}.{}", b64(&h), b64(&c2), sig)
    };
    let mut out = Vec::new();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut h2 = h.clone();
        h2["alg"] = json!(alg);
        out.push(("alg none", format!("{}.{}.", b64(&h2), b64(&c))));
    }
    let mut h_hs = h.clone();
    h_hs["alg"] = json!("HS256");
    out.push(("HS256 with the public key", hs256(&public_bytes, &h_hs, &c)));
    out.push((
        "HS256 with the public key text",
        hs256(x.as_bytes(), &h_hs, &c),
    ));
    out.push((
        "unknown kid",
        with_header(json!({ "kid": "AAAAAAAAAAAAAAAAAAAAAA" })),
    ));
    out.push((
        "kid path",
        with_header(json!({ "kid": "../../../../etc/passwd" })),
    ));
    out.push(("kid sql", with_header(json!({ "kid": "x' OR '1'='1" }))));
    out.push(("kid huge", with_header(json!({ "kid": "k".repeat(2000) }))));
    out.push((
        "jku",
        with_header(json!({ "jku": "http://127.0.0.1:1/jwks" })),
    ));
    out.push((
        "jwk",
        with_header(json!({ "jwk": { "kty": "oct", "k": "AAAA" } })),
    ));
    out.push(("x5u", with_header(json!({ "x5u": "http://127.0.0.1:1/x" }))));
    out.push(("crit", with_header(json!({ "crit": ["exp"] }))));
    out.push(("typ JWT", with_header(json!({ "typ": "JWT" }))));
    out.push(("expired", with_claims(json!({ "exp": now - 3600 }))));
    out.push(("nbf future", with_claims(json!({ "nbf": now + 3600 }))));
    out.push(("wrong iss", with_claims(json!({ "iss": "evil" }))));
    out.push(("no aud", with_claims(json!({ "aud": null }))));
    out.push(("wrong aud", with_claims(json!({ "aud": "other" }))));
    out.push((
        "exp as string",
        with_claims(json!({ "exp": (now + 600).to_string() })),
    ));
    out.push(("tampered sub", with_claims(json!({ "sub": "admin" }))));
    let mut segs: Vec<&str> = good.split('.').collect();
    out.push(("stripped signature", format!("{}.{}.", segs[0], segs[1])));
    out.push(("two segments", format!("{}.{}", segs[0], segs[1])));
    out.push(("padded", format!("{}==.{}.{}", segs[0], segs[1], segs[2])));
    let std_payload = STANDARD.encode(URL_SAFE_NO_PAD.decode(segs[1]).unwrap());
    out.push((
        "standard base64",
        format!("{}.{}.{}", segs[0], std_payload, segs[2]),
    ));
    out.push(("five segments (JWE)", format!("{}.a.b.c.d", segs[0])));
    let dup = format!(
        "{}.{}.{}",
        segs[0],
        URL_SAFE_NO_PAD.encode(
            format!(
                "{{\"sub\":\"admin\",{}",
                &serde_json::to_string(&c).unwrap()[1..]
            )
            .as_bytes()
        ),
        segs[2]
    );
    out.push(("duplicate claim", dup));
    out.push(("100 KB token", "a".repeat(100 * 1024)));
    out.push(("empty", String::new()));
    segs[2] = "AAAA";
    out.push(("bad signature", segs.join(".")));
    out
}

#[tokio::test]
async fn every_hostile_token_is_refused_and_nothing_breaks() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    for (name, token) in hostile_tokens(&app, &t.access).await {
        for transport in ["header", "cookie"] {
            let mut req = app.http.get(app.public("/v1/session"));
            req = if transport == "header" {
                req.header("authorization", format!("Bearer {token}"))
            } else {
                req.header("cookie", format!("__Host-session={token}"))
            };
            let r = req.send().await.unwrap();
            let status = r.status();
            assert!(
                status == StatusCode::UNAUTHORIZED
                    || status == StatusCode::BAD_REQUEST
                    || status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "{name} via {transport}: {status}"
            );
            if status == StatusCode::UNAUTHORIZED {
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["error"], "invalid_token", "{name}");
            }
        }
    }
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::OK,
        "the real session still works"
    );
}

#[tokio::test]
async fn malformed_bodies_get_clear_4xx_errors() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let login = app.public("/v1/auth/login");
    let send = |body: Vec<u8>, ct: &'static str| {
        app.http
            .post(&login)
            .header("content-type", ct)
            .header("X-Session-Transport", "bearer")
            .body(body)
            .send()
    };
    let cases: Vec<(Vec<u8>, &str, StatusCode, &str)> = vec![
        (
            b"{not json".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            b"".to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            br#"{"username":"a","password":"b"}"#.to_vec(),
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            vec![b' '; 1024 * 1024],
            "application/json",
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            br#"{"username":"a","username":"b","password":"c"}"#.to_vec(),
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            br#"{"username":5,"password":"c"}"#.to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            br#"{"username":"","password":"c"}"#.to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            "{\"username\":\"a\\u0000b\",\"password\":\"c\"}"
                .as_bytes()
                .to_vec(),
            "application/json",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            vec![0xff, 0xfe, 0x00],
            "application/json",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (body, ct, status, code) in cases {
        let preview = String::from_utf8_lossy(&body[..body.len().min(30)]).into_owned();
        let r = send(body, ct).await.unwrap();
        assert_eq!(error_code(r).await, (status, code.to_owned()), "{preview}");
    }
    assert_eq!(app.whoami(&t.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn odd_user_agents_and_injection_ids_are_stored_safely() {
    let app = App::start().await;
    let before = app.bearer_session("alice").await;
    let big_ua = "U".repeat(8 * 1024);
    let r = app
        .http
        .post(app.public("/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .header("user-agent", big_ua)
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "an 8 KB user agent is cut, not refused"
    );
    for id in [
        "'; DROP TABLE sessions;--",
        "\" OR 1=1 --",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "ユーザー",
    ] {
        let r = app
            .admin_req(Method::POST, "/admin/v1/sessions")
            .json(&json!({ "user_id": id, "user_agent": UA }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{id}");
        let t = Tokens::from_body(r.json().await.unwrap());
        let me: Value = app.whoami(&t.access).await.json().await.unwrap();
        assert_eq!(me["user_id"], id);
    }
    let r = app
        .admin_req(Method::POST, "/admin/v1/sessions")
        .json(&json!({ "user_id": "nul\u{0}byte" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.whoami(&before.access).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_is_rate_limited_with_retry_after() {
    let app = App::start_with(|raw| raw.set("rate_limit_login", "3")).await;
    app.add_user("alice").await;
    let mut limited = None;
    for _ in 0..6 {
        let r = app.login_bearer("alice", "wrong password!").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the fourth attempt within a minute is refused");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(error_code(r).await.1, "rate_limited");
}

#[tokio::test]
async fn trusted_proxies_decide_whose_forwarded_for_counts() {
    let app = App::start_with(|raw| raw.set("trusted_proxies", "127.0.0.0/8")).await;
    app.add_user("alice").await;
    let r = app
        .http
        .post(app.public("/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .header("X-Forwarded-For", "198.51.100.23, 127.0.0.5")
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let t = Tokens::from_body(r.json().await.unwrap());
    let s: Value = app.admin_view(&t.session_id).await;
    assert_eq!(s["ip"], "198.51.100.23");

    let untrusting = App::start().await;
    untrusting.add_user("bob").await;
    let r = untrusting
        .http
        .post(untrusting.public("/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .header("X-Forwarded-For", "198.51.100.23")
        .json(&json!({ "username": "bob", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let t = Tokens::from_body(r.json().await.unwrap());
    let s: Value = untrusting.admin_view(&t.session_id).await;
    assert_eq!(s["ip"], "127.0.0.1");
}

#[tokio::test]
async fn a_username_under_attack_is_locked_out_without_locking_out_others() {
    let app = App::start_with(|raw| raw.set("rate_limit_login", "300")).await;
    app.add_user("alice").await;
    app.add_user("bob").await;
    let mut locked = false;
    for _ in 0..12 {
        let r = app.login_bearer("alice", "guess guess guess").await;
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
            locked = true;
            break;
        }
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert!(locked, "more than 10 failures a minute lock the username");
    // Even the right password waits out the lockout...
    assert_eq!(
        app.login_bearer("alice", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...but other users are unaffected.
    assert_eq!(
        app.login_bearer("bob", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_a_revoked_session_is_idempotent_and_unknown_ones_are_404() {
    let app = App::start().await;
    let t = app.admin_session("u").await;
    let path = format!("/admin/v1/sessions/{}", t.session_id);
    assert_eq!(
        app.admin_req(Method::DELETE, &path)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.admin_req(Method::DELETE, &path)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.admin_req(Method::DELETE, "/admin/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.audit(&format!("session_id={}&kind=session_revoked", t.session_id))
            .await
            .len(),
        1
    );
}
