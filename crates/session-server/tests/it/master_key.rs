//! The master key: every private key and server secret in the data
//! directory is sealed under it; a wrong one stops the server and changes
//! nothing; `rewrap` moves everything to a new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use session_core::sealing::{MasterKey, is_sealed};
use session_server::testing::TestServer;

use crate::harness::*;

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_private_key_or_server_secret_is_in_the_data_dir_in_the_clear() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    assert_eq!(
        app.refresh_bearer(&t.refresh).await.status(),
        StatusCode::OK
    );
    let r = app
        .admin_req(Method::POST, "/admin/v1/keys/rotate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let dir = app.server.data_dir().to_owned();

    let master_path = dir.join("master-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&master_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let master = MasterKey::from_hex(&std::fs::read_to_string(&master_path).unwrap()).unwrap();

    // What must never be found: every private key (PKCS#8 DER and its
    // 32-byte seed) and the token secret, raw, hex and base64.
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    let stored = serde_json::to_value(app.server.state().service.keys().to_stored()).unwrap();
    let keys = stored["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for k in keys {
        let private = k["private"].as_str().unwrap();
        let der = STANDARD.decode(private).unwrap();
        let seed = der[der.len() - 32..].to_vec();
        needles.push(("key der".into(), der.clone()));
        needles.push(("key base64".into(), private.as_bytes().to_vec()));
        needles.push(("key seed".into(), seed.clone()));
        needles.push(("key seed hex".into(), hex(&seed).into_bytes()));
        needles.push((
            "key seed b64url".into(),
            URL_SAFE_NO_PAD.encode(&seed).into_bytes(),
        ));
    }
    let sealed_secret = std::fs::read_to_string(dir.join("token-secret")).unwrap();
    assert!(is_sealed(&sealed_secret), "{sealed_secret}");
    let secret = master.open("token-secret", &sealed_secret).unwrap();
    assert_eq!(secret.len(), 32);
    needles.push(("token secret".into(), secret.to_vec()));
    needles.push(("token secret hex".into(), hex(&secret).into_bytes()));
    needles.push((
        "token secret b64url".into(),
        URL_SAFE_NO_PAD.encode(&*secret).into_bytes(),
    ));

    let keys_file: Value =
        serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap();
    for k in keys_file["keys"].as_array().unwrap() {
        assert!(is_sealed(k["private"].as_str().unwrap()), "{k}");
    }
    let files = files_under(&dir);
    assert!(files.len() >= 5, "{files:?}");
    for file in files.iter().filter(|f| **f != master_path) {
        let bytes = std::fs::read(file).unwrap();
        for (what, needle) in &needles {
            assert!(
                !contains(&bytes, needle),
                "{what} in the clear in {}",
                file.display()
            );
        }
    }
}

/// Runs the binary with `args` on `dir` until it exits: (success, stderr).
fn run_binary(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_session-server"));
    cmd.args(args)
        .env("SESSION_DATA_DIR", dir)
        .env("SESSION_PUBLIC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("SESSION_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env_remove("SESSION_MASTER_KEY")
        .env_remove("SESSION_MASTER_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn snapshot(dir: &Path, names: &[&str]) -> BTreeMap<String, Vec<u8>> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), std::fs::read(dir.join(n)).unwrap()))
        .collect()
}

/// A server process on `dir` that opened a session; stopped again. The
/// session's access token.
async fn a_server_ran_on(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut server = ServerProcess::spawn(dir, env).await;
    let r = client()
        .post(format!("{}/admin/v1/sessions", server.admin))
        .bearer_auth(server.admin_token())
        .json(&json!({ "user_id": "alice" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    server.terminate();
    server.child.wait().unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

const SECRET_FILES: [&str; 4] = ["master-key", "token-secret", "keys.json", "admin-token"];

#[tokio::test]
async fn a_wrong_master_key_stops_the_server_with_one_line_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    a_server_ran_on(dir.path(), &[]).await;
    let before = snapshot(dir.path(), &SECRET_FILES);
    let wrong = MasterKey::generate_hex();
    let (ok, stderr) = run_binary(dir.path(), &[], &[("SESSION_MASTER_KEY", &wrong)]);
    assert!(!ok, "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with("session-server: error: cannot open") && last.contains("master key"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(wrong.as_str()),
        "the key itself is never printed"
    );
    assert_eq!(snapshot(dir.path(), &SECRET_FILES), before);
}

#[tokio::test]
async fn rewrap_moves_every_secret_to_a_new_master_key_and_tokens_stay_valid() {
    let dir = tempfile::tempdir().unwrap();
    let access = a_server_ran_on(dir.path(), &[]).await;
    let old_file = dir.path().join("master-key");
    let old = std::fs::read_to_string(&old_file).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let new_file = elsewhere.path().join("new-master-key");
    std::fs::write(&new_file, format!("{}\n", &*MasterKey::generate_hex())).unwrap();
    let saved_old = elsewhere.path().join("old-master-key");
    std::fs::write(&saved_old, &old).unwrap();

    let (ok, stderr) = run_binary(
        dir.path(),
        &[
            "rewrap",
            "--old-master-key-file",
            saved_old.to_str().unwrap(),
            "--new-master-key-file",
            new_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    let new_hex = std::fs::read_to_string(&new_file).unwrap();
    assert_eq!(
        std::fs::read_to_string(&old_file).unwrap().trim(),
        new_hex.trim(),
        "the generated master key file follows"
    );

    // Under the new key: same signing keys, so the old token verifies.
    let server = ServerProcess::spawn(
        dir.path(),
        &[("SESSION_MASTER_KEY_FILE", new_file.to_str().unwrap())],
    )
    .await;
    let r = client()
        .get(format!("{}/v1/session", server.public))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(server);

    // The old key opens nothing any more.
    let (ok, stderr) = run_binary(dir.path(), &[], &[("SESSION_MASTER_KEY", old.trim())]);
    assert!(!ok, "{stderr}");
}

#[tokio::test]
async fn a_shared_store_without_a_master_key_refuses_to_start() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let err = TestServer::start_with(move |raw| raw.set("store", url))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("master_key") && text.contains("SESSION_MASTER_KEY"),
        "{text}"
    );
}

#[tokio::test]
async fn secrets_written_in_the_clear_by_an_older_version_are_sealed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let raw_secret = [7u8; 32];
    std::fs::write(
        dir.path().join("token-secret"),
        URL_SAFE_NO_PAD.encode(raw_secret),
    )
    .unwrap();
    let first = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
    let kid = first
        .state()
        .service
        .keys()
        .keys(first.state().service.now())[0]
        .kid
        .clone();
    // Simulate an older keys.json: private parts in the clear.
    let clear = serde_json::to_vec_pretty(&first.state().service.keys().to_stored()).unwrap();
    first.stop().await;
    std::fs::write(dir.path().join("keys.json"), &clear).unwrap();

    let again = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
    assert_eq!(
        again
            .state()
            .service
            .keys()
            .keys(again.state().service.now())[0]
            .kid,
        kid
    );
    let master =
        MasterKey::from_hex(&std::fs::read_to_string(dir.path().join("master-key")).unwrap())
            .unwrap();
    let sealed = std::fs::read_to_string(dir.path().join("token-secret")).unwrap();
    assert_eq!(&*master.open("token-secret", &sealed).unwrap(), &raw_secret);
    let keys: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("keys.json")).unwrap()).unwrap();
    assert!(is_sealed(keys["keys"][0]["private"].as_str().unwrap()));
}

#[tokio::test]
async fn rewrap_reseals_the_ring_and_secret_a_shared_store_keeps() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("rewrap{}", free_port());
    let keys = tempfile::tempdir().unwrap();
    let old_file = keys.path().join("old-master-key");
    let new_file = keys.path().join("new-master-key");
    std::fs::write(&old_file, format!("{}\n", &*MasterKey::generate_hex())).unwrap();
    std::fs::write(&new_file, format!("{}\n", &*MasterKey::generate_hex())).unwrap();
    let store = [
        ("SESSION_STORE", url.as_str()),
        ("SESSION_REDIS_PREFIX", prefix.as_str()),
    ];
    fn with<'a>(store: &[(&'a str, &'a str)], key: &'a Path) -> Vec<(&'a str, &'a str)> {
        let mut env = store.to_vec();
        env.push(("SESSION_MASTER_KEY_FILE", key.to_str().unwrap()));
        env
    }
    let dir = tempfile::tempdir().unwrap();
    let access = a_server_ran_on(dir.path(), &with(&store, &old_file)).await;

    // A wrong old key changes nothing; the right one re-seals both values.
    let wrong = keys.path().join("wrong");
    std::fs::write(&wrong, &*MasterKey::generate_hex()).unwrap();
    let rewrap = |old: &Path| {
        run_binary(
            dir.path(),
            &[
                "rewrap",
                "--old-master-key-file",
                old.to_str().unwrap(),
                "--new-master-key-file",
                new_file.to_str().unwrap(),
            ],
            &store,
        )
    };
    let (ok, stderr) = rewrap(&wrong);
    assert!(!ok, "{stderr}");
    let (ok, stderr) = rewrap(&old_file);
    assert!(ok, "{stderr}");
    // Run again (as after a run that stopped half way): nothing left to do.
    let (ok, stderr) = rewrap(&old_file);
    assert!(ok, "{stderr}");

    // Under the new key: the same ring (the old token verifies) and the
    // same token secret (its records open, its refresh works).
    let server = ServerProcess::spawn(dir.path(), &with(&store, &new_file)).await;
    let r = client()
        .get(format!("{}/v1/session", server.public))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let session: Value = r.json().await.unwrap();
    let r = client()
        .get(format!(
            "{}/admin/v1/sessions/{}",
            server.admin,
            session["session_id"].as_str().unwrap()
        ))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the sealed record opens");
    drop(server);

    // The old key opens nothing in the store any more.
    let (ok, stderr) = run_binary(dir.path(), &[], &with(&store, &old_file));
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("master key"), "{stderr}");
}
