//! The admin listener.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_token() {
    let app = App::start().await;
    for (method, path) in [
        (Method::GET, "/admin/v1/keys"),
        (Method::POST, "/admin/v1/sessions"),
        (Method::GET, "/admin/v1/audit"),
        (Method::GET, "/metrics"),
        (Method::GET, "/admin/v1/openapi.json"),
        (Method::DELETE, "/admin/v1/users/alice/sessions"),
    ] {
        let r = app
            .http
            .request(method.clone(), app.admin(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::UNAUTHORIZED, "unauthorized".into()),
            "{path}"
        );
        let r = app
            .http
            .request(method.clone(), app.admin(path))
            .bearer_auth("sat_wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    assert_eq!(
        app.http
            .get(app.admin("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn admin_routes_are_absent_from_the_public_listener() {
    let app = App::start().await;
    for path in [
        "/admin/v1/keys",
        "/metrics",
        "/admin/v1/openapi.json",
        "/admin/v1/audit",
    ] {
        let r = app
            .http
            .get(app.public(path))
            .bearer_auth(app.server.admin_token())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn the_admin_token_is_generated_into_the_data_dir_with_mode_0600() {
    use std::os::unix::fs::PermissionsExt as _;
    let app = App::start().await;
    let path = app.server.data_dir().join("admin-token");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(path).unwrap().trim(),
        app.server.admin_token()
    );
}

#[tokio::test]
async fn a_trusted_backend_opens_a_session_with_metadata() {
    let app = App::start().await;
    let r = app
        .admin_req(Method::POST, "/admin/v1/sessions")
        .json(&json!({ "user_id": "u-42", "metadata": { "tenant": "acme" }, "ip": "203.0.113.5", "user_agent": UA }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let t = Tokens::from_body(r.json().await.unwrap());
    assert_eq!(t.body["token_type"], "Bearer");
    let me: Value = app.whoami(&t.access).await.json().await.unwrap();
    assert_eq!(me["user_id"], "u-42");
    assert_eq!(me["metadata"]["tenant"], "acme");
    let s = app.admin_view(&t.session_id).await;
    assert_eq!(s["ip"], "203.0.113.5");
    assert_eq!(s["active"], true);
    let created = app.audit(&format!("session_id={}", t.session_id)).await;
    assert_eq!(created[0]["kind"], "session_created");
    assert_eq!(created[0]["actor"], "admin");
}

#[tokio::test]
async fn session_creation_refuses_bad_fields_with_422() {
    let app = App::start().await;
    for body in [
        json!({ "user_id": "" }),
        json!({ "user_id": "a".repeat(300) }),
        json!({ "user_id": "u", "metadata": [1, 2] }),
        json!({ "user_id": "u", "ip": "not-an-ip" }),
        json!({ "user_id": 5 }),
    ] {
        let r = app
            .admin_req(Method::POST, "/admin/v1/sessions")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
}

#[tokio::test]
async fn introspection_says_active_only_for_live_tokens() {
    let app = App::start_with(|raw| raw.set("refresh_grace", "0")).await;
    let t = app.admin_session("u1").await;
    let check = |token: String| {
        let app = &app;
        async move {
            let r = app
                .admin_req(Method::POST, "/admin/v1/introspect")
                .json(&json!({ "token": token }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    let a = check(t.access.clone()).await;
    assert_eq!(a["active"], true);
    assert_eq!(a["sub"], "u1");
    assert_eq!(a["token_type"], "access_token");
    let r = check(t.refresh.clone()).await;
    assert_eq!(r["active"], true);
    assert_eq!(r["token_type"], "refresh_token");
    assert_eq!(check("garbage".into()).await, json!({ "active": false }));
    let next: Value = app.refresh_bearer(&t.refresh).await.json().await.unwrap();
    assert_eq!(
        check(t.refresh.clone()).await["active"],
        false,
        "rotated away"
    );
    assert_eq!(
        app.admin_revoke(&t.session_id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        check(next["access_token"].as_str().unwrap().into()).await["active"],
        false
    );
    assert_eq!(check(t.access.clone()).await["active"], false);
}

#[tokio::test]
async fn admin_reads_and_revokes_one_session() {
    let app = App::start().await;
    let t = app.admin_session("u1").await;
    app.admin_view(&t.session_id).await;
    assert_eq!(
        app.admin_revoke(&t.session_id).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ev = app
        .audit(&format!("session_id={}&kind=session_revoked", t.session_id))
        .await;
    assert_eq!(ev[0]["reason"], "admin");
    assert_eq!(ev[0]["actor"], "admin");
    for id in [
        "AAAAAAAAAAAAAAAAAAAAAA",
        "nope",
        "'; DROP TABLE sessions;--",
    ] {
        let r = app
            .admin_req(
                Method::GET,
                &format!("/admin/v1/sessions/{}", urlencode(id)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id}");
        let r = app
            .admin_req(
                Method::DELETE,
                &format!("/admin/v1/sessions/{}", urlencode(id)),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn revoking_all_of_a_user_spares_other_users() {
    let app = App::start().await;
    let a1 = app.admin_session("alice").await;
    let a2 = app.admin_session("alice").await;
    let bob = app.admin_session("bob").await;
    let r = app
        .admin_req(Method::GET, "/admin/v1/users/alice/sessions")
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 2);
    let r = app
        .admin_req(Method::DELETE, "/admin/v1/users/alice/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "revoked": 2 }));
    assert_eq!(
        app.whoami(&a1.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.whoami(&a2.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.whoami(&bob.access).await.status(), StatusCode::OK);
    let ev = app.audit("user_id=alice&kind=session_revoked").await;
    assert!(ev.iter().all(|e| e["reason"] == "revoke_all"));
}

#[tokio::test]
async fn a_password_change_revokes_every_session_of_that_user() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    app.login_bearer("alice", PASSWORD).await;
    let r = app
        .admin_req(Method::POST, "/admin/v1/users/alice/password")
        .json(&json!({ "password": "a brand new password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({ "revoked": 2 }));
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login_bearer("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login_bearer("alice", "a brand new password")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.audit("kind=password_changed").await.len(), 1);
    let r = app
        .admin_req(Method::POST, "/admin/v1/users/nobody/password")
        .json(&json!({ "password": "a brand new password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn users_are_added_once_and_removed() {
    let app = App::start().await;
    app.add_user("alice").await;
    let r = app
        .admin_req(Method::POST, "/admin/v1/users")
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        app.admin_req(Method::DELETE, "/admin/v1/users/alice")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.admin_req(Method::DELETE, "/admin/v1/users/alice")
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.login_bearer("alice", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_audit_query_filters_and_pages_newest_first() {
    let app = App::start().await;
    for _ in 0..5 {
        app.admin_session("alice").await;
    }
    app.admin_session("bob").await;
    let all = app.audit("user_id=alice&kind=session_created").await;
    assert_eq!(all.len(), 5);
    let ats: Vec<&str> = all.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let mut sorted = ats.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ats, sorted, "newest first");
    for e in &all {
        for f in [
            "id",
            "at",
            "kind",
            "session_id",
            "user_id",
            "actor",
            "ip",
            "user_agent",
            "reason",
            "details",
        ] {
            assert!(e.get(f).is_some(), "event lacks {f}");
        }
    }
    let page1 = app.audit("user_id=alice&limit=2").await;
    assert_eq!(page1.len(), 2);
    let before = page1[1]["id"].as_str().unwrap();
    let page2 = app
        .audit(&format!("user_id=alice&limit=2&before={before}"))
        .await;
    assert_eq!(page2.len(), 2);
    assert_eq!(page2[0]["id"], all[2]["id"]);
    for bad in [
        "kind=session_deleted",
        "since=yesterday",
        "limit=0",
        "limit=99999",
        "color=red",
    ] {
        let r = app
            .admin_req(Method::GET, &format!("/admin/v1/audit?{bad}"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{bad}: {}", r.status());
    }
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_publishes_the_new_key() {
    let app = App::start().await;
    let t = app.admin_session("u1").await;
    let r = app
        .admin_req(Method::POST, "/admin/v1/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let keys: Value = app
        .admin_req(Method::GET, "/admin/v1/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["state"] == "active").count(), 1);
    let jwks: Value = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::OK,
        "old key still verifies"
    );
    let fresh = app.admin_session("u1").await;
    assert_eq!(app.whoami(&fresh.access).await.status(), StatusCode::OK);
    assert_eq!(app.audit("kind=key_rotated").await.len(), 1);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = App::start().await;
    app.admin_session("u1").await;
    let r = app.admin_req(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(text.contains("session_sessions_created_total"), "{text}");
    assert!(text.contains("session_http_requests_total"));
}

#[tokio::test]
async fn the_openapi_document_is_3_1_and_names_both_listeners_routes() {
    let app = App::start().await;
    let doc: Value = app
        .admin_req(Method::GET, "/admin/v1/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/session",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/auth/verify",
        "/.well-known/jwks.json",
        "/admin/v1/sessions",
        "/admin/v1/introspect",
        "/admin/v1/audit",
        "/admin/v1/keys/rotate",
    ] {
        assert!(paths.contains_key(p), "openapi lacks {p}");
    }
}

#[tokio::test]
async fn an_operators_note_on_a_revocation_is_kept_in_the_audit_details() {
    let app = App::start().await;
    let t = app.admin_session("u1").await;
    let r = app
        .admin_req(
            Method::DELETE,
            &format!("/admin/v1/sessions/{}?reason=stolen%20laptop", t.session_id),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let ev = app
        .audit(&format!("session_id={}&kind=session_revoked", t.session_id))
        .await;
    assert_eq!(ev[0]["reason"], "admin");
    assert_eq!(ev[0]["details"]["note"], "stolen laptop");
    let r = app
        .admin_req(Method::DELETE, "/admin/v1/users/u1/sessions?color=red")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn password_length_is_the_operators_policy_within_sane_bounds() {
    let app = App::start().await;
    let add = |name: &'static str, password: String| {
        app.admin_req(Method::POST, "/admin/v1/users")
            .json(&json!({ "username": name, "password": password }))
            .send()
    };
    assert_eq!(
        add("short", "pw".into()).await.unwrap().status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.login_bearer("short", "pw").await.status(),
        StatusCode::OK
    );
    for bad in [String::new(), "x".repeat(1025)] {
        let r = add("bad", bad).await.unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field".into())
        );
    }
}
