//! Several server processes on one real Redis share one key ring and one
//! token secret: tokens verify everywhere, a rotation through any instance
//! is in force on every other within a second, and no instance ever signs
//! with a key another instance does not publish.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::*;

const ADMIN_TOKEN: &str = "fleet-admin-token-for-tests-0123456789";

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

struct Fleet {
    servers: Vec<ServerProcess>,
    _dirs: Vec<tempfile::TempDir>,
    http: reqwest::Client,
}

/// `n` processes started at the same moment on one Redis prefix of their
/// own, each with its own data directory and the same master key.
async fn fleet(n: usize, extra: &[(&str, &str)]) -> Fleet {
    fleet_on(&redis_url(), n, extra).await
}

/// [`fleet`] on the store at `url`.
async fn fleet_on(url: &str, n: usize, extra: &[(&str, &str)]) -> Fleet {
    let prefix = format!(
        "fleet-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut env: Vec<(&str, &str)> = vec![
        ("SESSION_STORE", url),
        ("SESSION_REDIS_PREFIX", prefix.as_str()),
        ("SESSION_MASTER_KEY", MASTER_KEY),
        ("SESSION_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SESSION_RATE_LIMIT_CREATE", "0"),
    ];
    env.extend_from_slice(extra);
    let servers =
        futures::future::join_all(dirs.iter().map(|d| ServerProcess::spawn(d.path(), &env))).await;
    Fleet {
        servers,
        _dirs: dirs,
        http: client(),
    }
}

impl Fleet {
    async fn session(&self, i: usize) -> String {
        let r = self
            .http
            .post(format!("{}/admin/v1/sessions", self.servers[i].admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "user_id": format!("fleet-user-{i}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let body: Value = r.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn verify(&self, i: usize, access: &str) -> StatusCode {
        self.http
            .get(format!("{}/v1/session", self.servers[i].public))
            .bearer_auth(access)
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn jwks(&self, i: usize) -> Vec<String> {
        let body: Value = self
            .http
            .get(format!("{}/.well-known/jwks.json", self.servers[i].public))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn rotate(&self, i: usize, query: &str) -> Value {
        let r = self
            .http
            .request(
                Method::POST,
                format!("{}/admin/v1/keys/rotate{query}", self.servers[i].admin),
            )
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json().await.unwrap()
    }
}

fn kid_of(access: &str) -> String {
    use base64::Engine as _;
    let head = access.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn instances_started_together_share_one_ring_and_verify_each_others_tokens() {
    let f = fleet(3, &[]).await;
    let first = f.jwks(0).await;
    assert_eq!(first.len(), 1, "{first:?}");
    for i in 1..3 {
        assert_eq!(f.jwks(i).await, first, "instance {i} has another ring");
    }
    for from in 0..3 {
        let access = f.session(from).await;
        for on in 0..3 {
            assert_eq!(
                f.verify(on, &access).await,
                StatusCode::OK,
                "{from} -> {on}"
            );
        }
    }
}

#[tokio::test]
async fn a_rotation_through_one_instance_is_in_force_on_every_other_within_a_second() {
    let f = fleet(3, &[("SESSION_KEY_ROTATION", "0")]).await;
    let mut waits = Vec::new();
    for round in 0..50 {
        let old = f.jwks(0).await;
        let key = f.rotate(round % 3, "?immediate=true").await;
        let new_kid = key["key"]["kid"].as_str().unwrap().to_owned();
        let started = Instant::now();
        for i in 0..3 {
            loop {
                let kids = f.jwks(i).await;
                if kids.contains(&new_kid) && !old.iter().any(|k| kids.contains(k)) {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "round {round}: instance {i} still serves {kids:?}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        waits.push(started.elapsed());
        // Every instance now signs with the new key, and every other
        // accepts it.
        let access = f.session((round + 1) % 3).await;
        assert_eq!(kid_of(&access), new_kid);
        assert_eq!(f.verify((round + 2) % 3, &access).await, StatusCode::OK);
    }
    waits.sort();
    println!(
        "immediate rotation seen by all 3 instances over {} rotations: p50 {:?}, p99 {:?}",
        waits.len(),
        waits[waits.len() / 2],
        waits[waits.len() * 99 / 100]
    );
}

#[tokio::test]
async fn during_a_scheduled_rotation_no_instance_signs_with_a_kid_missing_from_any_jwks() {
    let f = fleet(
        3,
        &[
            ("SESSION_KEY_PREPUBLISH", "2s"),
            ("SESSION_KEY_ROTATION", "0"),
        ],
    )
    .await;
    let before = kid_of(&f.session(0).await);
    let key = f.rotate(1, "").await;
    assert_eq!(key["key"]["state"], "next");
    let next = key["key"]["kid"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    while started.elapsed() < Duration::from_secs(4) {
        for i in 0..3 {
            let kid = kid_of(&f.session(i).await);
            for j in 0..3 {
                let kids = f.jwks(j).await;
                assert!(
                    kids.contains(&kid),
                    "{kid} signed by {i}, missing from {j}: {kids:?}"
                );
            }
            seen.insert(kid);
        }
    }
    assert!(seen.contains(&before) && seen.contains(&next), "{seen:?}");
}

#[tokio::test]
async fn on_a_redis_cluster_three_instances_share_one_ring_and_every_rotation() {
    let nodes = std::env::var("REDIS_CLUSTER_NODES").expect(
        "REDIS_CLUSTER_NODES names a 3-node cluster; run the tests through `cargo xtask test`",
    );
    let f = fleet_on(
        &format!("redis+cluster://{nodes}"),
        3,
        &[("SESSION_KEY_ROTATION", "0")],
    )
    .await;
    let first = f.jwks(0).await;
    assert_eq!(first.len(), 1, "{first:?}");
    for i in 1..3 {
        assert_eq!(f.jwks(i).await, first, "instance {i} has another ring");
    }
    for round in 0..5 {
        let key = f.rotate(round % 3, "?immediate=true").await;
        let new_kid = key["key"]["kid"].as_str().unwrap().to_owned();
        let started = Instant::now();
        for i in 0..3 {
            while !f.jwks(i).await.contains(&new_kid) {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "round {round}: instance {i} lacks {new_kid}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        for from in 0..3 {
            let access = f.session(from).await;
            assert_eq!(kid_of(&access), new_kid);
            for on in 0..3 {
                assert_eq!(
                    f.verify(on, &access).await,
                    StatusCode::OK,
                    "{from} -> {on}"
                );
            }
        }
    }
}
