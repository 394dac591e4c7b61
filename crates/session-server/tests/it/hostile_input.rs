//! Generated hostile requests against the real server: JSON bodies,
//! cookies, tokens and `X-Forwarded-For` that no client should send. The
//! server answers every one with a JSON 4xx (or a 2xx), never a 5xx, and
//! in bounded time; the real session keeps working.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

/// Text a client could put in a header (visible ASCII and tabs).
fn header_text() -> impl Strategy<Value = String> {
    "[\t -~]{0,300}"
}

/// Token-shaped text: base64url runs, dots, prefixes of real formats.
fn tokenish() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,120}",
        "[A-Za-z0-9_-]{1,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_=+/-]{0,60}",
        "eyJ[A-Za-z0-9_-]{0,80}\\.eyJ[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,40}",
        "srt_[A-Za-z0-9_.-]{0,120}",
        header_text(),
    ]
}

fn bodyish() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        "\\{(\"(username|password|refresh_token|token|user_id|metadata)\":(\"[ -~]{0,20}\"|[0-9.e-]{1,12}|true|null|\\[\\]|\\{\\}),?){0,4}\\}"
            .prop_map(String::into_bytes),
        "[\\[\\]{}\",:0-9a-z ]{0,80}".prop_map(String::into_bytes),
    ]
}

#[derive(Debug, Clone)]
struct Hostile {
    route: usize,
    body: Vec<u8>,
    content_type: Option<String>,
    cookie: String,
    authorization: String,
    forwarded_for: String,
    bearer_transport: bool,
}

fn hostile() -> impl Strategy<Value = Hostile> {
    (
        0..6usize,
        bodyish(),
        prop::option::of(prop_oneof![
            Just("application/json".to_owned()),
            Just("application/json; charset=utf-8".to_owned()),
            header_text(),
        ]),
        prop_oneof![
            tokenish().prop_map(|t| format!("__Host-session={t}")),
            tokenish().prop_map(|t| format!("__Secure-refresh={t}")),
            header_text(),
        ],
        prop_oneof![
            tokenish().prop_map(|t| format!("Bearer {t}")),
            tokenish().prop_map(|t| format!("DPoP {t}")),
            header_text(),
        ],
        prop_oneof![
            "((([0-9]{1,3}\\.){3}[0-9]{1,3}|[0-9a-f:]{2,20}|[a-z-]{0,8}), ?){0,5}",
            header_text(),
        ],
        any::<bool>(),
    )
        .prop_map(
            |(
                route,
                body,
                content_type,
                cookie,
                authorization,
                forwarded_for,
                bearer_transport,
            )| {
                Hostile {
                    route,
                    body,
                    content_type,
                    cookie,
                    authorization,
                    forwarded_for,
                    bearer_transport,
                }
            },
        )
}

async fn send(app: &App, h: &Hostile) -> (StatusCode, String) {
    let (method, url) = match h.route {
        0 => (reqwest::Method::POST, app.public("/v1/auth/login")),
        1 => (reqwest::Method::POST, app.public("/v1/auth/refresh")),
        2 => (reqwest::Method::POST, app.public("/v1/auth/logout")),
        3 => (reqwest::Method::GET, app.public("/v1/session")),
        4 => (reqwest::Method::GET, app.public("/v1/auth/verify")),
        _ => (reqwest::Method::POST, app.admin("/admin/v1/introspect")),
    };
    let mut req = app
        .http
        .request(method, url)
        .timeout(Duration::from_secs(10))
        .body(h.body.clone());
    if let Some(ct) = &h.content_type {
        req = req.header("content-type", ct);
    }
    req = req
        .header("cookie", &h.cookie)
        .header("x-forwarded-for", &h.forwarded_for);
    req = if h.route == 5 {
        req.bearer_auth(app.server.admin_token())
    } else {
        req.header("authorization", &h.authorization)
    };
    if h.bearer_transport {
        req = req.header("x-session-transport", "bearer");
    }
    let r = req.send().await.expect("answered in bounded time");
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_hostile_requests_never_get_a_5xx() {
    let app = App::start_with(|raw| raw.set("trusted_proxies", "127.0.0.0/8")).await;
    let t = app.bearer_session("alice").await;
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&hostile(), |h| {
        let (status, body) = tokio::task::block_in_place(|| handle.block_on(send(&app, &h)));
        prop_assert!(!status.is_server_error(), "{status} for {h:?}: {body}");
        if status.is_client_error() {
            let v: Value = serde_json::from_str(&body)
                .map_err(|_| TestCaseError::fail(format!("not JSON: {body}")))?;
            prop_assert!(v["error"].is_string() && v["message"].is_string(), "{body}");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(app.whoami(&t.access).await.status(), StatusCode::OK);
}
