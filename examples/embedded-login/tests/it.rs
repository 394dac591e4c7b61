//! The example over real HTTP on the real Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_refresh_and_logout_guard_the_apps_own_route() {
    let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("example-{}:", std::process::id());
    let (service, store) = example_embedded_login::service(&redis, &prefix, &[3; 32])
        .await
        .unwrap();
    service
        .create_user("ada", "correct horse battery staple")
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, example_embedded_login::app(service, store)).await
    });
    let http = reqwest::Client::new();

    let bad = http
        .post(format!("{url}/login"))
        .json(&json!({ "username": "ada", "password": "wrong" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let login: Value = http
        .post(format!("{url}/login"))
        .json(&json!({ "username": "ada", "password": "correct horse battery staple" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me = |token: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.get(format!("{url}/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let r = me(login["access_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "ada");

    let refreshed: Value = http
        .post(format!("{url}/refresh"))
        .json(&json!({ "refresh_token": login["refresh_token"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(me(access.clone()).await.status(), StatusCode::OK);

    let out = http
        .post(format!("{url}/logout"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    assert_eq!(me(access).await.status(), StatusCode::UNAUTHORIZED);
    let again = http
        .post(format!("{url}/refresh"))
        .json(&json!({ "refresh_token": refreshed["refresh_token"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}
