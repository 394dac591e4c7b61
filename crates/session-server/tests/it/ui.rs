//! The account page over real HTTP: embedded files, strict CSP, no inline
//! script, `SESSION_UI=off`. (The page's behaviour in a real browser is in
//! `chromium`.)

use reqwest::StatusCode;

use crate::harness::{App, error_code};

const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

#[tokio::test]
async fn the_account_page_is_served_with_a_strict_csp_and_no_inline_script() {
    let app = App::start().await;
    let r = app.http.get(app.public("/ui/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert!(
        h["content-type"].to_str().unwrap().starts_with("text/html"),
        "{h:?}"
    );
    assert_eq!(h["content-security-policy"], CSP);
    assert_eq!(h["x-content-type-options"], "nosniff");
    let html = r.text().await.unwrap();
    // One script, by URL; no inline script, no inline handler, no style attribute.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains(r#"<script src="app.js" defer></script>"#));
    for inline in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " style=",
        "<style",
        "javascript:",
    ] {
        assert!(!html.contains(inline), "{inline} in the page");
    }
    for (path, kind) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = app.http.get(app.public(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(r.headers()["content-security-policy"], CSP);
    }
    // `/ui` leads to the page, relatively (works under a path prefix).
    let r = app.http.get(app.public("/ui")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "ui/");
}

#[tokio::test]
async fn the_script_reads_csrf_from_the_cookie_and_sets_text_never_html() {
    let app = App::start().await;
    let js = app
        .http
        .get(app.public("/ui/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(js.contains("__Host-csrf"));
    assert!(js.contains("X-CSRF-Token"));
    for unsafe_sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!js.contains(unsafe_sink), "{unsafe_sink} in app.js");
    }
}

#[tokio::test]
async fn session_ui_off_turns_the_account_page_off() {
    let app = App::start_with(|raw| raw.set("ui", "off")).await;
    for path in ["/ui/", "/ui/app.js", "/ui"] {
        let r = app.http.get(app.public(path)).send().await.unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::NOT_FOUND, "not_found".into()),
            "{path}"
        );
    }
}
