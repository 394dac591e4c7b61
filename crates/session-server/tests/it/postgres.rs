//! The server with the PostgreSQL audit log: the production pairing.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::Connection as _;

use crate::harness::*;

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh database, dropped when the test ends.
struct FreshDb {
    name: String,
    url: String,
}

impl FreshDb {
    async fn create() -> Self {
        let admin = database_url();
        let name = format!("server_audit_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL reachable at DATABASE_URL (cargo xtask test sets it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let base = admin.rsplit_once('/').unwrap().0;
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        let (admin, name) = (database_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn revocations_land_in_the_postgres_audit_log_and_the_chain_verifies() {
    let db = FreshDb::create().await;
    assert!(migrate_as_owner(&db.url).status.success());
    let url = db.url.clone();
    let app = App::start_with(move |raw| raw.set("audit", url)).await;
    assert_eq!(app.readyz().await["audit"], "postgres");
    let mut sessions = Vec::new();
    for i in 0..5 {
        sessions.push(app.admin_session(&format!("pg-user-{i}")).await);
    }
    for t in &sessions {
        assert_eq!(
            app.admin_revoke(&t.session_id).await,
            StatusCode::NO_CONTENT
        );
    }
    let revoked = app.audit("kind=session_revoked").await;
    assert_eq!(revoked.len(), 5);
    assert!(revoked.iter().all(|e| e["reason"] == "admin"));
    let report: Value = app
        .admin_req(Method::POST, "/admin/v1/audit/verify")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["events"], 10, "5 created + 5 revoked: {report}");
    // The events are really in PostgreSQL, not only in the outbox.
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let (n,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM audit_events WHERE kind = 'session_revoked'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn the_sqlite_audit_log_has_no_chain_to_verify() {
    let app = App::start().await;
    let r = app
        .admin_req(Method::POST, "/admin/v1/audit/verify")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into())
    );
}

/// `url` with its user replaced by `user` (trust authentication).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

/// A login role that is a member of `session_service` and nothing else,
/// as a deployment creates for the server; dropped when the test ends.
struct LoginRole {
    name: String,
}

impl LoginRole {
    async fn create() -> Self {
        let name = format!("svc_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        // The role exists once any database was migrated; make sure.
        sqlx::query(
            "DO $$ BEGIN CREATE ROLE session_service NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {name} LOGIN IN ROLE session_service"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        Self { name }
    }
}

impl Drop for LoginRole {
    fn drop(&mut self) {
        let (admin, name) = (database_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {name}")))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

fn migrate_as_owner(url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_session-server"))
        .arg("migrate")
        .env("SESSION_AUDIT", url)
        .env("SESSION_DATA_DIR", std::env::temp_dir())
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_server_refuses_to_start_on_an_audit_schema_that_is_behind() {
    let db = FreshDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Even as the owner, who could migrate, the server only checks.
    let url = db.url.clone();
    let started =
        session_server::testing::TestServer::start_in(dir.path(), move |raw| raw.set("audit", url))
            .await;
    // (Not `expect_err`: it would print the server's state, admin token included.)
    let Err(err) = started else {
        panic!("a schema behind the build stops the server");
    };
    let chain = {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    };
    assert!(
        chain.contains("is not applied") && chain.contains("session-server migrate"),
        "a clear message: {chain}"
    );
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let tables: Option<String> = sqlx::query_scalar("SELECT to_regclass('audit_events')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(tables, None, "the server applied nothing");
}

#[tokio::test]
async fn the_server_runs_as_a_login_role_of_session_service_after_the_owner_migrates() {
    let db = FreshDb::create().await;
    let out = migrate_as_owner(&db.url);
    assert!(
        out.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let role = LoginRole::create().await;
    let url = as_user(&db.url, &role.name);
    let service_url = url.clone();
    let app = App::start_with(move |raw| raw.set("audit", service_url)).await;
    let t = app.admin_session("least-privileged").await;
    assert_eq!(
        app.admin_revoke(&t.session_id).await,
        StatusCode::NO_CONTENT
    );
    let events = app.audit("user_id=least-privileged").await;
    assert_eq!(events.len(), 2, "{events:?}");
    let report: Value = app
        .admin_req(Method::POST, "/admin/v1/audit/verify")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["intact"], true, "{report}");

    // What the server's role cannot do.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let user: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(user, role.name);
    for sql in [
        "UPDATE audit_events SET reason = 'logout'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
        "DELETE FROM _sqlx_migrations",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
    }
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_events")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 2);
    app.server.stop().await;
}

#[tokio::test]
async fn started_while_postgres_is_down_the_server_keeps_every_event_in_its_outbox() {
    let port = free_port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    // Nothing listens there: the server starts anyway, on its outbox.
    let app = App::start_with(move |raw| raw.set("audit", url)).await;
    let t = app.bearer_session("queued").await;
    assert_eq!(
        app.admin_revoke(&t.session_id).await,
        StatusCode::NO_CONTENT
    );
    let outbox = std::fs::read_to_string(
        app.server
            .data_dir()
            .join(session_store_postgres::OUTBOX_FILE),
    )
    .unwrap();
    // One event a line, then the zeros the writer keeps ahead.
    let events: Vec<Value> = outbox
        .lines()
        .take_while(|l| !l.contains('\0'))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e["session_id"] == t.session_id.as_str())
        .collect();
    let kinds: Vec<_> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["session_created", "session_revoked"], "{outbox}");
    let ready: Value = app
        .http
        .get(app.public("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ready["audit_backlog"].as_u64().unwrap() >= 2, "{ready}");
}

/// `url`'s database as its superuser, triggers off: someone with the
/// database's keys, not the signing key.
async fn tamperer(url: &str) -> sqlx::PgConnection {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut c)
        .await
        .unwrap();
    c
}

async fn verify_with(app: &App, exported: Option<&Value>) -> Value {
    let mut req = app.admin_req(Method::POST, "/admin/v1/audit/verify");
    if let Some(body) = exported {
        req = req.json(body);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

#[tokio::test]
async fn checkpoint_signatures_are_verified_against_the_ring_and_an_export_finds_a_lost_tail() {
    let db = FreshDb::create().await;
    assert!(migrate_as_owner(&db.url).status.success());
    let url = db.url.clone();
    let app = App::start_with(move |raw| raw.set("audit", url)).await;

    let r = app
        .admin_req(Method::POST, "/admin/v1/audit/checkpoints")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(r).await,
        (StatusCode::NOT_FOUND, "not_found".into()),
        "an empty log has no head to sign"
    );
    for i in 0..3 {
        app.admin_session(&format!("cp-user-{i}")).await;
    }
    let take = || async {
        let r = app
            .admin_req(Method::POST, "/admin/v1/audit/checkpoints")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<Value>().await.unwrap()
    };
    let early = take().await;
    assert_eq!(early["seq"], 3, "{early}");
    let keys: Value = app
        .admin_req(Method::GET, "/admin/v1/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        early["kid"], keys["keys"][0]["kid"],
        "signed by the ring's key"
    );
    for i in 3..6 {
        app.admin_session(&format!("cp-user-{i}")).await;
    }
    let late = take().await;
    let export: Value = app
        .admin_req(Method::GET, "/admin/v1/audit/checkpoints")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(export["checkpoints"].as_array().unwrap().len(), 2);
    let report = verify_with(&app, Some(&export)).await;
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(
        (&report["checkpoints"], &report["exported_checkpoints"]),
        (&2.into(), &2.into()),
        "{report}"
    );

    // The last three events and the late checkpoint vanish: the database
    // alone looks whole; the export does not agree.
    let mut c = tamperer(&db.url).await;
    for sql in [
        "DELETE FROM audit_events WHERE seq > 3",
        "DELETE FROM audit_checkpoints WHERE seq > 3",
    ] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    let alone = verify_with(&app, None).await;
    assert_eq!(alone["intact"], true, "{alone}");
    let report = verify_with(&app, Some(&export)).await;
    assert_eq!(report["intact"], false, "{report}");
    assert_eq!(report["broken"]["problem"], "truncated_tail", "{report}");
    assert_eq!(report["broken"]["seq"], late["seq"]);
    assert_eq!(report["broken"]["exported"], true);

    // A checkpoint row with a key id the ring never had.
    let (seq, head): (i64, Vec<u8>) =
        sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let forged = |kid: &str, signature: &str| {
        let kid = kid.to_owned();
        let signature = signature.as_bytes().to_vec();
        let head = head.clone();
        let url = db.url.clone();
        async move {
            let mut c = tamperer(&url).await;
            sqlx::query("DELETE FROM audit_checkpoints WHERE seq = $1")
                .bind(seq)
                .execute(&mut c)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO audit_checkpoints (seq, head_hash, signature, kid) VALUES ($1, $2, $3, $4)",
            )
            .bind(seq)
            .bind(head)
            .bind(signature)
            .bind(kid)
            .execute(&mut c)
            .await
            .unwrap();
        }
    };
    let real_sig = early["signature"].as_str().unwrap();
    forged("not-a-key-of-the-ring", real_sig).await;
    let report = verify_with(&app, None).await;
    assert_eq!(
        report["broken"]["problem"], "checkpoint_key_unknown",
        "{report}"
    );
    assert_eq!(report["broken"]["kid"], "not-a-key-of-the-ring");

    // The ring's key id with a signature over another message (the early
    // checkpoint's, copied): forged.
    assert_eq!(seq, 3);
    let mut other = real_sig.to_owned();
    let last = other.pop().unwrap();
    other.push(if last == 'A' { 'Q' } else { 'A' });
    forged(early["kid"].as_str().unwrap(), &other).await;
    let report = verify_with(&app, None).await;
    assert_eq!(
        report["broken"]["problem"], "checkpoint_signature_invalid",
        "{report}"
    );
    assert_eq!(report["broken"]["seq"], 3);

    // A malformed export is a 400, never a 500.
    let r = app
        .admin_req(Method::POST, "/admin/v1/audit/verify")
        .json(&serde_json::json!({ "checkpoints": [{ "seq": 1, "head_hash": "xyz", "kid": "k", "signature": "s", "at": "2026-01-01T00:00:00Z" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_checkpoint_signed_by_a_key_that_has_left_the_ring_still_verifies_after_a_restart() {
    let db = FreshDb::create().await;
    assert!(migrate_as_owner(&db.url).status.success());
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let url = db.url.clone();
        let dir = dir.path().to_owned();
        async move {
            App {
                server: session_server::testing::TestServer::start_in(&dir, move |raw| {
                    raw.set("audit", url)
                })
                .await
                .unwrap(),
                http: client(),
            }
        }
    };
    let app = start().await;
    app.admin_session("archive-user").await;
    let r = app
        .admin_req(Method::POST, "/admin/v1/audit/checkpoints")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let checkpoint: Value = r.json().await.unwrap();
    let old_kid = checkpoint["kid"].as_str().unwrap().to_owned();

    // A suspected compromise: the key is revoked now, and the schedule
    // (every second) drops it from the ring.
    let r = app
        .admin_req(Method::POST, "/admin/v1/keys/rotate?immediate=true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let started = std::time::Instant::now();
    let keys = loop {
        let keys: Value = app
            .admin_req(Method::GET, "/admin/v1/keys")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let in_ring = keys["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == old_kid.as_str());
        if !in_ring {
            break keys;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the revoked key is still in the ring: {keys}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let archived = keys["archived"].as_array().unwrap();
    assert_eq!(archived.len(), 1, "{keys}");
    assert_eq!(archived[0]["kid"], old_kid.as_str());
    assert!(archived[0]["revoked_at"].is_string(), "{keys}");
    assert_eq!(archived[0]["public_jwk"]["kid"], old_kid.as_str());
    assert!(
        archived[0]["public_jwk"].get("d").is_none(),
        "public half only"
    );

    // The archive is part of the stored ring: a restarted server still
    // verifies the old checkpoint.
    app.server.stop().await;
    let app = start().await;
    let report: Value = app
        .admin_req(Method::POST, "/admin/v1/audit/verify")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["intact"], true, "{report}");
    assert_eq!(report["checkpoints"], 1, "{report}");
}
