//! The file's settings and schema as an operator sees them.

use session_conformance::fixtures::{base_time, open_session, secrets, unique_user};
use session_core::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use session_core::session::Lifetimes;
use session_core::{AuditLog, SessionStore, StoreError, WriteHints};
use session_store_sqlite::SqliteStore;
use sqlx::{Executor as _, Row as _};

use crate::support::{db_path, raw_connection, temp_store};

#[tokio::test]
async fn opening_leaves_the_file_in_wal_mode() {
    let store = temp_store().await;
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn migrations_are_recorded_and_not_applied_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    SqliteStore::open(&path).await.unwrap().close().await;
    let store = SqliteStore::open(&path).await.unwrap();
    SessionStore::ping(&store).await.unwrap();
    let mut raw = raw_connection(&path).await;
    let rows = sqlx::query("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    let applied: Vec<(i64, bool)> = rows
        .iter()
        .map(|r| (r.get::<i64, _>("version"), r.get::<bool, _>("success")))
        .collect();
    let shipped = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../migrations/sqlite"
    ))
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "sql")
    })
    .count();
    let every_one_once: Vec<(i64, bool)> = (1..=i64::try_from(shipped).unwrap())
        .map(|v| (v, true))
        .collect();
    assert_eq!(applied, every_one_once);
}

#[tokio::test]
async fn the_audit_log_refuses_edits_and_deletions() {
    let store = temp_store().await;
    let event = AuditEvent::new(AuditKind::LoginFailed, Actor::System, base_time()).user("mallory");
    store.append(&event).await.unwrap();
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    assert!(
        raw.execute("UPDATE audit_events SET user_id = 'alice'")
            .await
            .is_err()
    );
    assert!(raw.execute("DELETE FROM audit_events").await.is_err());
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut raw)
        .await
        .unwrap();
    assert_eq!(count, 1);
}

#[tokio::test]
async fn per_user_and_audit_lookups_use_an_index() {
    let store = temp_store().await;
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    for (sql, index) in [
        (
            "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE user_id = 'u' AND revoked_at IS NULL ORDER BY created_at",
            "sessions_user",
        ),
        (
            "EXPLAIN QUERY PLAN SELECT id FROM audit_events WHERE user_id = 'u' ORDER BY seq DESC LIMIT 10",
            "audit_events_user",
        ),
        (
            "EXPLAIN QUERY PLAN SELECT id FROM audit_events WHERE session_id = 's' ORDER BY seq DESC LIMIT 10",
            "audit_events_session",
        ),
        (
            "EXPLAIN QUERY PLAN DELETE FROM sessions WHERE min(idle_expires_at, absolute_expires_at) <= 5",
            "sessions_expiry",
        ),
    ] {
        let plan: Vec<String> = sqlx::query(sql)
            .fetch_all(&mut raw)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect();
        assert!(
            plan.iter().any(|d| d.contains(index)),
            "{sql} should use {index}, plan: {plan:?}"
        );
    }
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    match SqliteStore::open(&path).await {
        Err(StoreError::Corrupt(_)) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_closed_store_is_unavailable() {
    let store = temp_store().await;
    let (session, _, _) = open_session(
        &secrets(),
        &unique_user("closed"),
        &Lifetimes::default(),
        base_time(),
    );
    store.store.close().await;
    assert!(matches!(
        store.create(&session).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.replace(&session, 0, WriteHints::NONE).await,
        Err(StoreError::Unavailable(_))
    ));
    let event = AuditEvent::new(AuditKind::SessionCreated, Actor::User, base_time());
    assert!(matches!(
        AuditLog::append(&store.store, &event).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get(&session.id).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        SessionStore::ping(&store).await,
        Err(StoreError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_write_lock_held_past_the_busy_timeout_is_unavailable_not_lost() {
    let store = temp_store().await;
    let (session, _, _) = open_session(
        &secrets(),
        &unique_user("locked"),
        &Lifetimes::default(),
        base_time(),
    );
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    raw.execute("BEGIN IMMEDIATE").await.unwrap();
    let err = store
        .create(&session)
        .await
        .expect_err("the write waits, then gives up");
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    let event = AuditEvent::new(AuditKind::SessionCreated, Actor::User, base_time());
    let err = AuditLog::append(&store.store, &event)
        .await
        .expect_err("the append waits, then gives up");
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    raw.execute("ROLLBACK").await.unwrap();
    store.create(&session).await.unwrap();
    assert_eq!(store.get(&session.id).await.unwrap(), Some(session));
    AuditLog::append(&store.store, &event).await.unwrap();
    let logged = AuditLog::query(&store.store, &AuditQuery::default())
        .await
        .unwrap();
    assert_eq!(logged, vec![event], "the retried append lands once");
}

#[tokio::test]
async fn remembered_dpop_proofs_are_forgotten_after_their_window_and_purged() {
    let store = temp_store().await;
    let now = base_time();
    let until = now + time::Duration::seconds(61);
    let key = [7u8; 32];
    assert!(store.remember_dpop_proof(&key, until, now).await.unwrap());
    assert!(
        !store
            .remember_dpop_proof(&key, until, until - time::Duration::seconds(1))
            .await
            .unwrap(),
        "a replay inside the window"
    );
    let later = until + time::Duration::seconds(61);
    assert!(
        store.remember_dpop_proof(&key, later, until).await.unwrap(),
        "a row past its window no longer counts"
    );
    assert!(
        store
            .remember_dpop_proof(&[8u8; 32], until, now)
            .await
            .unwrap()
    );
    store.purge_expired(until).await.unwrap();
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    let left: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key FROM dpop_proofs")
        .fetch_all(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        left,
        vec![key.to_vec()],
        "the purge drops only expired rows"
    );
}
