//! PostgreSQL goes away in the middle of a stream of revocations and comes
//! back: every event arrives exactly once and the chain holds.

use std::sync::Arc;
use std::time::Duration;

use session_core::{Actor, AuditEvent, AuditKind, AuditLog};
use session_store_postgres::OutboxAuditLog;
use sqlx::{Connection, PgConnection};

use crate::harness::{OwnedPostgres, fast_config, revocation};

const EVENTS: i64 = 1000;

fn login_failed(i: i64) -> AuditEvent {
    AuditEvent::new(AuditKind::LoginFailed, Actor::System, crate::harness::t0())
        .user(format!("direct-{i}"))
}
const WRITERS: i64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_during_1000_revocations_loses_and_duplicates_none() {
    let outer = tokio::time::timeout(Duration::from_secs(55), async {
        let pg = Arc::new(
            tokio::task::spawn_blocking(|| {
                let pg = OwnedPostgres::init();
                pg.start();
                pg
            })
            .await
            .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let outbox = Arc::new(
            OutboxAuditLog::open(dir.path(), &pg.url(), fast_config())
                .await
                .unwrap(),
        );
        // The direct writer keeps a connection; it must survive the restart.
        let direct = outbox.postgres().clone();
        direct.append(&login_failed(1)).await.unwrap();

        // Four writers append 250 revocations each, ~3 s in all.
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let outbox = Arc::clone(&outbox);
            writers.push(tokio::spawn(async move {
                for i in (w..EVENTS).step_by(usize::try_from(WRITERS).unwrap()) {
                    outbox
                        .append(&revocation(i))
                        .await
                        .expect("an append never fails while PostgreSQL is down");
                    tokio::time::sleep(Duration::from_millis(12)).await;
                }
            }));
        }

        tokio::time::sleep(Duration::from_millis(700)).await;
        let stopper = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || stopper.stop())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let waiting = outbox.backlog();
        let starter = Arc::clone(&pg);
        tokio::task::spawn_blocking(move || starter.start())
            .await
            .unwrap();

        for w in writers {
            w.await.unwrap();
        }
        assert!(
            waiting > 0,
            "events were appended while PostgreSQL was down"
        );
        assert!(
            outbox.flush(Duration::from_secs(30)).await,
            "the backlog drains"
        );
        assert_eq!(outbox.backlog(), 0);
        direct
            .append(&login_failed(2))
            .await
            .expect("the direct writer reconnects after the restart");

        let mut c = PgConnection::connect(&pg.url()).await.unwrap();
        let (all, distinct, revoked): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*), count(DISTINCT id), count(*) FILTER (WHERE kind = 'session_revoked') \
             FROM audit_events",
        )
        .fetch_one(&mut c)
        .await
        .unwrap();
        assert_eq!((all, distinct, revoked), (EVENTS + 2, EVENTS + 2, EVENTS));
        let report = outbox.postgres().verify_chain().await.unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.events, u64::try_from(EVENTS + 2).unwrap());
        outbox.ping().await.unwrap();
    })
    .await;
    assert!(outer.is_ok(), "the fault test finishes within 55 s");
}
