//! Browser rules of the public listener over real HTTP: the own origin,
//! the readable CSRF cookie and its rotation, CORS for allowed origins,
//! `SESSION_PUBLIC_URL`, and the log lines that explain a refusal.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{
    App, Browser, PASSWORD, ServerProcess, client, cookie_value, error_code, set_cookies,
};

/// The `Set-Cookie` line of cookie `name`.
fn cookie_line(cookies: &[String], name: &str) -> String {
    cookies
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {cookies:?}"))
        .clone()
}

fn attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect()
}

async fn login_from(app: &App, name: &str, origin: &str) -> reqwest::Response {
    app.http
        .post(app.public("/v1/auth/login"))
        .header("Origin", origin)
        .json(&json!({ "username": name, "password": PASSWORD }))
        .send()
        .await
        .unwrap()
}

/// A cookie-transport refresh; absorbs the answer into `b` on success.
async fn refresh(app: &App, b: &mut Browser, csrf: &str) -> (StatusCode, Vec<String>, Value) {
    let r = app
        .browser_post(b, "/v1/auth/refresh")
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let cookies = set_cookies(&r);
    let body: Value = r.json().await.unwrap();
    if status == StatusCode::OK {
        b.absorb(&cookies, &body);
    }
    (status, cookies, body)
}

#[tokio::test]
async fn a_page_on_the_services_own_origin_signs_in_with_the_default_configuration() {
    let app = App::start().await;
    app.add_user("alice").await;
    let own = app.server.public_url(); // http://127.0.0.1:PORT, the Host reqwest sends
    for origin in [own.clone(), own.replace("http://", "https://")] {
        let r = login_from(&app, "alice", &origin).await;
        assert_eq!(r.status(), StatusCode::OK, "{origin}");
    }
    let port: u16 = own.rsplit(':').next().unwrap().parse().unwrap();
    for foreign in [
        format!("http://127.0.0.1:{}", port + 1),
        format!("http://localhost:{port}"),
        "https://evil.example".to_owned(),
        "null".to_owned(),
    ] {
        let r = login_from(&app, "alice", &foreign).await;
        assert_eq!(
            error_code(r).await,
            (StatusCode::FORBIDDEN, "csrf_failed".into()),
            "{foreign}"
        );
    }
}

#[tokio::test]
async fn with_a_public_url_only_its_origin_is_the_own_origin() {
    let app = App::start_with(|raw| raw.set("public_url", "https://example.com/auth")).await;
    app.add_user("alice").await;
    let r = login_from(&app, "alice", "https://example.com").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = login_from(&app, "alice", &app.server.public_url()).await;
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
}

#[tokio::test]
async fn login_and_refresh_set_a_readable_csrf_cookie_and_logout_clears_every_cookie() {
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
    let body: Value = r.json().await.unwrap();
    let csrf_line = cookie_line(&cookies, "__Host-csrf");
    let attrs = attributes(&csrf_line);
    for want in ["Path=/", "Secure", "SameSite=Strict"] {
        assert!(attrs.iter().any(|a| a == want), "{want} in {csrf_line}");
    }
    assert!(
        !attrs.iter().any(|a| a.eq_ignore_ascii_case("HttpOnly")),
        "the page must be able to read {csrf_line}"
    );
    assert_eq!(
        cookie_value(&cookies, "__Host-csrf").as_deref(),
        body["csrf_token"].as_str()
    );
    for name in ["__Host-session", "__Secure-refresh"] {
        assert!(
            attributes(&cookie_line(&cookies, name))
                .iter()
                .any(|a| a == "HttpOnly")
        );
    }
    let mut b = Browser::default();
    b.absorb(&cookies, &body);

    let csrf = b.csrf.clone().unwrap();
    let (status, cookies, body) = refresh(&app, &mut b, &csrf).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        cookie_value(&cookies, "__Host-csrf").as_deref(),
        body["csrf_token"].as_str(),
        "refresh sets the new token in the cookie too"
    );

    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&r);
    for (name, path) in [
        ("__Host-session", "Path=/"),
        ("__Secure-refresh", "Path=/v1/auth"),
        ("__Host-csrf", "Path=/"),
    ] {
        let line = cookie_line(&cleared, name);
        assert!(line.starts_with(&format!("{name}=;")), "{line}");
        let attrs = attributes(&line);
        assert!(attrs.iter().any(|a| a == "Max-Age=0"), "{line}");
        assert!(attrs.iter().any(|a| a == path), "{line}");
    }
}

#[tokio::test]
async fn refresh_issues_a_new_csrf_token_and_the_previous_one_is_refused_from_then_on() {
    let app = App::start().await;
    let mut b = app.browser_login("alice").await;
    let first = b.csrf.clone().unwrap();
    let (status, _, _) = refresh(&app, &mut b, &first).await;
    assert_eq!(status, StatusCode::OK);
    let second = b.csrf.clone().unwrap();
    assert_ne!(first, second);

    // The previous token: refused on refresh, logout and own revocation.
    let (status, _, body) = refresh(&app, &mut b, &first).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("csrf_failed"))
    );
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );
    let sid = b.session_id(&app).await;
    let r = app
        .http
        .delete(app.public(&format!("/v1/sessions/{sid}")))
        .header("cookie", b.cookie_header())
        .header("X-CSRF-Token", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::FORBIDDEN, "csrf_failed".into())
    );

    // The live one works.
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", &second)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn two_tabs_refreshing_with_the_same_cookies_both_get_the_same_csrf_token() {
    let app = App::start().await;
    let b = app.browser_login("alice").await;
    let csrf = b.csrf.clone().unwrap();
    let (mut tab1, mut tab2) = (b.clone(), b.clone());
    let (s1, _, body1) = refresh(&app, &mut tab1, &csrf).await;
    let (s2, _, body2) = refresh(&app, &mut tab2, &csrf).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK), "{body2}");
    assert_eq!(body1["csrf_token"], body2["csrf_token"]);
    assert_eq!(
        tab1.refresh, tab2.refresh,
        "the grace window's same successor"
    );
}

#[tokio::test]
async fn get_session_in_cookie_transport_returns_the_live_csrf_token() {
    let app = App::start().await;
    let mut b = app.browser_login("alice").await;
    let csrf = b.csrf.clone().unwrap();
    let (status, _, _) = refresh(&app, &mut b, &csrf).await;
    assert_eq!(status, StatusCode::OK);
    let r = app
        .http
        .get(app.public("/v1/session"))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["csrf_token"].as_str(), b.csrf.as_deref());

    // Bearer transport has no CSRF token to give.
    let t = app.bearer_session("bob").await;
    let body: Value = app.whoami(&t.access).await.json().await.unwrap();
    assert!(body.get("csrf_token").is_none(), "{body}");
}

fn preflight(app: &App, path: &str, origin: &str, method: &str) -> reqwest::RequestBuilder {
    app.http
        .request(Method::OPTIONS, app.public(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "content-type,x-csrf-token",
        )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn allowed_origins_get_cors_preflights_and_headers_and_others_get_none() {
    let app = App::start_with(|raw| raw.set("allowed_origins", "https://app.example")).await;
    app.add_user("alice").await;
    for (path, method, methods) in [
        ("/v1/auth/login", "POST", "POST"),
        ("/v1/auth/refresh", "POST", "POST"),
        ("/v1/session", "GET", "GET, HEAD"),
        ("/v1/sessions/AAAAAAAAAAAAAAAAAAAAAA", "DELETE", "DELETE"),
    ] {
        let r = preflight(&app, path, "https://app.example", method)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&r, "access-control-allow-methods"), Some(methods));
        assert_eq!(
            header(&r, "access-control-allow-headers"),
            Some("Authorization, Content-Type, X-CSRF-Token, X-Session-Transport, DPoP")
        );
        assert!(header(&r, "access-control-max-age").is_some());
        assert_eq!(header(&r, "vary"), Some("Origin"));
    }

    // A foreign origin's preflight gets no CORS header at all.
    let r = preflight(&app, "/v1/auth/login", "https://evil.example", "POST")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        !r.headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );

    // The actual request from the allowed origin carries the headers.
    let r = login_from(&app, "alice", "https://app.example").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "vary"), Some("Origin"));
    // So does an error answer (the page can read why).
    let r = app
        .http
        .get(app.public("/v1/session"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example")
    );

    // A refused foreign origin: no CORS header either.
    let r = login_from(&app, "alice", "https://evil.example").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert!(header(&r, "access-control-allow-credentials").is_none());
}

#[tokio::test]
async fn the_own_origin_gets_no_cors_headers() {
    let app = App::start().await;
    app.add_user("alice").await;
    let r = login_from(&app, "alice", &app.server.public_url()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(&r, "access-control-allow-origin").is_none());
}

#[tokio::test]
async fn under_a_path_prefix_the_refresh_cookie_path_carries_the_prefix() {
    let app = App::start_with(|raw| raw.set("public_url", "http://localhost:9/auth")).await;
    let b = app.browser_login("alice").await;
    let _ = b;
    let r = app
        .http
        .post(app.public("/v1/auth/login"))
        .json(&json!({ "username": "alice", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let cookies = set_cookies(&r);
    assert!(
        attributes(&cookie_line(&cookies, "__Secure-refresh"))
            .iter()
            .any(|a| a == "Path=/auth/v1/auth"),
        "{cookies:?}"
    );
    assert!(
        attributes(&cookie_line(&cookies, "__Host-session"))
            .iter()
            .any(|a| a == "Path=/")
    );
    let body: Value = r.json().await.unwrap();
    let mut b = Browser::default();
    b.absorb(&cookies, &body);
    let r = app
        .browser_post(&b, "/v1/auth/logout")
        .header("X-CSRF-Token", b.csrf.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        attributes(&cookie_line(&set_cookies(&r), "__Secure-refresh"))
            .iter()
            .any(|a| a == "Path=/auth/v1/auth")
    );
}

#[tokio::test]
async fn the_server_logs_the_origins_it_accepts_and_why_it_refused_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(
        dir.path(),
        &[
            ("SESSION_ALLOWED_ORIGINS", "https://app.example"),
            ("SESSION_LOG_FORMAT", "json"),
        ],
    )
    .await;
    let start = server.log();
    let line = start
        .lines()
        .find(|l| l.contains("browser origins accepted"))
        .unwrap_or_else(|| panic!("no start-up line about origins in {start}"));
    assert!(line.contains("https://app.example"), "{line}");
    assert!(line.contains("<Host>"), "{line}");

    let http = client();
    let r = http
        .post(format!("{}/v1/auth/login", server.public))
        .header("Origin", "https://evil.example")
        .json(&json!({ "username": "nobody", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(format!("{}/v1/auth/logout", server.public))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "no session: 401 first"
    );
    let r = http
        .post(format!("{}/v1/auth/login", server.public))
        .header("Sec-Fetch-Site", "cross-site")
        .header("Origin", "https://other.example")
        .json(&json!({ "username": "nobody", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let log = server.log();
    let refusals: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("csrf check refused"))
        })
        .collect();
    let has = |rule: &str, origin: &str| {
        refusals.iter().any(|v| {
            v["level"] == "INFO" && v["fields"]["rule"] == rule && v["fields"]["origin"] == origin
        })
    };
    assert!(has("origin", "https://evil.example"), "{log}");
    assert!(has("sec_fetch_site", "https://other.example"), "{log}");
}

impl Browser {
    /// The session id, from `GET /v1/session` with the cookies.
    pub async fn session_id(&self, app: &App) -> String {
        let r = app
            .http
            .get(app.public("/v1/session"))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["session_id"].as_str().unwrap().to_owned()
    }
}
