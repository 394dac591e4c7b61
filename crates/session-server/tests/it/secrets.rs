//! No token or password ever appears where it must not: logs, the
//! database files, or any response but the one that issues it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn tokens_and_passwords_appear_in_no_log_no_file_and_no_other_response() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(
        &dir.path().join("data"),
        &[
            ("RUST_LOG", "trace"),
            // Without a grace window the replay below is a reuse, not a re-issue.
            ("SESSION_REFRESH_GRACE", "0"),
        ],
    )
    .await;
    let (public, admin) = (server.public.clone(), server.admin.clone());
    let http = client();
    let admin_token = server.admin_token();
    let password = "Tr0ub4dor&3-unique-password";
    let mut secrets: Vec<String> = vec![password.to_owned()];
    let mut other_bodies = Vec::new();

    let r = http
        .post(format!("{admin}/admin/v1/users"))
        .bearer_auth(&admin_token)
        .json(&json!({ "username": "carol", "password": password }))
        .send()
        .await
        .unwrap();
    other_bodies.push(r.text().await.unwrap());
    let login: Value = http
        .post(format!("{public}/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "username": "carol", "password": password }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = Tokens::from_body(login);
    secrets.extend([t.access.clone(), t.refresh.clone(), t.csrf.clone()]);
    let next: Value = http
        .post(format!("{public}/v1/auth/refresh"))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "refresh_token": t.refresh }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t2 = Tokens::from_body(next);
    secrets.extend([t2.access.clone(), t2.refresh.clone()]);
    // A wrong password and a reused token, so failure paths log too.
    let r = http
        .post(format!("{public}/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "username": "carol", "password": "wrong-Tr0ub4dor-password" }))
        .send()
        .await
        .unwrap();
    other_bodies.push(r.text().await.unwrap());
    secrets.push("wrong-Tr0ub4dor-password".into());
    for url in [
        format!("{public}/v1/session"),
        format!("{public}/v1/sessions"),
        format!("{public}/v1/auth/verify"),
    ] {
        let r = http.get(url).bearer_auth(&t2.access).send().await.unwrap();
        assert!(r.status().is_success());
        other_bodies.push(r.text().await.unwrap());
    }
    for path in [
        "/admin/v1/audit?limit=1000",
        "/metrics",
        &format!("/admin/v1/sessions/{}", t.session_id),
    ] {
        let r = http
            .get(format!("{admin}{path}"))
            .bearer_auth(&admin_token)
            .send()
            .await
            .unwrap();
        other_bodies.push(r.text().await.unwrap());
    }
    let r = http
        .post(format!("{public}/v1/auth/refresh"))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "refresh_token": t.refresh }))
        .send()
        .await
        .unwrap();
    other_bodies.push(r.text().await.unwrap());
    let r = http
        .get(format!("{public}/v1/session"))
        .bearer_auth(&t2.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the reuse revoked the family"
    );
    other_bodies.push(r.text().await.unwrap());

    let log = server.log();
    drop(server);
    assert!(log.contains("request"), "the log was captured");
    secrets.push(admin_token.clone());
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret leaked into the log");
        for body in &other_bodies {
            assert!(
                !body.contains(s.as_str()),
                "a secret leaked into a response"
            );
        }
    }
    for entry in std::fs::read_dir(dir.path().join("data")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "admin-token" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for s in &secrets {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret is stored in {name}"
            );
        }
    }
}
