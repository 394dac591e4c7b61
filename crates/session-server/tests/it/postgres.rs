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
        sqlx::query(&format!("CREATE DATABASE {name}"))
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
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
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
    let url = db.url.clone();
    let app = App::start_with(move |raw| raw.set("audit", url)).await;
    let ready: Value = app
        .http
        .get(app.public("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["audit"], "postgres");
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
