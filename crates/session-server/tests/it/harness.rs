//! A client per endpoint, so tests read like the flow they check.

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use session_server::config::ConfigError;
use session_server::testing::TestServer;

pub const PASSWORD: &str = "correct horse battery";
pub const UA: &str = "it-tests/1.0";
/// The master key every instance of a shared-store test is given.
pub const MASTER_KEY: &str = "8f1c3a5e7b9d0f2143658709badcfe1032547698abcdef0123456789abcdef01";

pub struct App {
    pub server: TestServer,
    pub http: Client,
}

pub fn client() -> Client {
    Client::builder()
        .user_agent(UA)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl App {
    pub async fn start() -> Self {
        Self::start_with(|_| Ok(())).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut session_server::RawSettings) -> Result<(), ConfigError>,
    ) -> Self {
        let server = TestServer::start_with(|raw| {
            // Tests open many sessions from one address.
            raw.set("rate_limit_login", "0")?;
            raw.set("rate_limit_refresh", "0")?;
            raw.set("rate_limit_create", "0")?;
            configure(raw)?;
            // A shared store needs the master key every instance shares.
            let shared = raw.get("store").is_some_and(|s| s.starts_with("redis"));
            if shared && raw.get("master_key").is_none() && raw.get("master_key_file").is_none() {
                raw.set("master_key", MASTER_KEY)?;
            }
            Ok(())
        })
        .await
        .expect("server starts");
        Self {
            server,
            http: client(),
        }
    }

    /// The body of `GET /readyz` on the public listener.
    pub async fn readyz(&self) -> Value {
        self.http
            .get(self.public("/readyz"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn public(&self, path: &str) -> String {
        format!("{}{path}", self.server.public_url())
    }

    pub fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.server.admin_url())
    }

    pub fn admin_req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.admin(path))
            .bearer_auth(self.server.admin_token())
    }

    pub async fn add_user(&self, name: &str) {
        let r = self
            .admin_req(reqwest::Method::POST, "/admin/v1/users")
            .json(&json!({ "username": name, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
    }

    /// Bearer-transport login.
    pub async fn login_bearer(&self, name: &str, password: &str) -> Response {
        self.http
            .post(self.public("/v1/auth/login"))
            .header("X-Session-Transport", "bearer")
            .json(&json!({ "username": name, "password": password }))
            .send()
            .await
            .unwrap()
    }

    /// A user with a bearer session: (access, refresh, body).
    pub async fn bearer_session(&self, name: &str) -> Tokens {
        self.add_user(name).await;
        let r = self.login_bearer(name, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK);
        Tokens::from_body(r.json().await.unwrap())
    }

    /// Opens a session through the admin API (trusted backend).
    pub async fn admin_session(&self, user_id: &str) -> Tokens {
        let r = self
            .admin_req(reqwest::Method::POST, "/admin/v1/sessions")
            .json(&json!({ "user_id": user_id, "user_agent": UA, "ip": "127.0.0.1" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        Tokens::from_body(r.json().await.unwrap())
    }

    /// `DELETE /admin/v1/sessions/{id}`: an operator revokes a session.
    pub async fn admin_revoke(&self, session_id: &str) -> StatusCode {
        self.admin_req(
            reqwest::Method::DELETE,
            &format!("/admin/v1/sessions/{session_id}"),
        )
        .send()
        .await
        .unwrap()
        .status()
    }

    /// `GET /admin/v1/sessions/{id}` as JSON (asserting 200).
    pub async fn admin_view(&self, session_id: &str) -> Value {
        let r = self
            .admin_req(
                reqwest::Method::GET,
                &format!("/admin/v1/sessions/{session_id}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    pub async fn refresh_bearer(&self, refresh: &str) -> Response {
        self.http
            .post(self.public("/v1/auth/refresh"))
            .header("X-Session-Transport", "bearer")
            .json(&json!({ "refresh_token": refresh }))
            .send()
            .await
            .unwrap()
    }

    pub async fn whoami(&self, access: &str) -> Response {
        self.http
            .get(self.public("/v1/session"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    pub async fn logout_bearer(&self, access: &str) -> Response {
        self.http
            .post(self.public("/v1/auth/logout"))
            .header("X-Session-Transport", "bearer")
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
    }

    pub async fn audit(&self, query: &str) -> Vec<Value> {
        let r = self
            .admin_req(reqwest::Method::GET, &format!("/admin/v1/audit?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["events"].as_array().unwrap().clone()
    }
}

#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
    pub session_id: String,
    pub csrf: String,
    pub body: Value,
}

impl Tokens {
    pub fn from_body(body: Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
            session_id: body["session_id"].as_str().unwrap().to_owned(),
            csrf: body["csrf_token"].as_str().unwrap().to_owned(),
            body,
        }
    }
}

/// Cookie-transport state: the cookies the server set, sent back by hand
/// (reqwest's jar refuses `Secure` cookies over plain HTTP).
#[derive(Debug, Clone, Default)]
pub struct Browser {
    pub access: Option<String>,
    pub refresh: Option<String>,
    pub csrf: Option<String>,
}

pub fn set_cookies(r: &Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

pub fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

impl Browser {
    pub fn absorb(&mut self, cookies: &[String], body: &Value) {
        if let Some(a) = cookie_value(cookies, "__Host-session") {
            self.access = Some(a);
        }
        if let Some(r) = cookie_value(cookies, "__Secure-refresh") {
            self.refresh = Some(r);
        }
        if let Some(c) = body["csrf_token"].as_str() {
            self.csrf = Some(c.to_owned());
        }
    }

    pub fn cookie_header(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = &self.access {
            parts.push(format!("__Host-session={a}"));
        }
        if let Some(r) = &self.refresh {
            parts.push(format!("__Secure-refresh={r}"));
        }
        parts.join("; ")
    }
}

impl App {
    pub async fn browser_login(&self, name: &str) -> Browser {
        self.add_user(name).await;
        let r = self
            .http
            .post(self.public("/v1/auth/login"))
            .json(&json!({ "username": name, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookies = set_cookies(&r);
        let body: Value = r.json().await.unwrap();
        let mut b = Browser::default();
        b.absorb(&cookies, &body);
        b
    }

    pub fn browser_post(&self, b: &Browser, path: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.public(path))
            .header("cookie", b.cookie_header())
    }
}

pub async fn error_code(r: Response) -> (StatusCode, String) {
    let status = r.status();
    let body: Value = r.json().await.expect("error bodies are JSON");
    assert!(
        body["message"].is_string(),
        "error body has a message: {body}"
    );
    (status, body["error"].as_str().unwrap().to_owned())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `session-server` binary as a child process on free loopback
/// ports, its stderr in a log file outside the data dir. Killed on drop.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub public: String,
    pub admin: String,
    pub data_dir: std::path::PathBuf,
    log: tempfile::NamedTempFile,
}

impl ServerProcess {
    /// Starts the binary on `data_dir` with extra environment, and waits
    /// until both listeners answer. A free port can be taken by another
    /// test between [`free_port`] and the server's bind; a start that
    /// stops on "Address already in use" is tried again on new ports.
    pub async fn spawn(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_spawn(data_dir, env).await {
                Ok(server) => return server,
                Err(log) if attempt < 5 && log.contains("Address already in use") => {}
                Err(log) => panic!("server did not start: {log}"),
            }
        }
    }

    /// One start: the server once both listeners answer, or its log.
    async fn try_spawn(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Result<Self, String> {
        let (p, a) = (free_port(), free_port());
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_session-server"));
        command
            .env("SESSION_DATA_DIR", data_dir)
            .env("SESSION_PUBLIC_ADDR", format!("127.0.0.1:{p}"))
            .env("SESSION_ADMIN_ADDR", format!("127.0.0.1:{a}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            // Hermetic: only what a test passes configures telemetry.
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        for (k, v) in env {
            command.env(k, v);
        }
        let mut server = Self {
            child: command.spawn().unwrap(),
            public: format!("http://127.0.0.1:{p}"),
            admin: format!("http://127.0.0.1:{a}"),
            data_dir: data_dir.to_owned(),
            log,
        };
        let http = client();
        for _ in 0..400 {
            // Exited first: whatever answers on its ports is not it.
            if server.child.try_wait().unwrap().is_some() {
                return Err(server.log());
            }
            let up = |url: String| http.get(url).send();
            if up(format!("{}/healthz", server.public)).await.is_ok()
                && up(format!("{}/healthz", server.admin)).await.is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Err(server.log())
    }

    /// The generated admin token.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Python venv made once per checkout in `target/<name>`, with the
/// system's site packages, and `packages` installed into it when `import`
/// fails without them. Built in a temporary directory and renamed into
/// place, so concurrent test processes never see half of it. Returns its
/// python.
pub fn test_venv(name: &str, import: &str, packages: &[&str]) -> std::path::PathBuf {
    use std::process::Command;
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let venv = target.join(name);
    let bin = venv.join("bin/python");
    let works = |py: &std::path::Path| {
        Command::new(py)
            .args(["-c", import])
            .status()
            .is_ok_and(|s| s.success())
    };
    if works(&bin) {
        return bin;
    }
    std::fs::create_dir_all(&target).unwrap();
    let tmp = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(&target)
        .unwrap();
    let staged = tmp.path().join("venv");
    let made = Command::new("python3")
        .args(["-m", "venv", "--system-site-packages"])
        .arg(&staged)
        .status()
        .expect("python3 is required for these tests");
    assert!(made.success(), "python3 -m venv failed");
    let staged_bin = staged.join("bin/python");
    if !works(&staged_bin) {
        let pip = Command::new(&staged_bin)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(packages)
            .status()
            .unwrap();
        assert!(pip.success(), "pip install {packages:?} failed");
    }
    // Another process may have won the race: then its venv is used.
    let _ = std::fs::rename(&staged, &venv);
    assert!(works(&bin), "the venv {name} cannot run {import:?}");
    bin
}

/// Runs the real binary with `env` on a fresh data directory, expects it
/// to stop at start with exit status 1 and exactly one
/// `session-server: error:` line, and returns that line.
pub fn start_error_line(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_session-server"));
    command
        .env("SESSION_DATA_DIR", dir.path().join("data"))
        .env("SESSION_PUBLIC_ADDR", "127.0.0.1:0")
        .env("SESSION_ADMIN_ADDR", "127.0.0.1:0");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("session-server: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0].to_owned()
}
