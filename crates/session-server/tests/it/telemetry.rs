//! OpenTelemetry export: the real binary sends its request spans over
//! OTLP/HTTP JSON to a receiver on loopback, and no secret rides along.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// Every body POSTed to the receiver's `/v1/traces`, as text.
type Received = Arc<Mutex<Vec<String>>>;

async fn collect(
    State(received): State<Received>,
    headers: HeaderMap,
    body: String,
) -> (AxumStatus, &'static str) {
    let json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return (AxumStatus::UNSUPPORTED_MEDIA_TYPE, "{}");
    }
    received.lock().unwrap().push(body);
    (AxumStatus::OK, "{}")
}

/// A minimal OTLP/HTTP receiver on a free loopback port.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

/// The real binary, with its own telemetry settings.
struct Server(ServerProcess);

impl std::ops::Deref for Server {
    type Target = ServerProcess;

    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl Server {
    /// The binary with `SESSION_OTLP_ENDPOINT=otlp` and the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT=otel_env` (which must not enable export).
    async fn spawn(dir: &std::path::Path, otlp: &str, otel_env: &str) -> Self {
        Self(
            ServerProcess::spawn(
                dir,
                &[
                    ("SESSION_OTLP_ENDPOINT", otlp),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", otel_env),
                ],
            )
            .await,
        )
    }

    /// SIGTERM, then wait (bounded) for a clean exit.
    async fn terminate(&mut self) {
        self.0.terminate();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(exit) = self.0.child.try_wait().unwrap() {
                assert!(exit.success(), "server exit {exit}: {}", self.log());
                return;
            }
            if Instant::now() > deadline {
                panic!("server did not stop within 10 s: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An OTLP `AnyValue` as text (`intValue` is a string in OTLP JSON, but
/// accept a number too).
fn any_value(v: &Value) -> Option<String> {
    let (_, inner) = v.as_object()?.iter().next()?;
    match inner {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attributes(obj: &Value) -> Vec<(String, String)> {
    obj["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| Some((kv["key"].as_str()?.to_owned(), any_value(&kv["value"])?)))
        .collect()
}

/// One exported span, flattened.
#[derive(Debug)]
struct Exported {
    /// `service.name` of its resource.
    service: String,
    name: String,
    attrs: Vec<(String, String)>,
}

/// Every exported span of every payload.
fn spans(payloads: &[String]) -> Vec<Exported> {
    let mut out = Vec::new();
    for body in payloads {
        let doc: Value = serde_json::from_str(body).expect("OTLP JSON payload");
        for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
            let service = attributes(&rs["resource"])
                .into_iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v)
                .unwrap_or_default();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push(Exported {
                        service: service.clone(),
                        name: span["name"].as_str().unwrap_or_default().to_owned(),
                        attrs: attributes(span),
                    });
                }
            }
        }
    }
    out
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Opens a session through the admin API and rotates it once (bearer
/// transport): both answers' tokens.
async fn open_and_rotate(server: &Server, admin_token: &str) -> (Tokens, Tokens) {
    let http = client();
    let r = http
        .post(format!("{}/admin/v1/sessions", server.admin))
        .bearer_auth(admin_token)
        .json(&json!({ "user_id": "u1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let first = Tokens::from_body(r.json().await.unwrap());
    let r = http
        .post(format!("{}/v1/auth/refresh", server.public))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "refresh_token": first.refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let second = Tokens::from_body(r.json().await.unwrap());
    (first, second)
}

#[tokio::test]
async fn request_spans_reach_the_otlp_endpoint_with_route_status_and_outcome_but_no_secret() {
    let (otlp, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::spawn(dir.path(), &otlp, "").await;
    let admin_token = server.admin_token();
    let http = client();
    let (first, second) = open_and_rotate(&server, &admin_token).await;

    let r = http
        .get(format!("{}/v1/session", server.public))
        .bearer_auth(&second.access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!(
            "{}/admin/v1/sessions/{}",
            server.admin, second.session_id
        ))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bogus_refresh = "bogus-refresh-token-value-0123456789abcdef";
    let r = http
        .post(format!("{}/v1/auth/refresh", server.public))
        .header("X-Session-Transport", "bearer")
        .json(&json!({ "refresh_token": bogus_refresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    server.terminate().await;
    let payloads = received.lock().unwrap().clone();
    assert!(!payloads.is_empty(), "nothing exported: {}", server.log());
    let spans = spans(&payloads);

    let refreshed = spans
        .iter()
        .find(|Exported { attrs: a, .. }| {
            attr(a, "http.route") == Some("/v1/auth/refresh")
                && attr(a, "http.response.status_code") == Some("200")
        })
        .unwrap_or_else(|| panic!("no successful refresh span in {spans:?}"));
    let Exported {
        service,
        name,
        attrs,
    } = refreshed;
    assert_eq!(service, "session-server");
    assert_eq!(name, "POST /v1/auth/refresh");
    assert_eq!(attr(attrs, "http.request.method"), Some("POST"));
    let outcome = attr(attrs, "outcome").expect("an outcome attribute");
    assert_eq!(outcome, "rotated");

    let failed = spans
        .iter()
        .find(|Exported { attrs: a, .. }| {
            attr(a, "http.route") == Some("/v1/auth/refresh")
                && attr(a, "http.response.status_code") == Some("401")
        })
        .unwrap_or_else(|| panic!("no failed refresh span in {spans:?}"));
    assert_eq!(attr(&failed.attrs, "outcome"), Some("invalid"));

    assert!(
        spans.iter().any(|Exported { attrs: a, .. }| {
            attr(a, "http.route") == Some("/admin/v1/sessions/{id}")
                && attr(a, "http.response.status_code") == Some("200")
        }),
        "the route template, not the path, names a parameterised route: {spans:?}"
    );

    let secrets = [
        admin_token.as_str(),
        first.access.as_str(),
        first.refresh.as_str(),
        first.csrf.as_str(),
        second.access.as_str(),
        second.refresh.as_str(),
        second.csrf.as_str(),
        bogus_refresh,
    ];
    for body in &payloads {
        for secret in secrets {
            assert!(!body.contains(secret), "a secret reached the trace export");
        }
    }
    let raw_path = format!("/admin/v1/sessions/{}", second.session_id);
    for Exported { name, attrs, .. } in &spans {
        assert!(!name.contains(&raw_path));
        for (k, v) in attrs {
            assert!(!v.contains(&raw_path), "raw path in {k}");
            assert!(
                !k.to_ascii_lowercase().contains("authorization")
                    && !k.to_ascii_lowercase().contains("cookie"),
                "header attribute {k}"
            );
        }
    }
}

#[tokio::test]
async fn without_session_otlp_endpoint_nothing_is_exported_even_with_otel_variables_set() {
    let (otlp, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    // Empty is unset; the SDK's own variable alone must not turn export on.
    let mut server = Server::spawn(dir.path(), "", &otlp).await;
    for _ in 0..3 {
        let r = client()
            .get(format!("{}/healthz", server.public))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    server.terminate().await;
    assert!(
        received.lock().unwrap().is_empty(),
        "spans were exported although SESSION_OTLP_ENDPOINT is unset"
    );
}

#[tokio::test]
async fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(dir.path(), &[("SESSION_LOG_FORMAT", "text")]).await;
    let status = client()
        .get(format!("{}/v1/session", server.public))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let log = server.log();
    assert!(log.contains("INFO"), "the server logged nothing: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape codes in a log file: {log:?}"
    );
}

/// Stderr piped to another process (systemd's journal, a container
/// runtime, `| tee`) is no terminal either: in both formats the lines the
/// server logs before it stops on an error carry no colour codes, and the
/// JSON ones stay parseable.
#[tokio::test]
async fn logs_written_to_a_pipe_carry_no_colour_codes() {
    // A taken public port: the server logs "starting", then stops on the bind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap();
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_session-server"))
            .env("SESSION_DATA_DIR", dir.path().join("data"))
            .env("SESSION_PUBLIC_ADDR", taken.to_string())
            .env("SESSION_ADMIN_ADDR", "127.0.0.1:0")
            .env("SESSION_LOG_FORMAT", format)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{format}: {stderr}");
        assert!(
            stderr.contains("starting") && stderr.contains("stopped on error"),
            "{format}: the server logged nothing through the pipe: {stderr}"
        );
        assert!(
            !stderr.contains('\u{1b}'),
            "{format}: ANSI escape codes in piped logs: {stderr:?}"
        );
        if format == "json" {
            for line in stderr
                .lines()
                .filter(|l| !l.starts_with("session-server: error:"))
            {
                serde_json::from_str::<Value>(line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"));
            }
        }
    }
}

/// With one worker (`TOKIO_WORKER_THREADS=1`, as on a one-CPU container)
/// the binary runs tokio's current-thread scheduler: it still issues and
/// rotates tokens, its batch exporter (a task on that same thread) still
/// sends the spans, and SIGTERM still flushes them and stops it cleanly.
#[tokio::test]
async fn one_worker_serves_exports_and_stops_on_the_current_thread_scheduler() {
    let (otlp, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server(
        ServerProcess::spawn(
            dir.path(),
            &[
                ("SESSION_OTLP_ENDPOINT", otlp.as_str()),
                ("TOKIO_WORKER_THREADS", "1"),
                ("RUST_LOG", "info"),
            ],
        )
        .await,
    );
    open_and_rotate(&server, &server.admin_token()).await;
    let log = server.log();
    assert!(
        log.contains("current_thread"),
        "the start-up line does not name the current-thread scheduler: {log}"
    );

    server.terminate().await;
    let spans = spans(&received.lock().unwrap().clone());
    assert!(
        spans.iter().any(|Exported { attrs: a, .. }| {
            attr(a, "http.route") == Some("/v1/auth/refresh")
                && attr(a, "http.response.status_code") == Some("200")
        }),
        "the refresh span was not exported: {spans:?}"
    );
}
