//! An app that trusts a running session-server's JWKS only: the real
//! server on port 0, the app on another, real HTTP between all three.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use reqwest::StatusCode;
use serde_json::{Value, json};
use session_axum::{Authenticated, JwksVerifier, SessionLayer};
use session_core::keys::{SigningAlgorithm, VerifyPolicy};
use session_server::testing::TestServer;

async fn me(auth: Authenticated) -> String {
    auth.claims.sub
}

fn policy() -> VerifyPolicy {
    VerifyPolicy {
        issuer: "session-server".into(),
        audience: "session-server".into(),
        leeway: time::Duration::seconds(30),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn open_session(http: &reqwest::Client, server: &TestServer, user: &str) -> String {
    let body: Value = http
        .post(format!("{}/admin/v1/sessions", server.admin_url()))
        .bearer_auth(server.admin_token())
        .json(&json!({ "user_id": user }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_trusting_only_the_jwks_verifies_the_servers_tokens_across_an_immediate_rotation() {
    let server = TestServer::start().await.unwrap();
    let http = reqwest::Client::new();
    let jwks_url = format!("{}/.well-known/jwks.json", server.public_url());
    let verifier = JwksVerifier::fetch(&jwks_url, SigningAlgorithm::EdDSA, policy())
        .await
        .unwrap();
    assert_eq!(verifier.kids().len(), 1);
    let app = serve(
        Router::new()
            .route("/me", get(me))
            .route("/change", post(me))
            .layer(SessionLayer::jwks(verifier.clone())),
    )
    .await;
    let get_me = |token: &str| http.get(format!("{app}/me")).bearer_auth(token).send();

    let token = open_session(&http, &server, "frank").await;
    let r = get_me(&token).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "frank");

    // A token signed by another issuer's key, and a tampered one.
    let other = TestServer::start().await.unwrap();
    let foreign = open_session(&http, &other, "frank").await;
    assert_eq!(
        get_me(&foreign).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let mut tampered = token.clone();
    tampered.insert(tampered.find('.').unwrap() + 3, 'A');
    assert_eq!(
        get_me(&tampered).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // An immediate rotation: the next token names a key the app has not
    // loaded yet; it fetches the JWKS again (after the cooldown since the
    // foreign token's fetch) and accepts it, and refuses the old key's
    // tokens, which the server took out of its JWKS.
    let r = http
        .post(format!(
            "{}/admin/v1/keys/rotate?immediate=true",
            server.admin_url()
        ))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let rotated = open_session(&http, &server, "grace").await;
    tokio::time::sleep(session_axum::jwks::REFETCH_COOLDOWN + Duration::from_millis(100)).await;
    let r = get_me(&rotated).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "grace");
    assert_eq!(
        get_me(&token).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "the compromised key is gone from the JWKS and from the app"
    );

    // The cookie cannot make a change here: there is no service to check
    // the CSRF token with.
    let r = http
        .post(format!("{app}/change"))
        .header("cookie", format!("__Host-session={rotated}"))
        .header("x-csrf-token", "anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The issuer going away keeps the keys already loaded.
    server.stop().await;
    assert!(verifier.refresh().await.is_err());
    assert_eq!(get_me(&rotated).await.unwrap().status(), StatusCode::OK);
}
