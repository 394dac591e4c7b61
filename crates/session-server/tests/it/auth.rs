//! The public listener, row by row of the contract.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

#[tokio::test]
async fn bearer_login_returns_every_contract_field() {
    let app = App::start().await;
    app.add_user("alice").await;
    let r = app.login_bearer("alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(
        set_cookies(&r).is_empty(),
        "bearer transport sets no cookies"
    );
    let body: Value = r.json().await.unwrap();
    for field in [
        "session_id",
        "user_id",
        "csrf_token",
        "access_expires_at",
        "expires_at",
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
    ] {
        assert!(body.get(field).is_some(), "missing {field} in {body}");
    }
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["refresh_token"].as_str().unwrap().starts_with("srt_"));
    let exp = body["expires_in"].as_i64().unwrap();
    assert!(
        (890..=900).contains(&exp),
        "15 minutes by default, got {exp}"
    );
    time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
}

#[tokio::test]
async fn access_tokens_are_eddsa_at_jwt_with_every_claim() {
    use base64::Engine as _;
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let mut parts = t.access.split('.');
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value =
        serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims: Value =
        serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    for c in ["iss", "aud", "sub", "sid", "iat", "exp", "jti"] {
        assert!(claims.get(c).is_some(), "missing claim {c}");
    }
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["sid"], t.session_id.as_str());
    // The JWKS publishes the key that signed it.
    let jwks: Value = app
        .http
        .get(app.public("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"] && k["kty"] == "OKP")
    );
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_answer() {
    let app = App::start().await;
    app.add_user("alice").await;
    let wrong = app.login_bearer("alice", "nope nope nope").await;
    let unknown = app.login_bearer("mallory", PASSWORD).await;
    assert_eq!(
        error_code(wrong).await,
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    assert_eq!(
        error_code(unknown).await,
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    let failed = app.audit("kind=login_failed").await;
    assert_eq!(failed.len(), 2);
}

#[tokio::test]
async fn every_login_opens_a_new_session() {
    let app = App::start().await;
    app.add_user("alice").await;
    let a: Value = app
        .login_bearer("alice", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let b: Value = app
        .login_bearer("alice", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(a["session_id"], b["session_id"]);
}

#[tokio::test]
async fn whoami_describes_the_session() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let r = app.whoami(&t.access).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["session_id"], t.session_id.as_str());
    assert_eq!(body["user_id"], "alice");
    for f in ["created_at", "last_seen_at", "expires_at", "metadata"] {
        assert!(body.get(f).is_some(), "missing {f}");
    }
}

#[tokio::test]
async fn whoami_without_a_token_is_401_with_www_authenticate() {
    let app = App::start().await;
    let r = app
        .http
        .get(app.public("/v1/session"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
}

#[tokio::test]
async fn a_token_in_the_query_string_is_ignored() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    for q in ["access_token", "token", "session"] {
        let r = app
            .http
            .get(format!("{}?{q}={}", app.public("/v1/session"), t.access))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_dies_after_grace() {
    let app = App::start_with(|raw| raw.set("refresh_grace", "0")).await;
    let t = app.bearer_session("alice").await;
    let r = app.refresh_bearer(&t.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let next = Tokens::from_body(r.json().await.unwrap());
    assert_ne!(next.refresh, t.refresh);
    assert_ne!(next.access, t.access);
    assert_eq!(next.session_id, t.session_id);
    assert_eq!(app.whoami(&next.access).await.status(), StatusCode::OK);
    // Presenting the rotated-away token is a reuse: the family dies.
    let again = app.refresh_bearer(&t.refresh).await;
    assert_eq!(
        error_code(again).await,
        (StatusCode::UNAUTHORIZED, "refresh_token_reused".into())
    );
    assert_eq!(
        app.whoami(&next.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let live = app.refresh_bearer(&next.refresh).await;
    assert_eq!(
        error_code(live).await,
        (StatusCode::UNAUTHORIZED, "session_revoked".into())
    );
    let kinds: Vec<String> = app
        .audit(&format!("session_id={}", t.session_id))
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains(&"refresh_reuse_detected".to_owned()),
        "{kinds:?}"
    );
    let revoked = app
        .audit(&format!("session_id={}&kind=session_revoked", t.session_id))
        .await;
    assert_eq!(revoked[0]["reason"], "reuse_detected");
}

#[tokio::test]
async fn a_duplicate_refresh_inside_grace_gets_the_same_successor() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let a: Value = app.refresh_bearer(&t.refresh).await.json().await.unwrap();
    let r = app.refresh_bearer(&t.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let b: Value = r.json().await.unwrap();
    assert_eq!(
        a["refresh_token"], b["refresh_token"],
        "the very same successor"
    );
    // ...and the session lives on.
    let next = app
        .refresh_bearer(a["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(next.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_token_two_generations_back_is_a_reuse_even_inside_grace() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let g1: Value = app.refresh_bearer(&t.refresh).await.json().await.unwrap();
    let g2 = app
        .refresh_bearer(g1["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(g2.status(), StatusCode::OK);
    let r = app.refresh_bearer(&t.refresh).await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "refresh_token_reused".into())
    );
}

#[tokio::test]
async fn twenty_concurrent_refreshes_of_one_token_leave_one_live_successor() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = client();
        let url = app.public("/v1/auth/refresh");
        let refresh = t.refresh.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("X-Session-Transport", "bearer")
                .json(&json!({ "refresh_token": refresh }))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut successors = std::collections::HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        if status == StatusCode::OK {
            successors.insert(body["refresh_token"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        successors.len(),
        1,
        "one successor, however many won: {successors:?}"
    );
    let only = successors.into_iter().next().unwrap();
    assert_eq!(app.refresh_bearer(&only).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_random_refresh_token_logs_nobody_out() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    // Same session id, forged rest.
    let forged = format!("{}{}", &t.refresh[..30], "A".repeat(t.refresh.len() - 30));
    for bad in [forged.as_str(), "srt_nope", "", &"x".repeat(5000)] {
        let r = app.refresh_bearer(bad).await;
        assert_eq!(error_code(r).await.1, "invalid_refresh_token", "{bad:.20}");
    }
    assert_eq!(app.whoami(&t.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.refresh_bearer(&t.refresh).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_changed_user_agent_on_refresh_revokes_the_session() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let r = app
        .http
        .post(app.public("/v1/auth/refresh"))
        .header("X-Session-Transport", "bearer")
        .header("user-agent", "EvilBot/6.6")
        .json(&json!({ "refresh_token": t.refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "session_revoked".into())
    );
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let anomalies = app
        .audit(&format!(
            "session_id={}&kind=anomaly_detected",
            t.session_id
        ))
        .await;
    assert_eq!(anomalies[0]["details"]["signal"], "user_agent");
    assert_eq!(anomalies[0]["details"]["new"], "EvilBot/6.6");
    let revoked = app
        .audit(&format!("session_id={}&kind=session_revoked", t.session_id))
        .await;
    assert_eq!(revoked[0]["reason"], "anomaly");
}

#[tokio::test]
async fn logout_revokes_at_once_and_clears_cookies() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let r = app.logout_bearer(&t.access).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["clear-site-data"], "\"cookies\"");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(
        app.whoami(&t.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let revoked = app
        .audit(&format!("session_id={}&kind=session_revoked", t.session_id))
        .await;
    assert_eq!(revoked[0]["reason"], "logout");
    assert_eq!(revoked[0]["actor"], "user");
    assert_eq!(
        app.logout_bearer(&t.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn cookie_login_sets_the_contract_cookies() {
    let app = App::start().await;
    app.add_user("alice").await;
    let r = app
        .http
        .post(app.public("/v1/auth/login"))
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookies = set_cookies(&r);
    let access = cookies
        .iter()
        .find(|c| c.starts_with("__Host-session="))
        .unwrap();
    let refresh = cookies
        .iter()
        .find(|c| c.starts_with("__Secure-refresh="))
        .unwrap();
    for attr in ["Path=/;", "HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(access.contains(attr), "{access} lacks {attr}");
    }
    for attr in ["Path=/v1/auth;", "HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(refresh.contains(attr), "{refresh} lacks {attr}");
    }
    let max_age: i64 = refresh
        .split("Max-Age=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (14 * 86_400 - 5..=14 * 86_400).contains(&max_age),
        "refresh cookie lives as long as the session"
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body.get("access_token").is_none(),
        "cookie transport keeps tokens out of the body"
    );
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn cookie_refresh_needs_the_csrf_header() {
    let app = App::start().await;
    let mut b = app.browser_login("alice").await;
    let r = app
        .browser_post(&b, "/v1/auth/refresh")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let r = app
        .browser_post(&b, "/v1/auth/refresh")
        .header("X-CSRF-Token", "wrong.token")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let r = app
        .browser_post(&b, "/v1/auth/refresh")
        .header("X-CSRF-Token", b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookies = set_cookies(&r);
    let body: Value = r.json().await.unwrap();
    let old_csrf = b.csrf.clone();
    b.absorb(&cookies, &body);
    assert_ne!(b.csrf, old_csrf, "a new CSRF token with every refresh");
}

#[tokio::test]
async fn cross_site_and_foreign_origin_requests_are_refused() {
    let app = App::start_with(|raw| raw.set("allowed_origins", "https://app.example")).await;
    let b = app.browser_login("alice").await;
    let csrf = b.csrf.clone().unwrap();
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", &csrf)
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", &csrf)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    // Login gets the same origin checks.
    let r = app
        .http
        .post(app.public("/v1/auth/login"))
        .header("Origin", "https://evil.example")
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", &csrf)
        .header("Origin", "https://app.example")
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn cookie_logout_without_csrf_is_refused_and_keeps_the_session() {
    let app = App::start().await;
    let b = app.browser_login("alice").await;
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let r = app
        .http
        .get(app.public("/v1/session"))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn safe_methods_never_change_state() {
    let app = App::start().await;
    for path in ["/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout"] {
        let r = app.http.get(app.public(path)).send().await.unwrap();
        assert_eq!(
            error_code(r).await.0,
            StatusCode::METHOD_NOT_ALLOWED,
            "{path}"
        );
        let r = app.http.head(app.public(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "HEAD {path}");
    }
}

#[tokio::test]
async fn users_list_and_revoke_their_own_sessions_only() {
    let app = App::start().await;
    let a1 = app.bearer_session("alice").await;
    let a2: Value = app
        .login_bearer("alice", PASSWORD)
        .await
        .json()
        .await
        .unwrap();
    let bob = app.bearer_session("bob").await;
    let r = app
        .http
        .get(app.public("/v1/sessions"))
        .bearer_auth(&a1.access)
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["session_id"], a1.session_id.as_str());
    for f in ["created_at", "last_seen_at", "ip", "user_agent"] {
        assert!(sessions[0].get(f).is_some(), "missing {f}");
    }
    // Bob's session is not Alice's to revoke.
    let r = app
        .http
        .delete(app.public(&format!("/v1/sessions/{}", bob.session_id)))
        .bearer_auth(&a1.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    assert_eq!(app.whoami(&bob.access).await.status(), StatusCode::OK);
    let r = app
        .http
        .delete(app.public(&format!(
            "/v1/sessions/{}",
            a2["session_id"].as_str().unwrap()
        )))
        .bearer_auth(&a1.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.whoami(a2["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let r = app
        .http
        .delete(app.public("/v1/sessions/unknown"))
        .bearer_auth(&a1.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let ev = app
        .audit(&format!(
            "session_id={}&kind=session_revoked",
            a2["session_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(ev[0]["reason"], "user_revoked");
}

#[tokio::test]
async fn forward_auth_names_the_user_and_session() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let r = app
        .http
        .get(app.public("/v1/auth/verify"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-session-user"], "alice");
    assert_eq!(r.headers()["x-session-id"], t.session_id.as_str());
    let r = app
        .http
        .get(app.public("/v1/auth/verify"))
        .header("cookie", format!("__Host-session={}", t.access))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "cookies work for forward-auth too"
    );
    let r = app
        .http
        .get(app.public("/v1/auth/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    app.logout_bearer(&t.access).await;
    let r = app
        .http
        .get(app.public("/v1/auth/verify"))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "revocation is felt at once"
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = App::start().await;
    for url in [
        app.public("/healthz"),
        app.public("/nope"),
        app.admin("/healthz"),
        app.public("/v1/session"),
    ] {
        let r = app.http.get(&url).send().await.unwrap();
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{url}");
        assert!(r.headers().contains_key("referrer-policy"), "{url}");
    }
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = App::start().await;
    assert_eq!(
        app.http
            .get(app.public("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let r = app.http.get(app.public("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["store"], "sqlite");
    assert_eq!(body["validation_mode"], "cached");
}

#[tokio::test]
async fn the_session_limit_revokes_the_oldest() {
    let app = App::start_with(|raw| raw.set("max_sessions_per_user", "2")).await;
    let first = app.bearer_session("alice").await;
    app.login_bearer("alice", PASSWORD).await;
    app.login_bearer("alice", PASSWORD).await;
    assert_eq!(
        app.whoami(&first.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ev = app
        .audit(&format!(
            "session_id={}&kind=session_revoked",
            first.session_id
        ))
        .await;
    assert_eq!(ev[0]["reason"], "session_limit");
}

#[tokio::test]
async fn every_validation_mode_refuses_a_revoked_session_except_stateless() {
    for (mode, refused) in [("strict", true), ("cached", true), ("stateless", false)] {
        let app = App::start_with(|raw| raw.set("validation", mode)).await;
        let t = app.bearer_session("alice").await;
        let verify = || {
            app.http
                .get(app.public("/v1/auth/verify"))
                .bearer_auth(&t.access)
                .send()
        };
        assert_eq!(verify().await.unwrap().status(), StatusCode::OK, "{mode}");
        let r = app
            .admin_req(
                reqwest::Method::DELETE,
                &format!("/admin/v1/sessions/{}", t.session_id),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let status = verify().await.unwrap().status();
        assert_eq!(
            status == StatusCode::UNAUTHORIZED,
            refused,
            "{mode}: {status}"
        );
    }
}

#[tokio::test]
async fn es256_and_hs256_are_selectable_and_hmac_keys_stay_out_of_the_jwks() {
    use base64::Engine as _;
    for (alg, kty) in [("ES256", Some("EC")), ("HS256", None)] {
        let app = App::start_with(|raw| {
            raw.set("jwt_alg", alg)?;
            raw.set("jwt_hs256_secret", "ab".repeat(32))
        })
        .await;
        let t = app.admin_session("u1").await;
        let header: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t.access.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], alg);
        assert_eq!(
            app.whoami(&t.access).await.status(),
            StatusCode::OK,
            "{alg}"
        );
        let jwks: Value = app
            .http
            .get(app.public("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        match kty {
            Some(kty) => assert!(keys.iter().all(|k| k["kty"] == kty && k.get("d").is_none())),
            None => assert!(keys.is_empty(), "HMAC keys are never published"),
        }
    }
}

#[tokio::test]
async fn logout_with_a_rotated_away_refresh_cookie_is_a_reuse_that_revokes_the_family() {
    let app = App::start_with(|raw| raw.set("refresh_grace", "0")).await;
    let mut b = app.browser_login("rita").await;
    let stolen = Browser {
        access: None,
        ..b.clone()
    };
    let r = app
        .browser_post(&b, "/v1/auth/refresh")
        .header("x-csrf-token", b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookies = set_cookies(&r);
    let body: Value = r.json().await.unwrap();
    b.absorb(&cookies, &body);
    let session_id = body["session_id"].as_str().unwrap().to_owned();

    // Whoever holds the rotated-away cookie (and its CSRF token) cannot
    // quietly sign the session out: it is a reuse, as at refresh.
    let r = app
        .browser_post(&stolen, "/v1/auth/logout")
        .header("x-csrf-token", stolen.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::UNAUTHORIZED, "refresh_token_reused".into())
    );
    let r = app
        .browser_post(&b, "/v1/auth/refresh")
        .header("x-csrf-token", b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the family is revoked"
    );
    let events = app
        .audit(&format!(
            "session_id={session_id}&kind=refresh_reuse_detected"
        ))
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
}
