//! The account page and cookie transport in a real headless Chromium
//! (Debian's `chromium` + `chromium-driver`), against the real
//! `session-server` binary. Pages are opened on `http://localhost:PORT`,
//! which Chromium treats as a secure context, so the `__Host-` and
//! `__Secure-` cookies are stored as in production.
//!
//! Each protection is checked by its exact refusal (the status and error
//! code the browser got, or the server's log line naming the rule), so a
//! test fails when the protection is removed.

use std::path::PathBuf;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::harness::{PASSWORD, ServerProcess, client};
use crate::webdriver::{Browser, Driver};

const WINDOWS_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const ANDROID_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";

/// The server binary on free ports, with a user `alice`; pages reach it
/// at `http://localhost:PORT`.
struct Service {
    process: ServerProcess,
    _dir: tempfile::TempDir,
}

impl Service {
    async fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut all = vec![
            ("SESSION_RATE_LIMIT_LOGIN", "0"),
            ("SESSION_RATE_LIMIT_REFRESH", "0"),
            ("SESSION_LOG_FORMAT", "json"),
        ];
        all.extend_from_slice(env);
        let process = ServerProcess::spawn(dir.path(), &all).await;
        let r = client()
            .post(format!("{}/admin/v1/users", process.admin))
            .bearer_auth(process.admin_token())
            .json(&json!({ "username": "alice", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        Self { process, _dir: dir }
    }

    fn port(&self) -> u16 {
        self.process
            .public
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// `http://localhost:PORT` (a secure context for Chromium).
    fn origin(&self) -> String {
        format!("http://localhost:{}", self.port())
    }

    /// How many `csrf check refused` log lines name `rule` and `origin`.
    fn refusals(&self, rule: &str, origin: &str) -> usize {
        self.process
            .log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| {
                v["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("csrf check refused"))
                    && v["fields"]["rule"] == rule
                    && v["fields"]["origin"] == origin
            })
            .count()
    }
}

/// Serves `router` on a free loopback port until the test ends.
async fn serve(router: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    port
}

/// A page on another origin: `html` at `/`.
async fn other_origin_page(html: String) -> String {
    let router = Router::new().route("/", get(move || async move { Html(html) }));
    format!("http://localhost:{}", serve(router).await)
}

/// Signs in on `/ui/` by keyboard (type, Enter) and waits for the device list.
async fn sign_in(b: &Browser, ui: &str) {
    b.goto(ui).await;
    b.wait_for(
        "!document.getElementById('signin').hidden",
        "the sign-in form",
    )
    .await;
    // Labels name the fields (screen readers, tapping a label).
    let labelled = b
        .exec(
            "return ['username','password'].every(id => document.querySelector(`label[for=${id}]`))",
            json!([]),
        )
        .await;
    assert_eq!(labelled, Value::Bool(true));
    b.type_into("#username", "alice").await;
    b.type_into("#password", &format!("{PASSWORD}\u{E007}"))
        .await; // Enter
    wait_signed_in(b).await;
}

async fn wait_signed_in(b: &Browser) {
    b.wait_for(
        "!document.getElementById('account').hidden && document.querySelector('#devices li[data-current]')",
        "the device list with this device",
    )
    .await;
}

async fn device_count(b: &Browser) -> usize {
    let v = b
        .exec(
            "return document.querySelectorAll('#devices li').length",
            json!([]),
        )
        .await;
    usize::try_from(v.as_u64().unwrap()).unwrap()
}

fn cookie<'a>(cookies: &'a [Value], name: &str) -> Option<&'a Value> {
    cookies.iter().find(|c| c["name"] == name)
}

/// The browser drops its access cookie, as it does when the cookie's
/// `Max-Age` (the token's lifetime) runs out: the next call gets 401.
async fn expire_access_cookie(b: &Browser, origin: &str) {
    b.cdp(
        "Network.deleteCookies",
        json!({ "name": "__Host-session", "url": format!("{origin}/") }),
    )
    .await;
    assert!(cookie(&b.all_cookies().await, "__Host-session").is_none());
}

async fn csrf_cookie(b: &Browser) -> String {
    cookie(&b.all_cookies().await, "__Host-csrf")
        .and_then(|c| c["value"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_account_page_signs_in_refreshes_transparently_and_signs_out_on_the_default_configuration()
 {
    let service = Service::start(&[("SESSION_ACCESS_TOKEN_TTL", "60")]).await;
    let driver = Driver::start().await;
    let b = driver.browser(None).await;
    let origin = service.origin();
    sign_in(&b, &format!("{origin}/ui/")).await;
    assert_eq!(device_count(&b).await, 1);

    // Only the CSRF cookie is readable by the page.
    let visible = b.exec("return document.cookie", json!([])).await;
    let visible = visible.as_str().unwrap();
    assert!(visible.starts_with("__Host-csrf="), "{visible}");
    assert!(!visible.contains("__Host-session") && !visible.contains("__Secure-refresh"));
    assert!(
        !visible.contains(';'),
        "exactly one readable cookie: {visible}"
    );

    // Every cookie, read through CDP: the contract's attributes and paths.
    let cookies = b.all_cookies().await;
    for (name, path, http_only) in [
        ("__Host-session", "/", true),
        ("__Secure-refresh", "/v1/auth", true),
        ("__Host-csrf", "/", false),
    ] {
        let c = cookie(&cookies, name).unwrap_or_else(|| panic!("{name} in {cookies:?}"));
        assert_eq!(c["path"], path, "{c}");
        assert_eq!(c["httpOnly"], http_only, "{c}");
        assert_eq!(c["secure"], true, "{c}");
        assert_eq!(c["sameSite"], "Strict", "{c}");
        assert_eq!(c["domain"], "localhost", "{c}");
    }
    let access_lifetime = cookie(&cookies, "__Host-session").unwrap()["expires"]
        .as_f64()
        .unwrap()
        - time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(
        (0.0..=61.0).contains(&access_lifetime),
        "the access cookie lives as long as the token: {access_lifetime}"
    );

    // The access token runs out: the page refreshes by itself, on load and
    // on reload, and the CSRF token moves on with the refresh.
    let csrf_before = csrf_cookie(&b).await;
    expire_access_cookie(&b, &origin).await;
    b.reload().await;
    wait_signed_in(&b).await;
    let csrf_after = csrf_cookie(&b).await;
    assert_ne!(csrf_before, csrf_after, "the page refreshed the session");
    assert!(cookie(&b.all_cookies().await, "__Host-session").is_some());
    b.reload().await;
    wait_signed_in(&b).await;

    // An expired access token in the middle of a page's life: the next
    // call (sign out) refreshes, retries, and succeeds.
    expire_access_cookie(&b, &origin).await;
    b.click("#signout").await;
    b.wait_for(
        "!document.getElementById('signin').hidden",
        "the sign-in form after sign-out",
    )
    .await;
    let left = b.all_cookies().await;
    assert!(left.is_empty(), "sign-out clears every cookie: {left:?}");
    assert_eq!(
        b.exec("return document.cookie", json!([])).await,
        Value::String(String::new())
    );
    b.reload().await;
    b.wait_for(
        "!document.getElementById('signin').hidden",
        "still signed out after a reload",
    )
    .await;
    b.quit().await;
}

/// Schedules a cookie-transport refresh from this tab at `at_ms` (epoch
/// milliseconds); its status lands in `window.__refreshStatus`. As the
/// account page does: the CSRF token is one value at a time (contract
/// v1.1), so when the other tab's answer replaced the cookies between
/// reading the CSRF cookie and sending (403, and the cookie changed), it
/// tries once more with the new cookie.
const SCHEDULE_REFRESH: &str = "
    window.__refreshStatus = null;
    const at = arguments[0];
    const csrf = () => {
        const c = document.cookie.split('; ').find(c => c.startsWith('__Host-csrf='));
        return c ? c.slice('__Host-csrf='.length) : '';
    };
    const send = (token) => fetch('../v1/auth/refresh', {
        method: 'POST',
        headers: { 'X-CSRF-Token': token },
        credentials: 'same-origin',
    });
    setTimeout(async () => {
        try {
            const sent = csrf();
            let r = await send(sent);
            if (r.status === 403 && csrf() !== sent) r = await send(csrf());
            window.__refreshStatus = r.status;
        } catch (e) {
            window.__refreshStatus = -1;
        }
    }, Math.max(0, at - Date.now()));
";

#[tokio::test]
async fn two_tabs_refreshing_at_the_same_moment_both_stay_signed_in() {
    let service = Service::start(&[]).await;
    let driver = Driver::start().await;
    let b = driver.browser(None).await;
    let ui = format!("{}/ui/", service.origin());
    sign_in(&b, &ui).await;
    let first = b.current_tab().await;
    let second = b.new_tab().await;
    b.switch_to(&second).await;
    b.goto(&ui).await;
    wait_signed_in(&b).await;

    let now = b
        .exec("return Date.now()", json!([]))
        .await
        .as_f64()
        .unwrap();
    let at = now + 700.0;
    for tab in [&first, &second] {
        b.switch_to(tab).await;
        b.exec(SCHEDULE_REFRESH, json!([at])).await;
    }
    for tab in [&first, &second] {
        b.switch_to(tab).await;
        b.wait_for("window.__refreshStatus !== null", "the refresh's answer")
            .await;
        assert_eq!(
            b.exec("return window.__refreshStatus", json!([])).await,
            json!(200),
            "both refreshes succeed (the grace window)"
        );
    }
    for tab in [&first, &second] {
        b.switch_to(tab).await;
        b.reload().await;
        wait_signed_in(&b).await;
        assert_eq!(device_count(&b).await, 1, "still one session, not revoked");
    }
    b.quit().await;
}

#[tokio::test]
async fn a_page_on_another_origin_cannot_sign_out_refresh_or_read_the_session() {
    let service = Service::start(&[]).await;
    let origin = service.origin();
    let driver = Driver::start().await;
    let b = driver.browser(None).await;
    sign_in(&b, &format!("{origin}/ui/")).await;

    // Another port of localhost: same site (the cookies go along), another
    // origin. It even reads the CSRF cookie (cookies ignore ports).
    let evil = other_origin_page(format!(
        "<!doctype html><title>other</title>\
         <form id=f method=post action=\"{origin}/v1/auth/logout\"><button id=go>go</button></form>"
    ))
    .await;
    b.goto(&format!("{evil}/")).await;
    let outcome = b
        .exec_async(
            "const done = arguments[arguments.length - 1];
             const api = arguments[0];
             const csrf = (document.cookie.split('; ').find(c => c.startsWith('__Host-csrf=')) || '').slice(12);
             const attempt = (p) => p.then(r => r.type === 'opaque' ? 'opaque' : r.status, e => 'blocked');
             Promise.all([
               attempt(fetch(api + '/v1/session', { credentials: 'include' })),
               attempt(fetch(api + '/v1/auth/refresh', { method: 'POST', credentials: 'include',
                                                          headers: { 'X-CSRF-Token': csrf } })),
               attempt(fetch(api + '/v1/auth/logout', { method: 'POST', credentials: 'include', mode: 'no-cors' })),
               attempt(fetch(api + '/v1/auth/refresh', { method: 'POST', credentials: 'include', mode: 'no-cors' })),
             ]).then(done);",
            json!([origin]),
        )
        .await;
    assert_eq!(
        outcome,
        json!(["blocked", "blocked", "opaque", "opaque"]),
        "reads and CSRF-header requests die in CORS; simple requests get no answer"
    );
    // The form POST (a navigation) shows the server's exact refusal.
    b.click("#go").await;
    b.wait_for(
        "document.body && document.body.innerText.includes('csrf_failed')",
        "the refusal of the cross-origin form POST",
    )
    .await;
    let refused_by_origin = service.refusals("origin", &evil);
    assert!(
        refused_by_origin >= 3,
        "the two no-cors POSTs and the form were refused by the origin rule: {}",
        service.process.log()
    );

    // Still signed in on the real page.
    b.goto(&format!("{origin}/ui/")).await;
    wait_signed_in(&b).await;
    b.quit().await;
}

#[tokio::test]
async fn an_allowed_cross_origin_app_works_with_credentials_include() {
    let app_port = serve(Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>app</title><p>app") }),
    ))
    .await;
    let app = format!("http://localhost:{app_port}");
    let service = Service::start(&[("SESSION_ALLOWED_ORIGINS", app.as_str())]).await;
    let driver = Driver::start().await;
    let b = driver.browser(None).await;
    b.goto(&format!("{app}/")).await;
    let steps = b
        .exec_async(
            "const done = arguments[arguments.length - 1];
             const api = arguments[0], password = arguments[1];
             const post = (path, body, csrf) => fetch(api + path, {
               method: 'POST', credentials: 'include',
               headers: Object.assign({ 'Content-Type': 'application/json' }, csrf ? { 'X-CSRF-Token': csrf } : {}),
               body: body ? JSON.stringify(body) : undefined,
             });
             (async () => {
               const out = [];
               const login = await post('/v1/auth/login', { username: 'alice', password });
               out.push(login.status);
               const me = await fetch(api + '/v1/session', { credentials: 'include' });
               out.push(me.status);
               const csrf = (await me.json()).csrf_token;
               const refreshed = await post('/v1/auth/refresh', null, csrf);
               out.push(refreshed.status);
               const next = (await refreshed.json()).csrf_token;
               const stale = await post('/v1/auth/logout', null, csrf);
               out.push(stale.status);
               const logout = await post('/v1/auth/logout', null, next);
               out.push(logout.status);
               const after = await fetch(api + '/v1/session', { credentials: 'include' });
               out.push(after.status);
               return out;
             })().then(done, e => done(String(e)));",
            json!([service.origin(), PASSWORD]),
        )
        .await;
    assert_eq!(
        steps,
        json!([200, 200, 200, 403, 204, 401]),
        "login, who-am-I, refresh, the stale CSRF token refused, logout, signed out"
    );
    b.quit().await;
}

/// A small reverse proxy: `/auth/*` → the service (`upstream`) with
/// `/auth` stripped, every header passed both ways but `Host`.
async fn proxy(State(upstream): State<String>, req: Request) -> Response {
    let Some(rest) = req.uri().path().strip_prefix("/auth") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{upstream}{rest}{query}");
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut out = client().request(parts.method, url).body(body);
    for (k, v) in &parts.headers {
        if k != header::HOST {
            out = out.header(k, v);
        }
    }
    let Ok(r) = out.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let mut res = Response::builder().status(r.status().as_u16());
    for (k, v) in r.headers() {
        if let Ok(v) = HeaderValue::from_bytes(v.as_bytes()) {
            res = res.header(k.as_str(), v);
        }
    }
    let bytes = r.bytes().await.unwrap_or_default();
    res.body(Body::from(bytes)).unwrap()
}

#[tokio::test]
async fn behind_a_reverse_proxy_under_a_prefix_sign_in_refresh_and_sign_out_work() {
    let proxy_port = crate::harness::free_port();
    let public_url = format!("http://localhost:{proxy_port}/auth");
    let service = Service::start(&[("SESSION_PUBLIC_URL", public_url.as_str())]).await;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port))
        .await
        .unwrap();
    let router = Router::new()
        .fallback(proxy)
        .with_state(service.process.public.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let driver = Driver::start().await;
    let b = driver.browser(None).await;
    let origin = format!("http://localhost:{proxy_port}");
    sign_in(&b, &format!("{public_url}/ui/")).await;
    let cookies = b.all_cookies().await;
    assert_eq!(
        cookie(&cookies, "__Secure-refresh").unwrap()["path"],
        "/auth/v1/auth"
    );

    let csrf_before = csrf_cookie(&b).await;
    expire_access_cookie(&b, &origin).await;
    b.reload().await;
    wait_signed_in(&b).await;
    assert_ne!(
        csrf_cookie(&b).await,
        csrf_before,
        "refreshed through the proxy"
    );

    b.click("#signout").await;
    b.wait_for(
        "!document.getElementById('signin').hidden",
        "the sign-in form after sign-out",
    )
    .await;
    assert!(b.all_cookies().await.is_empty());
    b.quit().await;
}

/// Where CI keeps the screenshot (linked from the README).
fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/ci-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
async fn the_device_list_shows_two_signed_in_browsers_and_signs_the_other_one_out() {
    let service = Service::start(&[]).await;
    let ui = format!("{}/ui/", service.origin());
    let driver = Driver::start().await;
    let laptop = driver.browser(Some(WINDOWS_UA)).await;
    let phone = driver.browser(Some(ANDROID_UA)).await;
    sign_in(&phone, &ui).await;
    sign_in(&laptop, &ui).await;
    assert_eq!(device_count(&laptop).await, 2);
    let described = laptop
        .exec(
            "return [...document.querySelectorAll('#devices li .what')].map(e => e.textContent)",
            json!([]),
        )
        .await;
    assert_eq!(
        described,
        json!([
            "Chrome 120 on WindowsThis device",
            "Chrome 120 on Android 14"
        ]),
    );
    let details = laptop
        .exec(
            "return document.querySelector('#devices li:not([data-current]) .details').textContent",
            json!([]),
        )
        .await;
    assert!(
        details.as_str().unwrap().contains("IP 127.0.0.1")
            && details.as_str().unwrap().contains("last seen"),
        "{details}"
    );
    let png = laptop.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"));
    let path = artifact("account-devices.png");
    std::fs::write(&path, &png).unwrap();
    eprintln!("screenshot of the device list: {}", path.display());

    // Phone-sized: nothing wider than the screen.
    laptop.set_window(390, 844).await;
    let fits = laptop
        .exec(
            "return document.documentElement.scrollWidth <= window.innerWidth",
            json!([]),
        )
        .await;
    assert_eq!(fits, Value::Bool(true), "no sideways scrolling on a phone");
    std::fs::write(
        artifact("account-devices-phone.png"),
        laptop.screenshot().await,
    )
    .unwrap();

    // Sign the phone out from the laptop; the phone is asked to sign in.
    laptop.click("#signout-others").await;
    laptop
        .wait_for(
            "document.querySelectorAll('#devices li').length === 1",
            "one device left",
        )
        .await;
    phone.reload().await;
    phone
        .wait_for(
            "!document.getElementById('signin').hidden",
            "the phone signed out",
        )
        .await;
    laptop.quit().await;
    phone.quit().await;
}
