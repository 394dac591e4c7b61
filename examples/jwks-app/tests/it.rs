//! The example against a real session-server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use reqwest::StatusCode;
use serde_json::{Value, json};
use session_server::testing::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_greets_the_user_of_a_token_the_server_issued_and_refuses_others() {
    let server = TestServer::start().await.unwrap();
    let app = example_jwks_app::app(&format!("{}/.well-known/jwks.json", server.public_url()))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let session: Value = http
        .post(format!("{}/admin/v1/sessions", server.admin_url()))
        .bearer_auth(server.admin_token())
        .json(&json!({ "user_id": "hedy" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .get(format!("{url}/hello"))
        .bearer_auth(session["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "hello, hedy");
    let r = http.get(format!("{url}/hello")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .get(format!("{url}/hello"))
        .bearer_auth("not.a.token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
