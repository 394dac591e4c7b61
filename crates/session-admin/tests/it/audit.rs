//! `audit`, `audit --follow`, `audit export`, `audit verify`.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{Env, PASSWORD, rows};

/// The contract's fields of an audit event.
const EVENT_FIELDS: [&str; 10] = [
    "id",
    "at",
    "kind",
    "session_id",
    "user_id",
    "actor",
    "ip",
    "user_agent",
    "reason",
    "details",
];

#[tokio::test]
async fn audit_lists_events_newest_first_with_the_contracts_filters() {
    let env = Env::start().await;
    env.add_user("alice").await;
    env.add_user("bob").await;
    let a = env.login("alice", PASSWORD).await.unwrap();
    env.login("bob", PASSWORD).await.unwrap();
    env.run(&["sessions", "revoke", &a.session_id]).await.ok();

    let doc = env
        .run(&["audit", "--user", "alice", "--json"])
        .await
        .json();
    let events = doc["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["session_revoked", "session_created"], "{doc}");
    for e in events {
        for field in EVENT_FIELDS {
            assert!(e.get(field).is_some(), "{field} missing from {e}");
        }
        assert_eq!(e["user_id"], "alice");
    }
    assert_eq!(events[0]["reason"], "admin");
    assert_eq!(events[0]["actor"], "admin");

    let by_kind = env
        .run(&["audit", "--kind", "session_created", "--json"])
        .await
        .json();
    let users: HashSet<&str> = by_kind["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, HashSet::from(["alice", "bob"]));

    let by_session = env
        .run(&[
            "audit",
            "--session",
            &a.session_id,
            "--limit",
            "1",
            "--json",
        ])
        .await
        .json();
    assert_eq!(by_session["events"].as_array().unwrap().len(), 1);
    assert_eq!(by_session["events"][0]["kind"], "session_revoked");

    let future = env
        .run(&["audit", "--since", "2200-01-01T00:00:00Z", "--json"])
        .await
        .json();
    assert_eq!(future["events"].as_array().unwrap().len(), 0);
    let recent = env
        .run(&["audit", "--since", "1h", "--user", "bob", "--json"])
        .await
        .json();
    assert_eq!(recent["events"].as_array().unwrap().len(), 1);

    let table = env.run(&["audit", "--user", "alice"]).await;
    let text = table.ok();
    assert!(text.starts_with("TIME"), "{text}");
    let lines = rows(text);
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("session_revoked") && lines[0].contains("admin"),
        "{text}"
    );
    assert!(lines[1].contains("session_created"), "{text}");
    // The only session id in the table, cut to a prefix.
    assert!(text.contains(&format!("{}…", &a.session_id[..8])), "{text}");
    assert!(!text.contains(&a.session_id), "{text}");

    assert_eq!(
        env.run(&["audit", "--kind", "key_rotated"]).await.ok(),
        "no matching audit events\n"
    );
}

#[tokio::test]
async fn export_pages_through_every_event_and_writes_them_oldest_first() {
    let env = Env::start().await;
    env.add_user("alice").await;
    for _ in 0..4 {
        env.login("alice", PASSWORD).await.unwrap();
    }
    // Five and more events; pages of two prove the `before` cursor.
    let all = env
        .run(&["audit", "--limit", "1000", "--json"])
        .await
        .json();
    let newest_first: Vec<String> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(newest_first.len() >= 4, "{all}");

    let out = env.run(&["audit", "export", "--page-size", "2"]).await;
    let text = out.ok();
    assert!(
        out.stderr.is_empty(),
        "no progress bar without a terminal: {}",
        out.stderr
    );
    let exported: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<String> = exported
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let mut oldest_first = newest_first.clone();
    oldest_first.reverse();
    assert_eq!(ids, oldest_first);
    for e in &exported {
        for field in EVENT_FIELDS {
            assert!(e.get(field).is_some(), "{field} missing from {e}");
        }
    }
    let times: Vec<&str> = exported.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let future = env
        .run(&["audit", "export", "--since", "2200-01-01T00:00:00Z"])
        .await;
    assert_eq!(future.ok(), "");
    let only_created = env
        .run(&["audit", "export", "--kind", "session_created", "--json"])
        .await;
    assert_eq!(only_created.ok().lines().count(), 4);
}

#[tokio::test]
async fn follow_prints_new_events_as_they_come() {
    for json in [true, false] {
        let env = Env::start().await;
        env.add_user("alice").await;
        let mut cmd = env.cli();
        cmd.args([
            "audit",
            "--follow",
            "--interval",
            "100ms",
            "--kind",
            "session_created",
        ]);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

        let first = env.login("alice", PASSWORD).await.unwrap();
        let second = env.login("alice", PASSWORD).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("an event line within 30 s")
                .unwrap()
                .expect("the follow keeps running");
            seen.push(line);
        }
        child.start_kill().unwrap();
        if json {
            let events: Vec<Value> = seen
                .iter()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(events[0]["session_id"], first.session_id.as_str());
            assert_eq!(events[1]["session_id"], second.session_id.as_str());
            assert!(events.iter().all(|e| e["kind"] == "session_created"));
        } else {
            assert!(seen[0].contains("session_created"), "{seen:?}");
            assert!(
                seen[0].contains(&format!("session={}", first.session_id)),
                "{seen:?}"
            );
            assert!(
                seen[1].contains(&format!("session={}", second.session_id)),
                "{seen:?}"
            );
        }
    }
}

#[tokio::test]
async fn verify_says_when_the_audit_log_has_no_chain() {
    let env = Env::start().await;
    for args in [&["audit", "verify"][..], &["audit", "verify", "--json"][..]] {
        let out = env.run(args).await;
        let line = out.fails(1);
        assert!(line.contains("has no chain"), "{line}");
    }
}

/// A fresh PostgreSQL database with the audit schema, dropped at the end.
struct AuditDb {
    admin: String,
    name: String,
    url: String,
}

impl AuditDb {
    async fn create() -> Self {
        use sqlx::Connection as _;
        let admin = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned());
        let name = format!("admin_cli_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL reachable at DATABASE_URL (cargo xtask test sets it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
        // Migrated as its owner, as `session-server migrate` does.
        session_store_postgres::PostgresAuditLog::connect(
            &url,
            session_store_postgres::MigrateMode::Apply,
        )
        .await
        .unwrap();
        Self { admin, name, url }
    }

    /// Connected as the superuser with triggers off: someone with the
    /// database's keys, not the signing key.
    async fn tamper(&self, sql: &str) {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
        sqlx::query("SET session_replication_role = replica")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

impl Drop for AuditDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            use sqlx::Connection as _;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_checkpoints_outlive_the_database_and_verify_names_the_lost_tail() {
    let db = AuditDb::create().await;
    let env = Env::start_with_audit(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoints.json");
    let file_arg = file.to_str().unwrap();
    env.add_user("carol").await;
    env.login("carol", PASSWORD).await.unwrap();

    let out = env
        .run(&["audit", "checkpoints", "--export", file_arg])
        .await;
    assert!(out.ok().contains("(1 new)"), "{}", out.stdout);
    let first: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(first["checkpoints"].as_array().unwrap().len(), 1);
    let kept_seq = first["checkpoints"][0]["seq"].as_i64().unwrap();

    env.login("carol", PASSWORD).await.unwrap();
    env.login("carol", PASSWORD).await.unwrap();
    env.run(&["audit", "checkpoints", "--export", file_arg])
        .await
        .ok();
    let both: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let both = both["checkpoints"].as_array().unwrap().clone();
    assert_eq!(both.len(), 2, "{both:?}");
    let lost_seq = both[1]["seq"].as_i64().unwrap();
    assert!(lost_seq > kept_seq);
    let listed = env.run(&["audit", "checkpoints", "--json"]).await.json();
    assert_eq!(listed["checkpoints"].as_array().unwrap(), &both);
    let table = env.run(&["audit", "checkpoints"]).await;
    assert!(table.ok().starts_with("SEQ"), "{}", table.stdout);

    let verified = env
        .run(&["audit", "verify", "--checkpoints", file_arg, "--json"])
        .await
        .json();
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(verified["checkpoints"], 2, "{verified}");

    // The newest events and their checkpoint vanish from the database.
    db.tamper(&format!("DELETE FROM audit_events WHERE seq > {kept_seq}"))
        .await;
    db.tamper(&format!(
        "DELETE FROM audit_checkpoints WHERE seq > {kept_seq}"
    ))
    .await;
    env.run(&["audit", "verify"]).await.ok();
    let out = env
        .run(&["audit", "verify", "--checkpoints", file_arg])
        .await;
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("audit chain BROKEN"), "{}", out.stdout);
    assert!(out.stdout.contains("truncated_tail"), "{}", out.stdout);
    assert!(
        out.stdout.contains("1 not in the database"),
        "{}",
        out.stdout
    );

    // Exporting again keeps the evidence the database lost.
    env.run(&["audit", "checkpoints", "--export", file_arg])
        .await
        .ok();
    let kept: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(
        kept["checkpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["seq"] == lost_seq),
        "{kept}"
    );

    // A file that is not an export is refused and left alone.
    std::fs::write(&file, "not json").unwrap();
    let out = env
        .run(&["audit", "checkpoints", "--export", file_arg])
        .await;
    out.fails(1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not json");
}
