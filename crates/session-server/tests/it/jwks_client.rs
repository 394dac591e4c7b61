//! A real JWKS consumer nobody here wrote: PyJWT's `PyJWKClient` with its
//! defaults (JWKS cached 300 s, one refetch per 30 s cooldown) verifies
//! access tokens all through a scheduled rotation, its cache clock moving
//! in step with the server's manual clock.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, OnceLock};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use session_core::ManualClock;
use session_server::testing::TestServer;
use time::Duration;

use crate::harness::*;

const CLIENT: &str = include_str!("jwks_client.py");

fn python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        test_venv(
            "pyjwt-venv",
            "import jwt, cryptography; from jwt import PyJWKClient",
            &["PyJWT[crypto]==2.15.1"],
        )
    })
}

struct Verifier {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Verifier {
    fn start(jwks_url: &str) -> Self {
        let mut child = Command::new(python())
            .arg("-c")
            .arg(CLIENT)
            .args([jwks_url, "session-server", "session-server"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and reads its answer (blocking: the client runs
    /// in its own process, the server on the runtime's other thread).
    fn ask(&mut self, cmd: &Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwk_client_with_its_defaults_never_misses_a_key_through_a_scheduled_rotation() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens must look current to PyJWT, which reads the wall clock: the
    // server's clock starts 30 min behind it and ends 4 min behind.
    let clock = Arc::new(ManualClock::new(
        time::OffsetDateTime::now_utc() - Duration::minutes(30),
    ));
    let server = TestServer::start_in_with_clock(dir.path(), clock.clone(), |raw| {
        raw.set("rate_limit_create", "0")?;
        raw.set("access_token_ttl", "1h")
    })
    .await
    .unwrap();
    let app = App {
        server,
        http: client(),
    };
    let jwks = app.public("/.well-known/jwks.json");
    let mut v = tokio::task::spawn_blocking(move || Verifier::start(&jwks))
        .await
        .unwrap();
    let check = async |v: Verifier, token: String| {
        tokio::task::spawn_blocking(move || {
            let mut v = v;
            let answer = v.ask(&json!({ "token": token }));
            (v, answer)
        })
        .await
        .unwrap()
    };
    let advance = |v: &mut Verifier, clock: &ManualClock, minutes: i64| {
        clock.advance(Duration::minutes(minutes));
        let answer = v.ask(&json!({ "advance": minutes * 60 }));
        assert_eq!(answer["ok"], true);
    };

    let first = app.admin_session("pyjwt").await;
    let (v1, answer) = check(v, first.access.clone()).await;
    v = v1;
    assert_eq!(answer["ok"], true, "{answer}");
    let old_kid = answer["kid"].as_str().unwrap().to_owned();

    advance(&mut v, &clock, 1);
    let r = app
        .admin_req(Method::POST, "/admin/v1/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    let new_kid = body["key"]["kid"].as_str().unwrap().to_owned();

    // Minute by minute through the prepublish window and past the
    // activation: every new token verifies, whichever key signed it.
    let mut seen_new = false;
    for _ in 0..18 {
        advance(&mut v, &clock, 1);
        let t = app.admin_session("pyjwt").await;
        let (v1, answer) = check(v, t.access).await;
        v = v1;
        assert_eq!(answer["ok"], true, "{answer}");
        seen_new |= answer["kid"] == new_kid.as_str();
    }
    assert!(seen_new, "the new key never signed");
    // The first token, signed by the now retired key, still verifies.
    let (v1, answer) = check(v, first.access).await;
    v = v1;
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["kid"], old_kid.as_str());

    // What publishing first spares verifiers. The client's cache has
    // expired (6 min), so this token makes it fetch the JWKS now; then an
    // immediate rotation makes a key sign that was never published. Within
    // its 30 s cooldown the client cannot refetch: it refuses the token.
    advance(&mut v, &clock, 6);
    let (v1, answer) = check(v, app.admin_session("pyjwt").await.access).await;
    v = v1;
    assert_eq!(answer["ok"], true, "{answer}");
    let r = app
        .admin_req(Method::POST, "/admin/v1/keys/rotate?immediate=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let t = app.admin_session("pyjwt").await;
    let (v1, refused) = check(v, t.access.clone()).await;
    v = v1;
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("Unable to find a signing key"),
        "{refused}"
    );
    // After the cooldown it refetches and accepts it.
    advance(&mut v, &clock, 1);
    let (_, answer) = check(v, t.access).await;
    assert_eq!(answer["ok"], true, "{answer}");
}
