//! An axum app outside the server's code, behind `SessionLayer`, on the
//! real Redis store: two instances sharing one Redis, real HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod dpop;
mod jwks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use reqwest::StatusCode;
use session_axum::{Authenticated, OptionalSession, SessionLayer, ValidationMode, Validator};
use session_core::dpop::Jkt;
use session_core::keys::{KeyRing, SigningAlgorithm, VerifyPolicy};
use session_core::service::{Issued, ServiceConfig, ServiceParts, SessionService};
use session_core::{Actor, ClientInfo, Clock as _, RevokeReason, SystemClock, TokenSecrets};
use session_store_redis::RedisStore;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// One instance of the app: its own store client and service on the
/// shared Redis, keys and secret shared as a fleet shares them.
struct Instance {
    service: Arc<SessionService>,
    validator: Arc<Validator>,
    url: String,
}

async fn me(auth: Authenticated) -> String {
    auth.claims.sub
}

async fn maybe(OptionalSession(auth): OptionalSession) -> String {
    auth.map_or_else(|| "anonymous".to_owned(), |a| a.claims.sub)
}

async fn start(redis: &str, prefix: &str, keys: &Arc<KeyRing>, mode: ValidationMode) -> Instance {
    // Connects on first use: an instance starts even while Redis is down.
    let store = Arc::new(RedisStore::open(redis, prefix).unwrap());
    let service = Arc::new(SessionService::new(ServiceParts {
        sessions: store.clone(),
        users: store.clone(),
        audit: Arc::new(session_core::TracingAuditLog),
        keys: keys.clone(),
        secrets: TokenSecrets::from_master(&[9; 32]),
        clock: Arc::new(SystemClock),
        config: ServiceConfig::default(),
    }));
    let layer = SessionLayer::with_feed(service.clone(), mode, store);
    let validator = layer.validator().unwrap().clone();
    let app = Router::new()
        .route("/me", get(me))
        .route("/change", post(me))
        .route("/maybe", get(maybe))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Instance {
        service,
        validator,
        url,
    }
}

fn ring() -> Arc<KeyRing> {
    let policy = VerifyPolicy {
        issuer: "app".into(),
        audience: "app".into(),
        leeway: time::Duration::seconds(30),
    };
    Arc::new(KeyRing::generate(SigningAlgorithm::EdDSA, policy, SystemClock.now(), None).unwrap())
}

fn prefix() -> String {
    format!("axum-test-{}:", std::process::id())
}

async fn open(i: &Instance, user: &str, client: &ClientInfo) -> Issued {
    i.service
        .open_session(user, None, client, Actor::Admin)
        .await
        .unwrap()
}

async fn status(req: reqwest::RequestBuilder) -> StatusCode {
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_on_one_instance_is_refused_by_the_other_within_the_feed_bound() {
    let keys = ring();
    let prefix = prefix() + "feed:";
    let a = start(&redis_url(), &prefix, &keys, ValidationMode::Cached).await;
    let b = start(&redis_url(), &prefix, &keys, ValidationMode::Cached).await;
    let http = reqwest::Client::new();
    // B validates from its cache once its feed is connected: the test is
    // about the feed, not about a store read on every request.
    let started = Instant::now();
    while b.validator.effective_mode() != ValidationMode::Cached {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B's feed never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut worst = Duration::ZERO;
    for round in 0..20 {
        let issued = open(&a, &format!("user-{round}"), &ClientInfo::default()).await;
        let token = issued.access_token.expose().to_owned();
        let on_b = || http.get(format!("{}/me", b.url)).bearer_auth(&token);
        assert_eq!(status(on_b()).await, StatusCode::OK, "B has it cached");
        let revoked = Instant::now();
        a.service
            .revoke(
                &issued.session.id,
                RevokeReason::Admin,
                Actor::Admin,
                &ClientInfo::default(),
            )
            .await
            .unwrap();
        loop {
            let s = status(on_b()).await;
            if s == StatusCode::UNAUTHORIZED {
                break;
            }
            assert_eq!(s, StatusCode::OK);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "B still accepts a session A revoked"
            );
        }
        worst = worst.max(revoked.elapsed());
    }
    eprintln!("revocation felt on B after at most {worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_needs_the_csrf_token_for_a_change_and_a_bound_token_is_no_bearer_token() {
    let keys = ring();
    let i = start(
        &redis_url(),
        &(prefix() + "csrf:"),
        &keys,
        ValidationMode::Strict,
    )
    .await;
    let http = reqwest::Client::new();
    let issued = open(&i, "carol", &ClientInfo::default()).await;
    let token = issued.access_token.expose().to_owned();
    let cookie = format!("__Host-session={token}");
    let host = i.url.trim_start_matches("http://").to_owned();

    assert_eq!(
        status(http.get(format!("{}/me", i.url)).header("cookie", &cookie)).await,
        StatusCode::OK,
        "a read with the cookie"
    );
    let change = || {
        http.post(format!("{}/change", i.url))
            .header("cookie", &cookie)
    };
    assert_eq!(
        status(change()).await,
        StatusCode::FORBIDDEN,
        "no CSRF token"
    );
    assert_eq!(
        status(change().header("x-csrf-token", "forged")).await,
        StatusCode::FORBIDDEN
    );
    let csrf = issued.csrf_token.expose().to_owned();
    assert_eq!(
        status(
            change()
                .header("x-csrf-token", &csrf)
                .header("origin", "https://evil.example")
        )
        .await,
        StatusCode::FORBIDDEN,
        "another origin"
    );
    assert_eq!(
        status(
            change()
                .header("x-csrf-token", &csrf)
                .header("origin", format!("http://{host}"))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        status(http.post(format!("{}/change", i.url)).bearer_auth(&token)).await,
        StatusCode::OK,
        "bearer requests need no CSRF token"
    );

    // No token: the optional extractor is anonymous, the required one 401
    // with the contract's body; a bad token is refused by both.
    let r = http.get(format!("{}/me", i.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
    let anon = http.get(format!("{}/maybe", i.url)).send().await.unwrap();
    assert_eq!(anon.text().await.unwrap(), "anonymous");
    for bad in ["x", &token[..token.len() - 2]] {
        assert_eq!(
            status(http.get(format!("{}/maybe", i.url)).bearer_auth(bad)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let signed_in = http
        .get(format!("{}/maybe", i.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.text().await.unwrap(), "carol");

    // A DPoP-bound session's token is refused as a bearer token, and any
    // other scheme is refused.
    let bound = ClientInfo {
        dpop_jkt: Jkt::parse("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"),
        ..ClientInfo::default()
    };
    assert!(bound.dpop_jkt.is_some());
    let bound = open(&i, "dave", &bound).await;
    let bound_token = bound.access_token.expose().to_owned();
    assert_eq!(
        status(http.get(format!("{}/me", i.url)).bearer_auth(&bound_token)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        status(
            http.get(format!("{}/me", i.url))
                .header("authorization", format!("DPoP {bound_token}"))
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_store_cannot_answer_the_request_is_refused_not_waved_through() {
    // Nothing listens on this port: every store read fails.
    let keys = ring();
    let i = start(
        "redis://127.0.0.1:1",
        &(prefix() + "down:"),
        &keys,
        ValidationMode::Strict,
    )
    .await;
    let signer = start(
        &redis_url(),
        &(prefix() + "down:"),
        &keys,
        ValidationMode::Strict,
    )
    .await;
    let issued = open(&signer, "erin", &ClientInfo::default()).await;
    let r = reqwest::Client::new()
        .get(format!("{}/me", i.url))
        .bearer_auth(issued.access_token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "store_unavailable");
}
