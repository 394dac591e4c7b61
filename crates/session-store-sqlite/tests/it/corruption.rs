//! A row that the model cannot hold (edited by hand, written by a newer
//! version, damaged) is reported as `StoreError::Corrupt`, never a panic
//! and never a wrong answer.

use session_conformance::fixtures::{base_time, open_session, secrets, secs, unique_user};
use session_core::audit::AuditQuery;
use session_core::session::{Lifetimes, RevokeReason, Session};
use session_core::{AuditLog, SessionStore, StoreError};
use sqlx::Executor as _;

use crate::support::{TempStore, db_path, raw_connection, temp_store};

async fn stored_then_edited(sql: &str) -> (TempStore, Session) {
    let store = temp_store().await;
    let (session, _, _) = open_session(
        &secrets(),
        &unique_user("corrupt"),
        &Lifetimes::default(),
        base_time(),
    );
    store.create(&session).await.unwrap();
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    let sql = sql.replace("{id}", &session.id.to_string());
    raw.execute(sqlx::AssertSqlSafe(sql)).await.unwrap();
    (store, session)
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    match result {
        Err(StoreError::Corrupt(source)) => assert!(!source.to_string().is_empty()),
        other => panic!("expected StoreError::Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn metadata_that_is_not_json_reads_as_corrupt() {
    let (store, session) =
        stored_then_edited("UPDATE sessions SET metadata = 'not json' WHERE id = '{id}'").await;
    assert_corrupt(store.get(&session.id).await);
    assert_corrupt(store.list_user(&session.user_id, base_time()).await);
}

#[tokio::test]
async fn a_digest_of_the_wrong_length_reads_as_corrupt() {
    let (store, session) =
        stored_then_edited("UPDATE sessions SET current_digest = x'0102' WHERE id = '{id}'").await;
    assert_corrupt(store.get(&session.id).await);
}

#[tokio::test]
async fn an_unknown_revocation_reason_reads_as_corrupt() {
    let (store, session) = stored_then_edited(
        "UPDATE sessions SET revoked_at = 1, revoked_reason = 'bored' WHERE id = '{id}'",
    )
    .await;
    assert_corrupt(store.get(&session.id).await);
}

#[tokio::test]
async fn a_malformed_session_id_reads_as_corrupt() {
    let (store, session) =
        stored_then_edited("UPDATE sessions SET id = 'not-an-id' WHERE id = '{id}'").await;
    assert_corrupt(store.list_user(&session.user_id, base_time()).await);
    assert_corrupt(
        store
            .revoke_user(
                &session.user_id,
                RevokeReason::RevokeAll,
                secs(base_time(), 1),
            )
            .await,
    );
}

#[tokio::test]
async fn a_negative_generation_reads_as_corrupt() {
    let (store, session) =
        stored_then_edited("UPDATE sessions SET generation = -1 WHERE id = '{id}'").await;
    assert_corrupt(store.get(&session.id).await);
}

#[tokio::test]
async fn an_audit_event_of_an_unknown_kind_reads_as_corrupt() {
    let store = temp_store().await;
    let mut raw = raw_connection(&db_path(store.guard.path())).await;
    raw.execute(
        "INSERT INTO audit_events (id, at, kind, actor, details) \
         VALUES ('0190b8d6-0000-7000-8000-000000000000', 0, 'session_deleted', 'system', '{}')",
    )
    .await
    .unwrap();
    assert_corrupt(store.query(&AuditQuery::default()).await);
}
