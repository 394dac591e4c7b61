//! Audit events are never dropped silently: each is durably recorded
//! (directly or through the durable outbox in front of the log) before the
//! request that caused it is answered, or that request fails with 503. The
//! embedded audit log lives in its own file, `audit.db`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use session_server::testing::TestServer;
use sqlx::{Connection as _, SqliteConnection};

use crate::harness::*;

const TRIGGER: &str = "test_audit_volume_gone";

async fn sqlite(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

/// Makes every append to the real audit file fail from now on, the way a
/// full or dead volume would (a trigger in the file itself, since the
/// tests run as root and file modes do not stop root).
async fn break_appends(audit_db: &Path) -> SqliteConnection {
    let mut c = sqlite(audit_db).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TRIGGER {TRIGGER} BEFORE INSERT ON audit_events \
         BEGIN SELECT RAISE(ABORT, 'injected: the audit volume is gone'); END"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    c
}

async fn heal_appends(mut c: SqliteConnection) {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {TRIGGER}")))
        .execute(&mut c)
        .await
        .unwrap();
}

async fn count_events(db: &Path) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&mut sqlite(db).await)
        .await
        .unwrap()
}

/// The log holds exactly one `session_refreshed` of the session.
async fn refreshed_once(app: &App, session_id: &str) {
    let query = format!("kind=session_refreshed&session_id={session_id}");
    let refreshed = app.audit(&query).await;
    assert_eq!(refreshed.len(), 1, "{refreshed:?}");
}

async fn logs_in(app: &App, user: &str) {
    assert_eq!(
        app.login_bearer(user, PASSWORD).await.status(),
        StatusCode::OK
    );
}

/// Waits until the outbox has delivered every event to `audit.db` (its
/// deliveries retry with backoff, at most 5 s apart).
async fn delivered(app: &App) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while app.readyz().await["audit_backlog"] != 0 {
        assert!(std::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn unavailable(got: (StatusCode, String)) {
    assert_eq!(
        got,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable".to_owned()
        )
    );
}

/// A server on `dir` while this process holds the embedded log's outbox,
/// as a second server on one data dir would: it appends to `audit.db`
/// directly. The lock goes with the returned file.
async fn start_without_the_outbox(dir: &Path) -> (App, std::fs::File) {
    let lock = std::fs::File::create(dir.join(session_store_sqlite::AUDIT_OUTBOX.lock)).unwrap();
    lock.try_lock().unwrap();
    (start_in(dir).await, lock)
}

/// A server on a data dir that outlives it.
async fn start_in(dir: &Path) -> App {
    let server = TestServer::start_in(dir, |raw| {
        raw.set("rate_limit_login", "0")?;
        raw.set("rate_limit_refresh", "0")?;
        raw.set("rate_limit_create", "0")
    })
    .await
    .unwrap();
    App {
        server,
        http: client(),
    }
}

#[tokio::test]
async fn a_request_whose_audit_event_cannot_be_recorded_fails_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _outbox_held) = start_without_the_outbox(dir.path()).await;
    let dave = app.bearer_session("dave").await;
    app.add_user("alice").await;
    let bob = app.admin_session("bob").await;
    let carol = app.admin_session("carol").await;
    let broken = break_appends(&app.server.data_dir().join("audit.db")).await;

    // No session without its session_created event, and none left behind.
    unavailable(error_code(app.login_bearer("alice", PASSWORD).await).await);
    // No failed login without its login_failed event.
    unavailable(error_code(app.login_bearer("alice", "wrong password").await).await);
    // A revocation stands, but is not acknowledged without its event.
    let r = app
        .admin_req(
            Method::DELETE,
            &format!("/admin/v1/sessions/{}", bob.session_id),
        )
        .send()
        .await
        .unwrap();
    unavailable(error_code(r).await);
    assert_eq!(
        app.whoami(&bob.access).await.status(),
        StatusCode::UNAUTHORIZED,
        "the revocation itself stands"
    );
    // A rotation is not answered without its event.
    unavailable(error_code(app.refresh_bearer(&carol.refresh).await).await);
    // A password change still ends every old session.
    let r = app
        .admin_req(Method::POST, "/admin/v1/users/dave/password")
        .json(&serde_json::json!({ "password": "a new password entirely" }))
        .send()
        .await
        .unwrap();
    unavailable(error_code(r).await);
    assert_eq!(
        app.whoami(&dave.access).await.status(),
        StatusCode::UNAUTHORIZED,
        "an unaudited password change left a session alive"
    );

    heal_appends(broken).await;
    let r = app
        .admin_req(Method::GET, "/admin/v1/users/alice/sessions")
        .send()
        .await
        .unwrap();
    let listed: Value = r.json().await.unwrap();
    assert_eq!(
        listed["sessions"].as_array().unwrap().len(),
        0,
        "the unaudited login left no live session: {listed}"
    );
    // The client's retry of the refresh is answered (grace window) and
    // recorded this time.
    let r = app.refresh_bearer(&carol.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    refreshed_once(&app, &carol.session_id).await;
    assert_eq!(
        app.login_bearer("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.audit("kind=session_created&user_id=alice").await.len(),
        1,
        "only the answered login is recorded"
    );
}

#[tokio::test]
async fn a_broken_audit_file_delays_the_log_behind_the_outbox_and_loses_nothing() {
    let app = App::start().await;
    app.add_user("alice").await;
    let carol = app.bearer_session("carol").await;
    let audit_db = app.server.data_dir().join("audit.db");
    delivered(&app).await;
    let before = count_events(&audit_db).await;
    let broken = break_appends(&audit_db).await;

    // Each event is durable in the outbox: the requests are answered.
    logs_in(&app, "alice").await;
    let r = app.refresh_bearer(&carol.refresh).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ready = app.readyz().await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["audit_backlog"], 2, "{ready}");
    assert_eq!(count_events(&audit_db).await, before, "nothing got in");

    heal_appends(broken).await;
    delivered(&app).await;
    let created = app.audit("kind=session_created&user_id=alice").await;
    assert_eq!(created.len(), 1, "{created:?}");
    refreshed_once(&app, &carol.session_id).await;
    assert_eq!(count_events(&audit_db).await, before + 2, "each once");
}

#[tokio::test]
async fn a_stopping_server_delivers_its_outbox_to_audit_db_first() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_in(dir.path()).await;
    app.add_user("alice").await;
    let audit_db = dir.path().join("audit.db");
    delivered(&app).await;
    let before = count_events(&audit_db).await;
    // Deliveries fail and back off while the file refuses inserts.
    let broken = break_appends(&audit_db).await;
    for _ in 0..3 {
        logs_in(&app, "alice").await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(app.readyz().await["audit_backlog"], 3);
    heal_appends(broken).await;
    app.server.stop().await;
    assert_eq!(
        count_events(&audit_db).await,
        before + 3,
        "the stop waited for the outbox"
    );
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
    delivered(&app).await;
    assert!(count_events(&audit_db).await >= 1);
    assert_eq!(
        count_events(&dir.join("sessions.db")).await,
        0,
        "no audit event in the session store"
    );
    assert_eq!(app.readyz().await["audit"], "sqlite");
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
