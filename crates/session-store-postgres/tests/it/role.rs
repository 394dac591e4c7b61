//! The `session_service` role may add and read records, nothing else; a
//! trigger refuses changes even to the table's owner.

use session_core::{AuditLog, AuditQuery};
use session_store_postgres::PostgresAuditLog;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgConnection};

use crate::harness::{TestDb, revocation};

async fn refused(c: &mut PgConnection, sql: &str) -> String {
    let err = c.execute(sqlx::AssertSqlSafe(sql)).await.expect_err(sql);
    let db = err.as_database_error().expect("a database error");
    assert_eq!(db.code().as_deref(), Some("42501"), "{sql}: {db}");
    db.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_appends_and_reads_but_cannot_update_delete_or_truncate() {
    let db = TestDb::create().await;
    drop(db.log().await); // migrate as the owner
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .after_connect(|c, _| {
            Box::pin(async move { c.execute("SET ROLE session_service").await.map(drop) })
        })
        .connect(&db.url)
        .await
        .unwrap();
    let log = PostgresAuditLog::from_pool(pool.clone());

    let events: Vec<_> = (0..5).map(revocation).collect();
    for e in &events {
        log.append(e).await.expect("the service role may append");
    }
    log.append_batch(&events).await.expect("and retry a batch");
    assert_eq!(log.query(&AuditQuery::default()).await.unwrap().len(), 5);
    let sign = |m: &[u8]| m.to_vec();
    log.checkpoint(&sign, "k")
        .await
        .unwrap()
        .expect("and sign a checkpoint");
    assert!(log.verify_chain().await.unwrap().is_intact());

    let mut c = pool.acquire().await.unwrap().detach();
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(role, "session_service");
    for sql in [
        "UPDATE audit_events SET reason = 'logout'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
        "UPDATE audit_checkpoints SET kid = 'x'",
        "DELETE FROM audit_checkpoints",
    ] {
        let message = refused(&mut c, sql).await;
        assert!(message.contains("permission denied"), "{sql}: {message}");
    }
    refused(&mut c, "CREATE TABLE shadow (x int)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_refuses_changes_even_from_the_owner() {
    let db = TestDb::create().await;
    let log = db.log().await;
    log.append(&revocation(1)).await.unwrap();
    let mut c = db.superuser().await;
    for sql in [
        "UPDATE audit_events SET reason = 'logout'",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let message = refused(&mut c, sql).await;
        assert!(message.contains("append-only"), "{sql}: {message}");
    }
    assert_eq!(log.query(&AuditQuery::default()).await.unwrap().len(), 1);
}
