//! Signing keys over HTTP: published before they sign, scheduled and
//! immediate rotation, automatic rotation by the clock, the JWKS cache.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use session_core::ManualClock;
use session_server::config::ConfigError;
use session_server::testing::TestServer;
use time::Duration;

use crate::harness::*;

struct Clocked {
    app: App,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

async fn on_manual_clock(
    configure: impl FnOnce(&mut session_server::RawSettings) -> Result<(), ConfigError>,
) -> Clocked {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(time::OffsetDateTime::now_utc()));
    let server = TestServer::start_in_with_clock(dir.path(), clock.clone(), |raw| {
        raw.set("rate_limit_create", "0")?;
        configure(raw)
    })
    .await
    .unwrap();
    Clocked {
        app: App {
            server,
            http: client(),
        },
        clock,
        _dir: dir,
    }
}

fn kid_of(access: &str) -> String {
    let head = access.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

impl App {
    async fn rotate(&self, query: &str) -> reqwest::Response {
        self.admin_req(Method::POST, &format!("/admin/v1/keys/rotate{query}"))
            .send()
            .await
            .unwrap()
    }

    async fn key_list(&self) -> Vec<Value> {
        let body: Value = self
            .admin_req(Method::GET, "/admin/v1/keys")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["keys"].as_array().unwrap().clone()
    }

    async fn jwks(&self) -> (Vec<String>, String) {
        let r = self
            .http
            .get(self.public("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        let kids = body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        (kids, cache)
    }
}

fn max_age(cache_control: &str) -> i64 {
    cache_control
        .split(',')
        .find_map(|p| p.trim().strip_prefix("max-age="))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_scheduled_rotation_publishes_the_new_key_before_it_signs() {
    let c = on_manual_clock(|_| Ok(())).await;
    let app = &c.app;
    let before = app.admin_session("u1").await;
    let old_kid = kid_of(&before.access);

    let r = app.rotate("").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key: Value = r.json().await.unwrap();
    let new_kid = key["key"]["kid"].as_str().unwrap().to_owned();
    assert_eq!(key["key"]["state"], "next");

    let (kids, cache) = app.jwks().await;
    assert_eq!(kids, [old_kid.clone(), new_kid.clone()]);
    assert!(max_age(&cache) <= 15 * 60 / 2, "{cache}");
    let listed = app.key_list().await;
    assert_eq!(listed[0]["state"], "active");
    assert_eq!(listed[0]["retired_at"], key["key"]["activated_at"]);
    assert_eq!(listed[1]["state"], "next");

    // A second scheduled rotation waits for this one.
    let (status, code) = error_code(app.rotate("").await).await;
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "rotation_pending")
    );

    // Still signing with the old key until the prepublish time has passed.
    c.clock
        .advance(Duration::minutes(15) - Duration::seconds(2));
    assert_eq!(kid_of(&app.admin_session("u1").await.access), old_kid);
    c.clock.advance(Duration::seconds(2));
    let after = app.admin_session("u1").await;
    assert_eq!(kid_of(&after.access), new_kid);
    assert_eq!(app.whoami(&before.access).await.status(), StatusCode::OK);
    assert_eq!(app.whoami(&after.access).await.status(), StatusCode::OK);
    let listed = app.key_list().await;
    assert_eq!(listed[0]["state"], "retired");
    assert_eq!(listed[1]["state"], "active");
    let events = app.audit("kind=key_rotated").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["actor"], "admin");
    assert_eq!(events[0]["details"]["kid"], new_kid.as_str());
}

#[tokio::test]
async fn an_immediate_rotation_refuses_the_old_keys_tokens_at_once() {
    let c = on_manual_clock(|_| Ok(())).await;
    let app = &c.app;
    let before = app.admin_session("u1").await;
    let old_kid = kid_of(&before.access);
    let r = app.rotate("?immediate=true").await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let key: Value = r.json().await.unwrap();
    assert_eq!(key["key"]["state"], "active");
    let new_kid = key["key"]["kid"].as_str().unwrap().to_owned();
    assert_eq!(app.jwks().await.0, std::slice::from_ref(&new_kid));
    assert_eq!(
        app.whoami(&before.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let after = app.admin_session("u1").await;
    assert_eq!(kid_of(&after.access), new_kid);
    assert_ne!(new_kid, old_kid);
    // An immediate rotation is allowed while a scheduled one is pending.
    assert_eq!(app.rotate("").await.status(), StatusCode::CREATED);
    assert_eq!(
        app.rotate("?immediate=true").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.rotate("?immediate=maybe").await.status(),
        StatusCode::BAD_REQUEST
    );
}

/// A token already seen valid (so cached, and in `strict` its verified
/// claims kept) is refused at once after an immediate rotation revokes its
/// key, in every mode; a token of the new key keeps working.
#[tokio::test]
async fn an_immediate_rotation_refuses_the_old_keys_tokens_already_seen() {
    for mode in ["cached", "strict", "stateless"] {
        let c = on_manual_clock(|raw| raw.set("validation", mode)).await;
        let app = &c.app;
        let before = app.admin_session("u1").await;
        for _ in 0..2 {
            assert_eq!(
                app.whoami(&before.access).await.status(),
                StatusCode::OK,
                "{mode}"
            );
        }
        assert_eq!(
            app.rotate("?immediate=true").await.status(),
            StatusCode::CREATED
        );
        assert_eq!(
            app.whoami(&before.access).await.status(),
            StatusCode::UNAUTHORIZED,
            "{mode}: a token of the revoked key was still accepted"
        );
        let after = app.admin_session("u1").await;
        for _ in 0..2 {
            assert_eq!(
                app.whoami(&after.access).await.status(),
                StatusCode::OK,
                "{mode}"
            );
        }
    }
}

#[tokio::test]
async fn hs256_keys_answer_rotation_not_supported() {
    let app = App::start_with(|raw| {
        raw.set("jwt_alg", "HS256")?;
        raw.set("jwt_hs256_secret", "ab".repeat(32))
    })
    .await;
    for q in ["", "?immediate=true"] {
        let (status, code) = error_code(app.rotate(q).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::CONFLICT, "rotation_not_supported"),
            "{q}"
        );
    }
}

#[tokio::test]
async fn keys_rotate_by_themselves_on_the_clock() {
    let c = on_manual_clock(|raw| {
        raw.set("key_rotation", "1h")?;
        raw.set("key_prepublish", "10m")
    })
    .await;
    let app = &c.app;
    let (_, cache) = app.jwks().await;
    assert!(max_age(&cache) <= 300, "{cache}");
    let first = kid_of(&app.admin_session("u1").await.access);
    c.clock.advance(Duration::minutes(50));
    // The schedule runs every second; wait for it to publish the next key.
    let started = Instant::now();
    let next = loop {
        let keys = app.key_list().await;
        if let Some(k) = keys.iter().find(|k| k["state"] == "next") {
            break k.clone();
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(5),
            "no next key: {keys:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    };
    let next_kid = next["kid"].as_str().unwrap().to_owned();
    assert!(app.jwks().await.0.contains(&next_kid));
    assert_eq!(kid_of(&app.admin_session("u1").await.access), first);
    c.clock.advance(Duration::minutes(10));
    assert_eq!(kid_of(&app.admin_session("u1").await.access), next_kid);
    let events = app.audit("kind=key_rotated").await;
    assert_eq!(events[0]["actor"], "system");
}

#[tokio::test]
async fn a_scheduled_key_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
    let app = App {
        server,
        http: client(),
    };
    let r = app.rotate("").await;
    let key: Value = r.json().await.unwrap();
    app.server.stop().await;
    let server = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
    let app = App {
        server,
        http: client(),
    };
    let keys = app.key_list().await;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[1]["kid"], key["key"]["kid"]);
    assert_eq!(keys[1]["state"], "next");
}

#[tokio::test]
async fn a_rotation_period_not_longer_than_the_prepublish_time_is_refused() {
    let err = TestServer::start_with(|raw| {
        raw.set("key_rotation", "10m")?;
        raw.set("key_prepublish", "15m")
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("key_rotation"), "{err}");
}
