//! The shipped nginx forward-auth files (`deploy/nginx/`), rendered with
//! only their address placeholders filled in, run by a real nginx in front
//! of the real `session-server` binary and a stub app, all on loopback.
//!
//! nginx is required: a machine without it fails this test (CI installs
//! Debian's `nginx-light` in `.ci/run`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::{Json, Router};
use reqwest::{Client, StatusCode};

use crate::harness::free_port;
use serde_json::{Value, json};

/// How long any one process may take to start answering.
const START_BOUND: Duration = Duration::from_secs(15);
/// How long a revocation may take to reach nginx's answers.
const REVOCATION_BOUND: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Processes that die with the test, even when an assertion fails.

struct Running {
    name: &'static str,
    child: Child,
    /// How to ask it to stop before killing it (nginx's master must stop
    /// its workers itself; a SIGKILLed master leaves them listening).
    stop: Option<Command>,
}

impl Running {
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        if let Some(stop) = &mut self.stop {
            let _ = stop
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if self.exited().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "forward_auth: {} did not stop in 5 s; killing it",
                self.name
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_program() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("nginx"))
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|candidate| candidate.is_file());
    match found {
        Some(program) => program,
        None if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!(
                "nginx not found on PATH or at /usr/sbin/nginx: install nginx (apt-get install nginx-light)"
            )
        }
        None => panic!(
            "nginx not found on PATH or at /usr/sbin/nginx; this test needs a real nginx: \
             install nginx (apt-get install nginx-light)"
        ),
    }
}

/// A shipped nginx file with only the address placeholders filled in.
fn render(file: &str, listen: &str, session: &str, app: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/nginx")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let out = text
        .replace("${LISTEN}", listen)
        .replace("${SESSION_PUBLIC_UPSTREAM}", session)
        .replace("${APP_UPSTREAM}", app);
    assert!(
        !out.contains("${"),
        "{file} has a placeholder this test does not know"
    );
    out
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

// ---------------------------------------------------------------------------
// The stub app: echoes what nginx forwarded to it.

type Seen = Arc<Mutex<Vec<Value>>>;

fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect()
}

async fn echo(
    State(seen): State<Seen>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let echoed = json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "x_session_user": header_values(&headers, "x-session-user"),
        "x_session_id": header_values(&headers, "x-session-id"),
        "underscored": header_values(&headers, "x_session_user"),
        "body_len": body.len(),
    });
    seen.lock().unwrap().push(echoed.clone());
    Json(echoed)
}

async fn start_app() -> (String, Seen) {
    let seen = Seen::default();
    let router = Router::new().fallback(echo).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (addr.to_string(), seen)
}

// ---------------------------------------------------------------------------
// The whole set-up.

struct Stack {
    // Field order is drop order: nginx stops before the server.
    nginx: Running,
    server: Running,
    base: String,
    admin: String,
    admin_token: String,
    seen: Seen,
    http: Client,
    _dir: tempfile::TempDir,
}

async fn wait_until_listening(process: &mut Running, addr: &str, log: &Path) {
    let deadline = Instant::now() + START_BOUND;
    loop {
        if let Some(status) = process.exited() {
            panic!(
                "{} exited with {status} before listening on {addr}:\n{}",
                process.name,
                tail(log)
            );
        }
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {addr} within {START_BOUND:?}:\n{}",
            process.name,
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Stack {
    async fn start() -> Self {
        let nginx = nginx_program();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let prefix = dir.path().join("nginx");
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();

        let public = format!("127.0.0.1:{}", free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let server_log = dir.path().join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_session-server"))
            .env("SESSION_DATA_DIR", &data)
            .env("SESSION_PUBLIC_ADDR", &public)
            .env("SESSION_ADMIN_ADDR", &admin)
            .env("SESSION_TRUSTED_PROXIES", "127.0.0.1/32")
            .env("SESSION_RATE_LIMIT_CREATE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&server_log).unwrap())
            .spawn()
            .unwrap();
        let mut server = Running {
            name: "session-server",
            child,
            stop: None,
        };
        wait_until_listening(&mut server, &public, &server_log).await;
        wait_until_listening(&mut server, &admin, &server_log).await;
        let admin_token = std::fs::read_to_string(data.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();

        let (app, seen) = start_app().await;

        let listen = format!("127.0.0.1:{}", free_port());
        for file in ["nginx.conf", "session-auth.conf"] {
            std::fs::write(prefix.join(file), render(file, &listen, &public, &app)).unwrap();
        }
        // The shipped nginx.conf says `daemon off;` itself: nginx stays in
        // the foreground as this child.
        let args = |command: &mut Command| {
            command
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(prefix.join("nginx.conf"))
                .arg("-e")
                .arg(prefix.join("error.log"));
        };
        let mut test = Command::new(&nginx);
        args(&mut test);
        let checked = test.arg("-t").output().unwrap();
        assert!(
            checked.status.success(),
            "nginx -t refused the rendered shipped files: {}",
            String::from_utf8_lossy(&checked.stderr)
        );
        let mut run = Command::new(&nginx);
        args(&mut run);
        let mut stop = Command::new(&nginx);
        args(&mut stop);
        stop.args(["-s", "stop"]);
        let child = run
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Running {
            name: "nginx",
            child,
            stop: Some(stop),
        };
        wait_until_listening(&mut nginx, &listen, &prefix.join("error.log")).await;

        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self {
            nginx,
            server,
            base: format!("http://{listen}"),
            admin: format!("http://{admin}"),
            admin_token,
            seen,
            http,
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn app_requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// A session opened by a trusted backend: (access token, session id).
    async fn open_session(&self, user_id: &str) -> (String, String) {
        let r = self
            .http
            .post(format!("{}/admin/v1/sessions", self.admin))
            .bearer_auth(&self.admin_token)
            .json(&json!({ "user_id": user_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["session_id"].as_str().unwrap().to_owned(),
        )
    }

    async fn revoke(&self, session_id: &str) {
        let r = self
            .http
            .delete(format!("{}/admin/v1/sessions/{session_id}", self.admin))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

/// The app answered 200 through nginx; what it saw.
async fn through(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

fn assert_login_redirect(r: &reqwest::Response, next: &str) {
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(
        r.headers()["location"],
        format!("/login?next={next}").as_str()
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn nginx_with_the_shipped_config_forwards_only_verified_sessions() {
    let mut stack = Stack::start().await;

    // Anonymous browser: to the login page; the app saw nothing.
    let r = stack.get("/app/page?x=1").send().await.unwrap();
    assert_login_redirect(&r, "/app/page?x=1");
    // Anonymous API client: the 401 itself.
    let r = stack
        .get("/app/page")
        .header("X-Session-Transport", "bearer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    // A forged identity without a session changes nothing.
    let r = stack
        .get("/app/x")
        .header("X-Session-User", "admin")
        .send()
        .await
        .unwrap();
    assert_login_redirect(&r, "/app/x");
    assert_eq!(stack.app_requests(), 0, "the app saw no anonymous request");

    // The login page is reachable without a session, minus forged headers.
    let seen = through(
        stack
            .get("/login")
            .header("X-Session-User", "admin")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["x_session_user"], json!([]));
    // The verify location is internal.
    let r = stack.get("/_session_verify").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The session service's own public API passes through unprotected.
    let r = stack.get("/.well-known/jwks.json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let jwks: Value = r.json().await.unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty());

    let (access, session_id) = stack.open_session("alice").await;
    let verified = json!({ "user": ["alice"], "sid": [session_id] });
    let identity =
        |seen: &Value| json!({ "user": seen["x_session_user"], "sid": seen["x_session_id"] });

    // Bearer token.
    let seen = through(
        stack
            .get("/app/x?y=2")
            .bearer_auth(&access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(identity(&seen), verified);
    assert_eq!(seen["uri"], "/app/x?y=2");
    // Access cookie.
    let cookie = format!("__Host-session={access}");
    let seen = through(
        stack
            .get("/app/x")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(identity(&seen), verified);

    // A client's own X-Session-* headers never reach the app.
    for (name, value) in [
        ("X-Session-User", "mallory"),
        ("X-Session-Id", "forged"),
        ("X_Session_User", "mallory"),
    ] {
        let seen = through(
            stack
                .get("/app/x")
                .header("cookie", &cookie)
                .header(name, value)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(identity(&seen), verified, "{name}: {value} was not dropped");
        assert_eq!(seen["underscored"], json!([]));
    }

    // A POST with a body reaches the app whole (only the verify
    // subrequest drops it).
    let seen = through(
        stack
            .http
            .post(format!("{}/app/upload", stack.base))
            .bearer_auth(&access)
            .body(vec![b'x'; 100 * 1024])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_len"], 100 * 1024);
    assert_eq!(identity(&seen), verified);

    // Revocation: refused through nginx within the bound.
    stack.revoke(&session_id).await;
    let revoked_at = Instant::now();
    loop {
        let r = stack
            .get("/app/x")
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::FOUND {
            assert_login_redirect(&r, "/app/x");
            break;
        }
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "only 200 until the revocation lands"
        );
        assert!(
            revoked_at.elapsed() < REVOCATION_BOUND,
            "a revoked session still reached the app after {REVOCATION_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = stack
        .get("/app/x")
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let before = stack.app_requests();

    // Fail closed: with the session service gone, a valid session gets 500,
    // never the app.
    let (other, _) = stack.open_session("bob").await;
    through(
        stack
            .get("/app/x")
            .bearer_auth(&other)
            .send()
            .await
            .unwrap(),
    )
    .await;
    stack.server.stop();
    let r = stack
        .get("/app/x")
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        stack.app_requests(),
        before + 1,
        "the app saw no request after the revocation or the outage"
    );

    stack.nginx.stop();
    assert!(stack.nginx.exited().is_some(), "nginx stopped");
}

#[tokio::test]
async fn nginx_forwards_a_dpop_bound_session_only_with_a_proof_for_the_original_request() {
    let stack = Stack::start().await;
    let key = crate::dpop::Key::new("EdDSA");
    let r = stack
        .http
        .post(format!("{}/admin/v1/sessions", stack.admin))
        .bearer_auth(&stack.admin_token)
        .json(&json!({ "user_id": "dpop-alice", "dpop_jkt": key.jkt }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let url = format!("{}/app/orders", stack.base);
    let call = |proof: Option<String>, scheme: &str| {
        let mut r = stack
            .get("/app/orders?page=2")
            .header("X-Session-Transport", "bearer")
            .header("Authorization", format!("{scheme} {access}"));
        if let Some(p) = proof {
            r = r.header("DPoP", p);
        }
        r.send()
    };

    let seen = through(
        call(Some(key.proof("GET", &url, Some(&access))), "DPoP")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["x_session_user"], json!(["dpop-alice"]));
    let before = stack.app_requests();
    for (case, proof, scheme) in [
        ("no proof", None, "DPoP"),
        (
            "a proof for another URL",
            Some(key.proof("GET", &format!("{}/app/admin", stack.base), Some(&access))),
            "DPoP",
        ),
        (
            "a proof for another method",
            Some(key.proof("POST", &url, Some(&access))),
            "DPoP",
        ),
        (
            "the bound token as Bearer",
            Some(key.proof("GET", &url, Some(&access))),
            "Bearer",
        ),
    ] {
        let r = call(proof, scheme).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{case}");
    }
    assert_eq!(stack.app_requests(), before, "the app saw none of them");
}
