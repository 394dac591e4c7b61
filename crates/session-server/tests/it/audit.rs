//! Audit events are never dropped silently: each is durably recorded
//! before the request that caused it is answered, or that request fails
//! with 503. The embedded audit log lives in its own file, `audit.db`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::Value;
use session_server::testing::TestServer;
use sqlx::{Connection as _, SqliteConnection};

use crate::harness::*;

async fn sqlite(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

async fn count_events(db: &Path) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut sqlite(db).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_embedded_audit_log_lives_in_its_own_private_file() {
    let app = App::start().await;
    app.bearer_session("alice").await;
    let dir = app.server.data_dir().to_owned();
    let audit_db = dir.join("audit.db");
    let mode = std::fs::metadata(&audit_db).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "only the owner reads IPs and user agents"
    );
    for companion in ["audit.db-wal", "audit.db-shm"] {
        if let Ok(m) = std::fs::metadata(dir.join(companion)) {
            assert_eq!(m.permissions().mode() & 0o777, 0o600, "{companion}");
        }
    }
    assert!(count_events(&audit_db).await >= 1);
    assert_eq!(
        count_events(&dir.join("sessions.db")).await,
        0,
        "no audit event in the session store"
    );
    let ready: Value = app
        .http
        .get(app.public("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["audit"], "sqlite");
}

#[tokio::test]
async fn events_an_older_version_kept_in_sessions_db_move_to_audit_db_once() {
    let dir = tempfile::tempdir().unwrap();
    let sessions_db = dir.path().join("sessions.db");
    // An older version: the audit log inside the session store.
    let old = TestServer::start_in(dir.path(), |raw| {
        raw.set("audit", format!("sqlite://{}", sessions_db.display()))
    })
    .await
    .unwrap();
    let app = App {
        server: old,
        http: client(),
    };
    let t = app.admin_session("alice").await;
    assert_eq!(
        app.admin_revoke(&t.session_id).await,
        StatusCode::NO_CONTENT
    );
    let old_events = app.audit("").await;
    assert_eq!(old_events.len(), 2);
    app.server.stop().await;
    assert!(!dir.path().join("audit.db").exists());

    for _ in 0..2 {
        let server = TestServer::start_in(dir.path(), |_| Ok(())).await.unwrap();
        let app = App {
            server,
            http: client(),
        };
        let events = app.audit("user_id=alice").await;
        let ids = |v: &[Value]| v.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&events),
            ids(&old_events),
            "same events, same order, once"
        );
        app.server.stop().await;
    }
    assert_eq!(count_events(&dir.path().join("audit.db")).await, 2);
    assert_eq!(count_events(&sessions_db).await, 2, "the old copy stays");
}
