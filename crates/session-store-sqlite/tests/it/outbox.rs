//! The embedded audit log behind the durable outbox the server puts in
//! front of it ([`session_core::outbox`]): appends are answered from the
//! outbox file, reach `audit_events` in batches, in order, once each, and
//! nothing the outbox holds is lost when it closes before delivering.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use session_core::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use session_core::outbox::{Outbox, OutboxConfig, is_locked};
use session_core::{AuditLog, SessionId};
use session_store_sqlite::{AUDIT_OUTBOX, SqliteStore};
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;

use crate::support::db_path;

fn event(user: &str, n: i64) -> AuditEvent {
    let at = session_conformance::fixtures::base_time() + time::Duration::milliseconds(n);
    AuditEvent::new(AuditKind::SessionRefreshed, Actor::User, at)
        .session(SessionId::generate(), user.to_owned())
        .details(serde_json::json!({ "n": n }))
}

/// Rows in the file itself, read by a connection of its own.
async fn rows_in_file(path: &Path) -> i64 {
    let mut c = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

async fn open(dir: &Path, store: &Arc<SqliteStore>, config: OutboxConfig) -> Outbox<SqliteStore> {
    Outbox::open(dir, AUDIT_OUTBOX, Arc::clone(store), config)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_reach_the_file_in_batches_and_queries_see_them_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    // A long linger: the query below must not answer before delivery.
    let config = OutboxConfig {
        linger: Duration::from_millis(300),
        ..OutboxConfig::default()
    };
    let outbox = Arc::new(open(dir.path(), &store, config).await);
    let appends = (0..200).map(|n| {
        let outbox = Arc::clone(&outbox);
        tokio::spawn(async move { outbox.append(&event("batched", n)).await })
    });
    for a in appends {
        a.await.unwrap().unwrap();
    }
    let query = AuditQuery {
        user_id: Some("batched".into()),
        limit: 500,
        ..AuditQuery::default()
    };
    let seen = outbox.query(&query).await.unwrap();
    assert_eq!(seen.len(), 200, "read-your-writes through the outbox");
    assert_eq!(rows_in_file(&path).await, 200);
    assert_eq!(outbox.backlog(), 0);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join(AUDIT_OUTBOX.events))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the outbox holds IPs and user agents");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_left_in_the_outbox_are_delivered_once_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    // Nothing is delivered while this outbox is open: every delivery
    // waits out an hour of linger after the first.
    let lingering = OutboxConfig {
        linger: Duration::from_secs(3600),
        ..OutboxConfig::default()
    };
    let outbox = open(dir.path(), &store, lingering).await;
    let first = event("restart", 0);
    outbox.append(&first).await.unwrap();
    assert!(outbox.flush(Duration::from_secs(10)).await);
    for n in 1..=5 {
        outbox.append(&event("restart", n)).await.unwrap();
    }
    assert_eq!(
        outbox.backlog(),
        5,
        "answered from the outbox, not delivered"
    );
    assert_eq!(rows_in_file(&path).await, 1);
    drop(outbox);
    // A crash between a delivery and the cut of the delivered prefix
    // leaves a delivered event in the file: put one back at its head.
    let file = dir.path().join(AUDIT_OUTBOX.events);
    let pending = std::fs::read(&file).unwrap();
    let mut line = serde_json::to_vec(&first).unwrap();
    line.push(b'\n');
    std::fs::write(&file, [line, pending].concat()).unwrap();

    // It is delivered again and skipped by its id.
    let outbox = open(dir.path(), &store, OutboxConfig::default()).await;
    assert!(outbox.flush(Duration::from_secs(10)).await);
    assert_eq!(rows_in_file(&path).await, 6, "each event exactly once");
    let query = AuditQuery {
        user_id: Some("restart".into()),
        ..AuditQuery::default()
    };
    let ns: Vec<i64> = outbox
        .query(&query)
        .await
        .unwrap()
        .iter()
        .map(|e| e.details["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, [5, 4, 3, 2, 1, 0], "newest first, in append order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_outbox_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&db_path(dir.path())).await.unwrap());
    let _first = open(dir.path(), &store, OutboxConfig::default()).await;
    let second = Outbox::open(
        dir.path(),
        AUDIT_OUTBOX,
        Arc::clone(&store),
        OutboxConfig::default(),
    )
    .await;
    assert!(matches!(&second, Err(e) if is_locked(e)), "{second:?}");
}
