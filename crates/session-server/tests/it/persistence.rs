//! Nothing is lost across a restart, graceful or not.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use session_server::testing::TestServer;

use crate::harness::*;

#[tokio::test]
async fn a_graceful_restart_keeps_sessions_users_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
    let app = App {
        server,
        http: client(),
    };
    let t = app.bearer_session("alice").await;
    let events_before = app.audit("").await.len();
    app.server.stop().await;

    let server = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
    let app = App {
        server,
        http: client(),
    };
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::OK,
        "same keys, same session"
    );
    assert_eq!(
        app.refresh_bearer(&t.refresh).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login_bearer("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert!(app.audit("").await.len() >= events_before + 2);
}

async fn spawn(dir: &std::path::Path) -> ServerProcess {
    ServerProcess::spawn(dir, &[("SESSION_RATE_LIMIT_CREATE", "0")]).await
}

#[tokio::test]
async fn a_killed_server_loses_no_acknowledged_session_user_or_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn(dir.path()).await;
    let token = proc.admin_token();
    let http = client();
    let r = http
        .post(format!("{}/admin/v1/users", proc.admin))
        .bearer_auth(&token)
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Load: 8 writers open sessions until the kill; every 201 must survive.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (http, admin, token, stop) =
            (client(), proc.admin.clone(), token.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 400 {
                i += 1;
                let r = http
                    .post(format!("{admin}/admin/v1/sessions"))
                    .bearer_auth(&token)
                    .json(&json!({ "user_id": format!("user-{w}"), "user_agent": UA }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::CREATED => {
                        acked.push(Tokens::from_body(r.json().await.unwrap()));
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    proc.child.kill().unwrap(); // SIGKILL
    proc.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 10, "the load ran ({} sessions)", acked.len());

    let mut proc = spawn(dir.path()).await;
    let http = client();
    for t in &acked {
        let r = http
            .get(format!("{}/v1/session", proc.public))
            .bearer_auth(&t.access)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "session {} survived",
            t.session_id
        );
    }
    let r = http
        .post(format!("{}/v1/auth/login", proc.public))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the user survived");
    // Every page: the load may have created more sessions than one holds.
    let mut ids = std::collections::HashSet::new();
    let mut before = String::new();
    loop {
        let page: Value = http
            .get(format!(
                "{}/admin/v1/audit?kind=session_created&limit=1000&before={before}",
                proc.admin
            ))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["session_id"].as_str().map(str::to_owned)),
        );
        match page["next_before"].as_str() {
            Some(next) => before = next.to_owned(),
            None => break,
        }
    }
    for t in &acked {
        assert!(
            ids.contains(t.session_id.as_str()),
            "event of {} survived",
            t.session_id
        );
    }
    let _ = proc.child.kill();
    let _ = proc.child.wait();
    let _ = Method::GET;
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut proc = spawn(dir.path()).await;
    let token = proc.admin_token();
    let http = client();
    let r = http
        .post(format!("{}/admin/v1/users", proc.admin))
        .bearer_auth(&token)
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Logins hash a password (tens of milliseconds each): a burst of them
    // is still in flight when the signal lands.
    let mut logins = Vec::new();
    for _ in 0..8 {
        let (http, url) = (client(), format!("{}/v1/auth/login", proc.public));
        logins.push(tokio::spawn(async move {
            http.post(url)
                .header("X-Session-Transport", "bearer")
                .json(&json!({ "username": "alice", "password": PASSWORD }))
                .send()
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    proc.terminate();
    let mut finished = 0;
    for l in logins {
        match l.await.unwrap() {
            Ok(r) => {
                assert_eq!(
                    r.status(),
                    StatusCode::OK,
                    "an accepted request is answered in full"
                );
                finished += 1;
            }
            // Connections the closed listener never accepted are fine;
            // a request cut off mid-way is not.
            Err(e) => assert!(e.is_connect(), "in-flight request was cut: {e}"),
        }
    }
    assert!(finished > 0, "some requests were in flight at the signal");
    let exit = proc.child.wait().unwrap();
    assert!(exit.success(), "clean exit after SIGTERM: {exit}");
}
