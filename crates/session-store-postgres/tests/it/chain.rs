//! The hash chain: concurrent appends keep it linear, tampering is named,
//! duplicates do not extend it, checkpoints pin it.

use std::sync::Arc;

use session_core::{AuditLog, AuditQuery, StoreError};
use session_store_postgres::chain::{self, GENESIS};
use session_store_postgres::{
    ChainCheck, Checkpoint, LinkProblem, MigrateMode, PostgresAuditLog, SchemaError,
    SignatureFault, migrate,
};
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

/// A keyed-hash "signature" standing for the ring's: `kid` names the key.
fn mac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    Sha256::new()
        .chain_update(key)
        .chain_update(msg)
        .finalize()
        .to_vec()
}

/// The verifier a server builds from its ring: knows `k1` and `k2` only.
fn verify_known(c: &Checkpoint) -> Result<(), SignatureFault> {
    let key: &[u8] = match c.kid.as_str() {
        "k1" => b"key one",
        "k2" => b"key two",
        _ => return Err(SignatureFault::UnknownKey),
    };
    if mac(key, &c.message()) == c.signature {
        Ok(())
    } else {
        Err(SignatureFault::BadSignature)
    }
}

/// Inserts a checkpoint row as someone with the database's keys would.
async fn insert_checkpoint(db: &TestDb, seq: i64, head: &[u8], signature: &[u8], kid: &str) {
    let mut c = db.superuser().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_signatures_are_checked_and_a_forged_or_unknown_one_is_named() {
    let db = TestDb::create().await;
    let log = db.log().await;
    let sign1 = |m: &[u8]| mac(b"key one", m);
    let sign2 = |m: &[u8]| mac(b"key two", m);
    log.append_batch(&(0..3).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    let first = log.checkpoint(&sign1, "k1").await.unwrap().unwrap();
    log.append_batch(&(3..6).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    log.checkpoint(&sign2, "k2").await.unwrap().unwrap();
    let check = ChainCheck {
        signatures: Some(&verify_known),
        exported: &[],
    };
    let report = log.verify_chain_with(check).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.checkpoints, 2);

    // A checkpoint written by someone without the key: right hash, made-up
    // signature. The hash-only walk cannot tell; the signature check can.
    log.append_batch(&(6..8).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    let (seq, head) = log.head().await.unwrap().unwrap();
    insert_checkpoint(&db, seq, &head, &mac(b"guessed key", b"x"), "k1").await;
    assert!(log.verify_chain().await.unwrap().is_intact());
    let broken = log.verify_chain_with(check).await.unwrap().broken.unwrap();
    assert_eq!(broken.problem, LinkProblem::CheckpointSignatureInvalid);
    assert_eq!((broken.seq, broken.kid.as_deref()), (seq, Some("k1")));
    assert!(!broken.exported);

    // One signed by a key the ring never had.
    log.append(&revocation(8)).await.unwrap();
    let db2 = TestDb::create().await;
    let log2 = db2.log().await;
    log2.append_batch(&(0..3).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    log2.checkpoint(&|m: &[u8]| mac(b"key nine", m), "k9")
        .await
        .unwrap();
    let broken = log2.verify_chain_with(check).await.unwrap().broken.unwrap();
    assert_eq!(broken.problem, LinkProblem::CheckpointKeyUnknown);
    assert_eq!(broken.kid.as_deref(), Some("k9"));

    // A good signature over another head is still refused: it signs a
    // different message.
    let db3 = TestDb::create().await;
    let log3 = db3.log().await;
    log3.append_batch(&(0..3).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    let (seq, head) = log3.head().await.unwrap().unwrap();
    insert_checkpoint(&db3, seq, &head, &first.signature, "k1").await;
    let broken = log3.verify_chain_with(check).await.unwrap().broken.unwrap();
    assert_eq!(broken.problem, LinkProblem::CheckpointSignatureInvalid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_tail_is_found_by_a_stored_or_an_exported_checkpoint() {
    let db = TestDb::create().await;
    let log = db.log().await;
    let sign = |m: &[u8]| mac(b"key one", m);
    log.append_batch(&(0..10).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    let early = log.checkpoint(&sign, "k1").await.unwrap().unwrap();
    log.append_batch(&(10..15).map(revocation).collect::<Vec<_>>())
        .await
        .unwrap();
    let late = log.checkpoint(&sign, "k1").await.unwrap().unwrap();
    let exported = vec![early.clone(), late.clone()];
    let check = ChainCheck {
        signatures: Some(&verify_known),
        exported: &exported,
    };
    let report = log.verify_chain_with(check).await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.checkpoints, report.exported_checkpoints), (2, 2));

    // Someone with the database's keys deletes the last three events: the
    // links that remain are whole, but the newest checkpoint is ahead.
    let mut c = db.superuser().await;
    c.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq > $1")
        .bind(late.seq - 3)
        .execute(&mut c)
        .await
        .unwrap();
    let broken = log.verify_chain().await.unwrap().broken.unwrap();
    assert_eq!(broken.problem, LinkProblem::TruncatedTail);
    assert_eq!((broken.seq, broken.id), (late.seq, None));

    // They delete the checkpoint too: the database alone now looks whole,
    // the exported copy does not.
    sqlx::query("DELETE FROM audit_checkpoints WHERE seq = $1")
        .bind(late.seq)
        .execute(&mut c)
        .await
        .unwrap();
    let alone = ChainCheck {
        signatures: Some(&verify_known),
        exported: &[],
    };
    assert!(log.verify_chain_with(alone).await.unwrap().is_intact());
    let report = log.verify_chain_with(check).await.unwrap();
    let broken = report.broken.unwrap();
    assert_eq!(broken.problem, LinkProblem::TruncatedTail);
    assert_eq!((broken.seq, broken.exported), (late.seq, true));
    assert_eq!(report.exported_checkpoints, 1, "the early one still holds");

    // An exported checkpoint whose head differs from the event at its seq:
    // the chain was rewritten after it was exported.
    let mut rewritten = early.clone();
    rewritten.head_hash[0] ^= 1;
    rewritten.signature = sign(&rewritten.message());
    let broken = log
        .verify_chain_with(ChainCheck {
            signatures: Some(&verify_known),
            exported: &[rewritten],
        })
        .await
        .unwrap()
        .broken
        .unwrap();
    assert_eq!(broken.problem, LinkProblem::CheckpointMismatch);
    assert_eq!((broken.seq, broken.exported), (early.seq, true));
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
