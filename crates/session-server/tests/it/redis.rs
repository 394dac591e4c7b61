//! The server on Redis: several instances, instant revocation across them,
//! and failing closed while Redis is away.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::*;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn redis_server_bin() -> String {
    std::env::var("SESSION_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

async fn on_redis(url: &str) -> App {
    let url = url.to_owned();
    App::start_with(move |raw| {
        raw.set("master_key", MASTER_KEY)?;
        raw.set("store", url)
    })
    .await
}

/// A second instance sharing the first one's keys and token secret (as
/// every instance of one deployment must) and its Redis.
async fn sibling(of: &App, url: &str) -> App {
    let url = url.to_owned();
    let server = session_server::testing::TestServer::start_in(of.server.data_dir(), move |raw| {
        raw.set("rate_limit_refresh", "0")?;
        raw.set("master_key", MASTER_KEY)?;
        raw.set("store", url)
    })
    .await
    .unwrap();
    App {
        server,
        http: client(),
    }
}

#[tokio::test]
async fn a_revocation_on_one_instance_is_felt_by_another_at_once() {
    let a = on_redis(&redis_url()).await;
    let b = sibling(&a, &redis_url()).await;
    let ready: serde_json::Value = b
        .http
        .get(b.public("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store"], "redis");
    let mut waits = Vec::new();
    for _ in 0..100 {
        let t = a.admin_session("prop-user").await;
        let verify = || {
            b.http
                .get(b.public("/v1/auth/verify"))
                .bearer_auth(&t.access)
                .send()
        };
        // B has seen and cached the token as valid.
        assert_eq!(verify().await.unwrap().status(), StatusCode::OK);
        assert_eq!(verify().await.unwrap().status(), StatusCode::OK);
        assert_eq!(a.admin_revoke(&t.session_id).await, StatusCode::NO_CONTENT);
        let started = Instant::now();
        loop {
            if verify().await.unwrap().status() == StatusCode::UNAUTHORIZED {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "revocation never reached B"
            );
        }
        waits.push(started.elapsed());
    }
    waits.sort();
    println!(
        "propagation over {} revocations: p50 {:?}, p99 {:?}",
        waits.len(),
        waits[waits.len() / 2],
        waits[waits.len() * 99 / 100]
    );
}

#[tokio::test]
async fn refresh_rotation_and_reuse_detection_hold_across_instances() {
    let a = on_redis(&redis_url()).await;
    let b = sibling(&a, &redis_url()).await;
    let t = a.admin_session("multi").await;
    let r = b.refresh_bearer(&t.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let next = Tokens::from_body(r.json().await.unwrap());
    // Grace replay on the other instance gives the same successor.
    let again: serde_json::Value = a.refresh_bearer(&t.refresh).await.json().await.unwrap();
    assert_eq!(again["refresh_token"], next.refresh.as_str());
    let n2: serde_json::Value = a.refresh_bearer(&next.refresh).await.json().await.unwrap();
    assert!(n2["refresh_token"].is_string());
    // Two generations back: reuse, felt by both.
    let r = b.refresh_bearer(&t.refresh).await;
    assert_eq!(error_code(r).await.1, "refresh_token_reused");
    assert_eq!(
        a.whoami(n2["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        b.whoami(n2["access_token"].as_str().unwrap())
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

struct RedisProc {
    child: Child,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

impl RedisProc {
    fn start(port: u16, dir: tempfile::TempDir) -> Self {
        let child = Command::new(redis_server_bin())
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            dir: Some(dir),
        }
    }

    fn stop(mut self) -> (u16, tempfile::TempDir) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        (self.port, self.dir.take().expect("dir"))
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn while_redis_is_down_requests_get_503_and_service_resumes_by_itself() {
    let redis = RedisProc::start(free_port(), tempfile::tempdir().unwrap());
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let app = on_redis(&url).await;
    let kept = app.admin_session("kept").await;
    let doomed = app.admin_session("doomed").await;
    assert_eq!(app.whoami(&kept.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.admin_revoke(&doomed.session_id).await,
        StatusCode::NO_CONTENT
    );

    let (port, dir) = redis.stop();
    // Every answer while Redis is away is a refusal: 503 (or 401 for the
    // revoked session), never a 200 for something unchecked, never a 500.
    let started = Instant::now();
    let mut saw_503 = false;
    while started.elapsed() < Duration::from_secs(3) {
        for (who, expect_ok) in [(&kept, false), (&doomed, false)] {
            let s = app
                .http
                .get(app.public("/v1/auth/verify"))
                .bearer_auth(&who.access)
                .send()
                .await
                .unwrap()
                .status();
            assert_ne!(s, StatusCode::INTERNAL_SERVER_ERROR);
            if who.session_id == doomed.session_id {
                assert_ne!(
                    s,
                    StatusCode::OK,
                    "a revoked session passed while Redis was down"
                );
            }
            if s == StatusCode::SERVICE_UNAVAILABLE {
                saw_503 = true;
            }
            let _ = expect_ok;
        }
        let r = app.refresh_bearer(&kept.refresh).await;
        assert!(
            matches!(r.status(), StatusCode::SERVICE_UNAVAILABLE),
            "refresh: {}",
            r.status()
        );
        assert_eq!(error_code(r).await.1, "store_unavailable");
        let r = app.http.get(app.public("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        saw_503,
        "the feed drop forced store lookups, which failed closed"
    );

    let _redis = RedisProc::start(port, dir);
    let started = Instant::now();
    loop {
        let r = app
            .http
            .get(app.public("/v1/auth/verify"))
            .bearer_auth(&kept.access)
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no recovery: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.whoami(&kept.access).await.status(),
        StatusCode::OK,
        "Redis kept the session"
    );
    assert_eq!(
        app.http
            .get(app.public("/v1/auth/verify"))
            .bearer_auth(&doomed.access)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh_bearer(&kept.refresh).await.status(),
        StatusCode::OK
    );
    let _ = json!({});
}

#[tokio::test]
async fn the_server_runs_on_a_redis_cluster() {
    let nodes = std::env::var("REDIS_CLUSTER_NODES").expect(
        "REDIS_CLUSTER_NODES names a 3-node cluster; run the tests through `cargo xtask test`",
    );
    let url = format!("redis+cluster://{nodes}");
    let a = on_redis(&url).await;
    let b = sibling(&a, &url).await;
    let ready: serde_json::Value = a
        .http
        .get(a.public("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store"], "redis-cluster");
    let t = a.bearer_session("cluster-alice").await;
    assert_eq!(
        b.login_bearer("cluster-alice", PASSWORD).await.status(),
        StatusCode::OK,
        "users are shared"
    );
    let next = b.refresh_bearer(&t.refresh).await;
    assert_eq!(next.status(), StatusCode::OK);
    let next = Tokens::from_body(next.json().await.unwrap());
    assert_eq!(a.whoami(&next.access).await.status(), StatusCode::OK);
    let r = a
        .admin_req(Method::DELETE, "/admin/v1/users/cluster-alice/sessions")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["revoked"], 2);
    let started = Instant::now();
    while b.whoami(&next.access).await.status() != StatusCode::UNAUTHORIZED {
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "revocation reached the other instance"
        );
    }
}

#[tokio::test]
async fn a_server_started_while_redis_is_down_answers_503_then_serves_once_it_is_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    // Nothing listens on the port. The real binary starts anyway: it
    // listens, says it is alive but not ready, refuses what needs the
    // store with 503, and reconnects by itself (contract v1.1).
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(
        data.path(),
        &[
            ("SESSION_STORE", url.as_str()),
            ("SESSION_MASTER_KEY", MASTER_KEY),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{}/readyz", server.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await.1, "store_unavailable");
    let r = http
        .post(format!("{}/v1/auth/login", server.public))
        .json(&serde_json::json!({"username": "late-user", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r).await.1, "store_unavailable");
    let r = http
        .get(format!("{}/.well-known/jwks.json", server.public))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let token = server.admin_token();
    let r = http
        .get(format!(
            "{}/admin/v1/users/late-user/sessions",
            server.admin
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(r).await.1, "store_unavailable");

    let _redis = RedisProc::start(port, tempfile::tempdir().unwrap());
    // It reconnects by itself (backoff at most 5 s): no restart.
    let started = Instant::now();
    loop {
        let r = http
            .get(format!("{}/readyz", server.public))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never became ready: {}\n{}",
            r.status(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .post(format!("{}/admin/v1/users", server.admin))
        .bearer_auth(&token)
        .json(&serde_json::json!({"username": "late-user", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(format!("{}/v1/auth/login", server.public))
        .header("X-Session-Transport", "bearer")
        .json(&serde_json::json!({"username": "late-user", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap();
    let r = http
        .get(format!("{}/v1/session", server.public))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let keys: serde_json::Value = http
        .get(format!("{}/.well-known/jwks.json", server.public))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!keys["keys"].as_array().unwrap().is_empty());
    // The feed subscribed too: the cache is in use again.
    let started = Instant::now();
    loop {
        let ready: serde_json::Value = http
            .get(format!("{}/readyz", server.public))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["validation_mode"] == "cached" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_shared_store_without_a_master_key_still_stops_the_server_at_start() {
    // Waiting for the store is for the store; a configuration error stops
    // the start at once, even while the store is unreachable.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_session-server"))
        .env("SESSION_DATA_DIR", dir.path())
        .env(
            "SESSION_STORE",
            format!("redis://127.0.0.1:{}/0", free_port()),
        )
        .env("SESSION_PUBLIC_ADDR", "127.0.0.1:0")
        .env("SESSION_ADMIN_ADDR", "127.0.0.1:0")
        .env_remove("SESSION_MASTER_KEY")
        .env_remove("SESSION_MASTER_KEY_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SESSION_MASTER_KEY"), "{stderr}");
}

#[test]
fn a_bad_store_url_still_stops_the_server_at_start_with_one_line() {
    let line = start_error_line(&[("SESSION_STORE", "redis://127.0.0.1:notaport/0")]);
    assert!(line.contains("Redis"), "{line}");
}

/// Sends one command to Redis over a raw connection and returns its reply.
fn redis_command(port: u16, command: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("{command}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn validation_mode(app: &App) -> String {
    app.readyz().await["validation_mode"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test]
async fn a_revocation_published_while_the_feed_reconnects_is_never_served_from_the_cache() {
    let redis = RedisProc::start(free_port(), tempfile::tempdir().unwrap());
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let a = on_redis(&url).await;
    let b = sibling(&a, &url).await;
    for _ in 0..20 {
        let started = Instant::now();
        while validation_mode(&a).await != "cached" {
            assert!(started.elapsed() < Duration::from_secs(10), "feed never up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = a.admin_session("gap").await;
        let verify = || {
            a.http
                .get(a.public("/v1/auth/verify"))
                .bearer_auth(&t.access)
                .send()
        };
        assert_eq!(verify().await.unwrap().status(), StatusCode::OK);
        assert_eq!(verify().await.unwrap().status(), StatusCode::OK, "cached");
        // Every feed drops at once (as in a Redis failover); B revokes
        // while A's feed is resubscribing, so A may never see the publish.
        let killed = redis_command(redis.port, "CLIENT KILL TYPE pubsub");
        assert!(killed.starts_with(':'), "{killed}");
        assert_eq!(b.admin_revoke(&t.session_id).await, StatusCode::NO_CONTENT);
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(300) {
            let s = verify().await.unwrap().status();
            assert_ne!(
                s,
                StatusCode::OK,
                "a revoked session was served from A's cache"
            );
        }
    }
}
