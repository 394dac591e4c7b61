//! The hash chain: concurrent appends keep it linear, tampering is named,
//! duplicates do not extend it, checkpoints pin it.

use std::sync::Arc;

use session_core::{AuditLog, AuditQuery, StoreError};
use session_store_postgres::chain::{self, GENESIS};
use session_store_postgres::{LinkProblem, MigrateMode, PostgresAuditLog, SchemaError, migrate};
use sha2::{Digest, Sha256};
use sqlx::{Executor, Row};

use crate::harness::{TestDb, revocation};

/// Every event, oldest first, with its seq.
async fn rows(db: &TestDb) -> Vec<(i64, uuid::Uuid)> {
    let mut c = db.superuser().await;
    sqlx::query_as("SELECT seq, id FROM audit_events ORDER BY seq")
        .fetch_all(&mut c)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_verifies_after_many_concurrent_appends_from_two_writers() {
    let db = TestDb::create().await;
    // Two logs with pools of their own stand for two server instances.
    let logs = [db.log().await, db.log().await];
    let mut tasks = Vec::new();
    for t in 0..16_i64 {
        let log = logs[usize::try_from(t % 2).unwrap()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                log.append(&revocation(t * 1000 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let report = logs[0].verify_chain().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 800);
    let (seq, head) = logs[1].head().await.unwrap().unwrap();
    assert_eq!(report.head, Some((seq, head)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_row_is_named_by_the_verifier() {
    let db = TestDb::create().await;
    let log = db.log().await;
    let events: Vec<_> = (0..20).map(revocation).collect();
    log.append_batch(&events).await.unwrap();
    assert!(log.verify_chain().await.unwrap().is_intact());

    let target = rows(&db).await[7];
    let mut c = db.superuser().await;
    c.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET reason = 'logout' WHERE seq = $1")
        .bind(target.0)
        .execute(&mut c)
        .await
        .unwrap();

    let report = log.verify_chain().await.unwrap();
    let broken = report.broken.expect("the edit is found");
    assert_eq!((broken.seq, broken.id), (target.0, Some(target.1)));
    assert_eq!(broken.problem, LinkProblem::HashMismatch);
    assert_eq!(report.events, 7, "the events before it verify");
    assert_eq!(target.1, events[7].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_breaks_the_link_of_the_next_one() {
    let db = TestDb::create().await;
    let log = db.log().await;
    log.append_batch(&(0..10).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    let all = rows(&db).await;

    let mut c = db.superuser().await;
    c.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq = $1")
        .bind(all[4].0)
        .execute(&mut c)
        .await
        .unwrap();

    let broken = log
        .verify_chain()
        .await
        .unwrap()
        .broken
        .expect("the gap is found");
    assert_eq!((broken.seq, broken.id), (all[5].0, Some(all[5].1)));
    assert_eq!(broken.problem, LinkProblem::PrevHashMismatch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recomputed_chain_disagrees_with_its_signed_checkpoint() {
    let db = TestDb::create().await;
    let log = db.log().await;
    let key = b"checkpoint test key".to_vec();
    let sign = move |msg: &[u8]| {
        Sha256::new()
            .chain_update(&key)
            .chain_update(msg)
            .finalize()
            .to_vec()
    };
    assert_eq!(
        log.checkpoint(&sign, "k1").await.unwrap(),
        None,
        "an empty log has no head"
    );

    let events: Vec<_> = (0..6).map(revocation).collect();
    log.append_batch(&events).await.unwrap();
    let cp = log
        .checkpoint(&sign, "k1")
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(cp.signature, sign(&cp.message()));
    assert_eq!(
        log.checkpoint(&sign, "k1").await.unwrap(),
        Some(cp.clone()),
        "same head, same checkpoint"
    );
    let report = log.verify_chain().await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.checkpoints, 1);

    // Someone with the database's keys (not the signing key) edits event 2
    // and recomputes every hash after it: the links hold again...
    let mut edited = events.clone();
    edited[2].reason = Some("logout".into());
    let mut c = db.superuser().await;
    c.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    let mut prev = GENESIS;
    for e in &edited {
        let hash = chain::link_event(&prev, &chain::normalize(e));
        sqlx::query("UPDATE audit_events SET reason = $2, prev_hash = $3, hash = $4 WHERE id = $1")
            .bind(e.id)
            .bind(&e.reason)
            .bind(prev.as_slice())
            .bind(hash.as_slice())
            .execute(&mut c)
            .await
            .unwrap();
        prev = hash;
    }
    // ...but not the signed checkpoint.
    let report = log.verify_chain().await.unwrap();
    let broken = report.broken.expect("the rewrite is found");
    assert_eq!(broken.problem, LinkProblem::CheckpointMismatch);
    assert_eq!((broken.seq, broken.id), (cp.seq, Some(events[5].id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_skipped_without_extending_the_chain() {
    let db = TestDb::create().await;
    let log = db.log().await;
    let e: Vec<_> = (0..3).map(revocation).collect();
    assert_eq!(log.append_batch(&e[..2]).await.unwrap(), 2);
    let batch = [e[1].clone(), e[2].clone(), e[2].clone(), e[0].clone()];
    assert_eq!(log.append_batch(&batch).await.unwrap(), 1, "only e2 is new");
    log.append(&e[0]).await.unwrap();
    let report = log.verify_chain().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_are_stored_as_replacement_characters_and_still_verify() {
    let db = TestDb::create().await;
    let log = db.log().await;
    let mut e = revocation(1);
    e.user_agent = Some("evil\0agent".into());
    e.details = serde_json::json!({ "user\0name": "a\0b" });
    log.append(&e).await.unwrap();
    let got = log.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].user_agent.as_deref(), Some("evil\u{FFFD}agent"));
    assert_eq!(
        got[0].details,
        serde_json::json!({ "user\u{FFFD}name": "a\u{FFFD}b" })
    );
    assert!(log.verify_chain().await.unwrap().is_intact());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mode_refuses_an_unmigrated_database_until_it_is_migrated() {
    let db = TestDb::create().await;
    let err = PostgresAuditLog::connect(&db.url, MigrateMode::Check)
        .await
        .unwrap_err();
    let StoreError::Backend(source) = &err else {
        panic!("expected a schema error, got {err:?}")
    };
    assert!(matches!(
        source.downcast_ref::<SchemaError>(),
        Some(SchemaError::Pending { .. })
    ));

    migrate(&db.url).await.unwrap();
    migrate(&db.url).await.expect("migrating twice is a no-op");
    let log = PostgresAuditLog::connect(&db.url, MigrateMode::Check)
        .await
        .unwrap();
    log.ping().await.unwrap();
    let mut c = db.superuser().await;
    let roles: i64 = sqlx::query("SELECT count(*) FROM pg_roles WHERE rolname = 'session_service'")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable() {
    let err = PostgresAuditLog::connect("postgres://nobody@127.0.0.1:1/none", MigrateMode::Check)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_query_pages_newest_first_by_append_order() {
    let db = TestDb::create().await;
    let log = Arc::new(db.log().await);
    let events: Vec<_> = (0..30).map(revocation).collect();
    for e in &events {
        log.append(e).await.unwrap();
    }
    let q = AuditQuery {
        user_id: Some("user-3".into()),
        limit: 2,
        ..AuditQuery::default()
    };
    let first = log.query(&q).await.unwrap();
    let expected: Vec<_> = events
        .iter()
        .rev()
        .filter(|e| q.matches(e))
        .cloned()
        .collect();
    assert_eq!(first, expected[..2].to_vec());
    let next = log
        .query(&AuditQuery {
            before: first.last().map(|e| e.id),
            ..q.clone()
        })
        .await
        .unwrap();
    assert_eq!(next, expected[2..4].to_vec());
}
