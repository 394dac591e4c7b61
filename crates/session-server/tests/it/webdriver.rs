//! A small W3C WebDriver client over reqwest, enough to drive headless
//! Chromium through Debian's `chromedriver`: navigate, type, click, run
//! scripts, read cookies through the DevTools protocol, take screenshots.
//!
//! chromium and chromedriver are required: a machine without them fails
//! the browser tests with the install command (`cargo xtask ci` installs
//! them on Debian).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::free_port;

/// How long a page may take to reach an expected state.
const UI_BOUND: Duration = Duration::from_secs(15);

fn find_program(names: &[&str], fallbacks: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

const INSTALL: &str = "apt-get install -y chromium chromium-driver \
    (or run `cargo xtask ci`, which installs them)";

/// A running chromedriver. Killed on drop.
pub struct Driver {
    child: Child,
    url: String,
    http: reqwest::Client,
    chromium: PathBuf,
}

impl Driver {
    pub async fn start() -> Self {
        let driver = find_program(&["chromedriver"], &["/usr/bin/chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found on PATH: {INSTALL}"));
        let chromium = std::env::var_os("SESSION_TEST_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| {
                find_program(
                    &["chromium", "chromium-browser", "google-chrome"],
                    &["/usr/bin/chromium"],
                )
            })
            .unwrap_or_else(|| panic!("chromium not found on PATH: {INSTALL}"));
        let port = free_port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + UI_BOUND;
        loop {
            if let Ok(r) = http.get(format!("{url}/status")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            url,
            http,
            chromium,
        }
    }

    /// A new browser (its own fresh profile: cookies not shared with any
    /// other browser), with `user_agent` when given.
    pub async fn browser(&self, user_agent: Option<&str>) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1000,800".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        if let Some(ua) = user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chromium.display().to_string(),
                "args": args,
            },
        }}});
        let r = self
            .http
            .post(format!("{}/session", self.url))
            .json(&caps)
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        let id = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {body}"))
            .to_owned();
        Browser {
            http: self.http.clone(),
            base: format!("{}/session/{id}", self.url),
            _profile: profile,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session: one browser window (and its tabs).
pub struct Browser {
    http: reqwest::Client,
    base: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "webdriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn reload(&self) {
        self.cmd(reqwest::Method::POST, "/refresh", Some(json!({})))
            .await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns
    /// its value.
    pub async fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs an async function body: `arguments[arguments.length - 1]` is
    /// the callback to call with the result.
    pub async fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// A Chrome DevTools Protocol command (e.g. `Network.getAllCookies`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({ "cmd": cmd, "params": params })),
        )
        .await
    }

    /// Every cookie the browser holds, `HttpOnly` ones included.
    pub async fn all_cookies(&self) -> Vec<Value> {
        self.cdp("Network.getAllCookies", json!({}))
            .await
            .get("cookies")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    async fn element(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}"))
            .to_owned()
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Polls `condition` (a JS expression) until it is true; panics with
    /// `what` and the page's status line after [`UI_BOUND`].
    pub async fn wait_for(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + UI_BOUND;
        let script = format!("try {{ return !!({condition}); }} catch (e) {{ return false; }}");
        loop {
            if self.exec(&script, json!([])).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let page = self
                    .exec(
                        "return location.href + ' | ' + document.body.innerText",
                        json!([]),
                    )
                    .await;
                panic!("timed out waiting for {what}; page: {page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    pub async fn set_window(&self, width: u32, height: u32) {
        self.cmd(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Opens a new tab and returns its handle (the current tab stays).
    pub async fn new_tab(&self) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/window/new",
                Some(json!({ "type": "tab" })),
            )
            .await;
        v["handle"].as_str().unwrap().to_owned()
    }

    pub async fn current_tab(&self) -> String {
        self.cmd(reqwest::Method::GET, "/window", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn switch_to(&self, handle: &str) {
        self.cmd(
            reqwest::Method::POST,
            "/window",
            Some(json!({ "handle": handle })),
        )
        .await;
    }

    pub async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}
