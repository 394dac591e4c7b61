//! The outbox: durable appends, in-order delivery, deduplication on
//! redelivery, compaction, and appends while PostgreSQL is unreachable.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use session_core::{AuditEvent, AuditLog, AuditQuery, StoreError};
use session_store_postgres::{OUTBOX_FILE, OutboxAuditLog, OutboxConfig};

use crate::harness::{TestDb, fast_config, revocation};

const FLUSH: Duration = Duration::from_secs(20);

/// Up to 1,000 events, newest first: every event of these tests.
async fn newest_thousand(outbox: &OutboxAuditLog) -> Vec<AuditEvent> {
    outbox
        .query(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_events_reach_postgres_in_order_and_the_file_is_emptied() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let outbox = OutboxAuditLog::open(dir.path(), &db.url, fast_config())
        .await
        .unwrap();
    let events: Vec<_> = (0..50).map(revocation).collect();
    for e in &events {
        outbox.append(e).await.unwrap();
    }
    assert!(outbox.flush(FLUSH).await, "delivered");
    assert_eq!(outbox.backlog(), 0);
    let mode = std::fs::metadata(dir.path().join(OUTBOX_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "only the owner reads user ids and IPs");
    let got = newest_thousand(&outbox).await;
    let ids: Vec<_> = got.iter().rev().map(|e| e.id).collect();
    assert_eq!(
        ids,
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        "in append order"
    );
    let report = outbox.postgres().verify_chain().await.unwrap();
    assert!(report.is_intact());
    assert_eq!(report.events, 50);
    // The delivered prefix is dropped (right after the batch that emptied it).
    let deadline = tokio::time::Instant::now() + FLUSH;
    while std::fs::metadata(dir.path().join(OUTBOX_FILE))
        .unwrap()
        .len()
        > 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox file is truncated"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_append_is_written_at_once_and_a_busy_group_lands_whole() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // A spacing no test could wait out: ten appends in a row would take ten
    // minutes if a lone append waited for it.
    let outbox = OutboxAuditLog::open(
        dir.path(),
        &db.url,
        OutboxConfig {
            outbox: session_core::outbox::OutboxConfig {
                busy_spacing: Duration::from_secs(60),
                ..fast_config().outbox
            },
            ..fast_config()
        },
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        for i in 0..10 {
            outbox.append(&revocation(i)).await.unwrap();
        }
    })
    .await
    .expect("a lone append waited for the busy spacing");
    assert!(outbox.flush(FLUSH).await, "delivered");
    drop(outbox);

    // With company, appends gather for the spacing, then land together.
    let dir = tempfile::tempdir().unwrap();
    let outbox = std::sync::Arc::new(
        OutboxAuditLog::open(
            dir.path(),
            &db.url,
            OutboxConfig {
                outbox: session_core::outbox::OutboxConfig {
                    busy_spacing: Duration::from_millis(200),
                    ..fast_config().outbox
                },
                ..fast_config()
            },
        )
        .await
        .unwrap(),
    );
    let appends: Vec<_> = (100..164)
        .map(|i| {
            let outbox = std::sync::Arc::clone(&outbox);
            tokio::spawn(async move { outbox.append(&revocation(i)).await })
        })
        .collect();
    for append in appends {
        append.await.unwrap().unwrap();
    }
    assert!(outbox.flush(FLUSH).await, "delivered");
    let got = newest_thousand(&outbox).await;
    assert_eq!(
        got.len(),
        74,
        "the ten lone appends and the 64 gathered ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_an_outbox_redelivers_without_duplicating_or_extending_the_chain() {
    let db = TestDb::create().await;
    let events: Vec<_> = (0..10).map(revocation).collect();
    // Events 0..6 reached PostgreSQL, but the outbox did not learn it (a
    // crash between delivery and compaction); the last append was torn.
    db.log().await.append_batch(&events[..6]).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let mut f = std::fs::File::create(dir.path().join(OUTBOX_FILE)).unwrap();
        for e in &events {
            serde_json::to_writer(&mut f, e).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.write_all(br#"{"id":"torn"#).unwrap();
    }

    let outbox = OutboxAuditLog::open(dir.path(), &db.url, fast_config())
        .await
        .unwrap();
    assert!(outbox.flush(FLUSH).await);
    assert_eq!(outbox.backlog(), 0);
    let report = outbox.postgres().verify_chain().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 10, "each event once");
    let got = outbox.query(&AuditQuery::default()).await.unwrap();
    assert_eq!(got.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_same_outbox_is_refused() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let _first = OutboxAuditLog::open(dir.path(), &db.url, fast_config())
        .await
        .unwrap();
    let second = OutboxAuditLog::open(dir.path(), &db.url, fast_config()).await;
    assert!(matches!(second, Err(StoreError::Backend(_))), "{second:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_succeed_and_wait_in_the_outbox_while_postgres_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let config = OutboxConfig {
        outbox: session_core::outbox::OutboxConfig {
            query_wait: Duration::from_millis(100),
            ..fast_config().outbox
        },
        ..fast_config()
    };
    let outbox = OutboxAuditLog::open(dir.path(), "postgres://nobody@127.0.0.1:1/none", config)
        .await
        .expect("opening does not need PostgreSQL");
    for i in 0..20 {
        outbox
            .append(&revocation(i))
            .await
            .expect("append while down");
    }
    assert_eq!(outbox.backlog(), 20);
    outbox.ping().await.expect("the outbox itself is healthy");
    let err = outbox.query(&AuditQuery::default()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    drop(outbox);

    // The events survive a restart of the process, and reach the database
    // once it is there.
    let db = TestDb::create().await;
    let outbox = OutboxAuditLog::open(dir.path(), &db.url, fast_config())
        .await
        .unwrap();
    assert_eq!(outbox.backlog(), 20);
    assert!(outbox.flush(FLUSH).await);
    assert_eq!(outbox.postgres().verify_chain().await.unwrap().events, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_under_a_steady_backlog_loses_and_repeats_nothing() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Tiny batches and a 1-byte threshold: the delivered prefix is cut off
    // (by rewriting the file) after nearly every batch, while appends go on.
    let config = OutboxConfig {
        outbox: session_core::outbox::OutboxConfig {
            batch_size: 3,
            compact_bytes: 1,
            ..fast_config().outbox
        },
        ..fast_config()
    };
    let outbox = std::sync::Arc::new(
        OutboxAuditLog::open(dir.path(), &db.url, config)
            .await
            .unwrap(),
    );
    let mut writers = Vec::new();
    for w in 0..4_i64 {
        let outbox = std::sync::Arc::clone(&outbox);
        writers.push(tokio::spawn(async move {
            for i in 0..50 {
                outbox.append(&revocation(w * 100 + i)).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert!(outbox.flush(FLUSH).await);
    let report = outbox.postgres().verify_chain().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.events, 200);
    let got = newest_thousand(&outbox).await;
    let mut ids: Vec<_> = got.iter().map(|e| e.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}
