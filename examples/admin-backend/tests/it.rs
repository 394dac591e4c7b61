//! The example against a real session-server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

use session_server::testing::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_opens_checks_and_ends_a_session_through_the_admin_api() {
    let server = TestServer::start().await.unwrap();
    let admin = example_admin_backend::Admin {
        url: server.admin_url(),
        token: server.admin_token(),
        http: reqwest::Client::new(),
    };
    let opened = admin.open("ines", "example-test").await.unwrap();
    assert!(!opened.refresh_token.is_empty());
    assert!(admin.is_active(&opened.access_token).await.unwrap());
    admin.end(&opened.session_id).await.unwrap();
    assert!(!admin.is_active(&opened.access_token).await.unwrap());
    let wrong = example_admin_backend::Admin {
        token: "not-the-token".into(),
        ..admin
    };
    assert!(wrong.open("ines", "example-test").await.is_err());
}
