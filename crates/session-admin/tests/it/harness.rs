//! A running server, the CLI as a child process, and a helper per public
//! endpoint the tests need.

use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{Value, json};
use session_server::testing::TestServer;
use tokio::io::AsyncWriteExt;

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_session-admin");

/// A password every test user gets unless a test says otherwise.
pub(crate) const PASSWORD: &str = "correct horse battery staple";

/// One finished run of the CLI.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    #[track_caller]
    pub(crate) fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "expected success; stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        &self.stdout
    }

    /// Asserts exit 0 and parses stdout as one JSON document.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {out}"))
    }

    /// Asserts the exit code and that stderr is one `error: …` line.
    #[track_caller]
    pub(crate) fn fails(&self, code: i32) -> &str {
        assert_eq!(
            self.code, code,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line on stderr, got: {}",
            self.stderr
        );
        assert!(lines[0].starts_with("error: "), "{}", self.stderr);
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("backtrace"));
        lines[0]
    }
}

/// A server and a way to run the CLI against it.
pub(crate) struct Env {
    pub(crate) server: TestServer,
    http: reqwest::Client,
}

/// Tokens of one bearer-transport login.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub(crate) session_id: String,
    pub(crate) access_token: String,
}

impl Env {
    /// Starts a server with default settings (SQLite in a temp data dir).
    pub(crate) async fn start() -> Self {
        let server = TestServer::start().await.expect("the test server starts");
        Self {
            server,
            http: reqwest::Client::new(),
        }
    }

    /// Starts a server whose audit log is the PostgreSQL database `url`.
    pub(crate) async fn start_with_audit(url: &str) -> Self {
        let url = url.to_owned();
        let server = TestServer::start_with(move |raw| raw.set("audit", url))
            .await
            .expect("the test server starts");
        Self {
            server,
            http: reqwest::Client::new(),
        }
    }

    /// The CLI pointed at this server, finding the token the way an
    /// operator's does: `<data dir>/admin-token` via `SESSION_DATA_DIR`.
    pub(crate) fn cli(&self) -> tokio::process::Command {
        let mut cmd = bare_cli();
        cmd.env("SESSION_ADMIN_URL", self.server.admin_url())
            .env("SESSION_DATA_DIR", self.server.data_dir());
        cmd
    }

    /// Runs the CLI with `args` and nothing on stdin.
    pub(crate) async fn run(&self, args: &[&str]) -> Run {
        run(self.cli(), args, None).await
    }

    /// Runs the CLI with `args` and `input` on stdin (not a terminal).
    pub(crate) async fn run_with_stdin(&self, args: &[&str], input: &str) -> Run {
        run(self.cli(), args, Some(input)).await
    }

    /// Adds a built-in user through the CLI.
    pub(crate) async fn add_user(&self, name: &str) {
        self.run_with_stdin(&["users", "add", name], &format!("{PASSWORD}\n"))
            .await
            .ok();
    }

    /// `POST /v1/auth/login` in bearer transport.
    pub(crate) async fn login(&self, name: &str, password: &str) -> Result<Login, StatusCode> {
        let res = self
            .http
            .post(format!("{}/v1/auth/login", self.server.public_url()))
            .header("X-Session-Transport", "bearer")
            .json(&json!({ "username": name, "password": password }))
            .send()
            .await
            .unwrap();
        if !res.status().is_success() {
            return Err(res.status());
        }
        let body: Value = res.json().await.unwrap();
        Ok(Login {
            session_id: body["session_id"].as_str().unwrap().to_owned(),
            access_token: body["access_token"].as_str().unwrap().to_owned(),
        })
    }

    /// `GET /v1/session` with an access token: the status.
    pub(crate) async fn whoami(&self, login: &Login) -> StatusCode {
        self.http
            .get(format!("{}/v1/session", self.server.public_url()))
            .header("X-Session-Transport", "bearer")
            .bearer_auth(&login.access_token)
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// The CLI with none of the operator's environment.
pub(crate) fn bare_cli() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    for var in [
        "SESSION_ADMIN_URL",
        "SESSION_ADMIN_TOKEN",
        "SESSION_DATA_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("TZ", "UTC").kill_on_drop(true);
    cmd
}

/// Runs `cmd` with `args`; stdin is `input`, or empty.
pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    args: &[&str],
    input: Option<&str>,
) -> Run {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).await.unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The data rows of a human table (the header dropped).
pub(crate) fn rows(table: &str) -> Vec<&str> {
    table.lines().skip(1).collect()
}
