//! What a store wrote is there after it is closed and the file reopened,
//! as after a restart of the server.

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use session_core::rotation::RefreshOutcome;
use session_core::session::{Lifetimes, RevokeReason};
use session_core::user::User;
use session_core::{AuditLog, SessionStore, UserStore};
use session_store_sqlite::SqliteStore;
use time::Duration;

use crate::support::db_path;
use session_core::ApplyRefresh as _;

#[tokio::test]
async fn sessions_users_and_audit_events_survive_closing_and_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(dir.path());
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("reopen");

    let store = SqliteStore::open(&path).await.unwrap();
    let (live, _, p0) = open_session(&secrets, &user, &Lifetimes::default(), now);
    store.create(&live).await.unwrap();
    let (_, _, next) = mint(&secrets, &live.id, 1);
    let rotated = store
        .refresh(&p0, &next, &params(default_grace()), secs(now, 5))
        .await
        .unwrap();
    assert_eq!(rotated.outcome, RefreshOutcome::Rotated);
    let live = rotated.session.unwrap();
    let (revoked, _, _) = open_session(&secrets, &user, &Lifetimes::default(), secs(now, 1));
    store.create(&revoked).await.unwrap();
    let revoked = store
        .revoke(&revoked.id, RevokeReason::Logout, secs(now, 6))
        .await
        .unwrap()
        .unwrap();
    let alice = User {
        username: user.clone(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: now,
    };
    store.create_user(&alice).await.unwrap();
    let event = AuditEvent::new(AuditKind::SessionCreated, Actor::User, now)
        .session(live.id, user.clone())
        .details(serde_json::json!({ "via": "password" }));
    store.append(&event).await.unwrap();
    store.close().await;
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    assert_eq!(reopened.get(&live.id).await.unwrap(), Some(live.clone()));
    assert_eq!(reopened.get(&revoked.id).await.unwrap(), Some(revoked));
    assert_eq!(
        reopened.list_user(&user, secs(now, 7)).await.unwrap(),
        vec![live]
    );
    assert_eq!(reopened.get_user(&user).await.unwrap(), Some(alice));
    let events = reopened
        .query(&AuditQuery {
            user_id: Some(user),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(events, vec![event]);
}

#[tokio::test]
async fn instants_keep_their_nanoseconds() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(dir.path())).await.unwrap();
    let now = base_time() + Duration::nanoseconds(123_456_789);
    let (mut session, _, _) = open_session(
        &secrets(),
        &unique_user("nanos"),
        &Lifetimes::default(),
        now,
    );
    session.refresh.recent_refreshes = vec![now, now + Duration::nanoseconds(1)];
    session.refresh.rotated_at = Some(now + Duration::nanoseconds(7));
    store.create(&session).await.unwrap();
    assert_eq!(store.get(&session.id).await.unwrap(), Some(session));
}

#[tokio::test]
async fn opening_creates_the_missing_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("nested").join("sessions.db");
    let store = SqliteStore::open(&path).await.unwrap();
    SessionStore::ping(&store).await.unwrap();
    assert!(path.is_file());
    assert_eq!(store.path(), path);
}

#[tokio::test]
async fn purge_drops_expired_sessions_and_revoked_tombstones_but_keeps_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&db_path(dir.path())).await.unwrap();
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("purge");
    let short = Lifetimes {
        idle_timeout: Duration::minutes(10),
        ..Lifetimes::default()
    };
    let (expiring, _, _) = open_session(&secrets, &user, &short, now);
    let (tombstone, _, _) = open_session(&secrets, &user, &short, now);
    let (live, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
    for s in [&expiring, &tombstone, &live] {
        store.create(s).await.unwrap();
    }
    store
        .revoke(&tombstone.id, RevokeReason::Logout, secs(now, 1))
        .await
        .unwrap()
        .unwrap();
    let event = AuditEvent::new(AuditKind::SessionRevoked, Actor::User, secs(now, 1))
        .session(tombstone.id, user.clone())
        .reason(RevokeReason::Logout);
    store.append(&event).await.unwrap();

    assert_eq!(
        store.purge_expired(secs(now, 599)).await.unwrap(),
        0,
        "nothing is due yet"
    );
    assert!(
        store.get(&tombstone.id).await.unwrap().is_some(),
        "a tombstone lives until its deadline"
    );

    assert_eq!(store.purge_expired(secs(now, 600)).await.unwrap(), 2);
    assert_eq!(store.get(&expiring.id).await.unwrap(), None);
    assert_eq!(store.get(&tombstone.id).await.unwrap(), None);
    assert_eq!(store.get(&live.id).await.unwrap(), Some(live));
    let events = store
        .query(&AuditQuery {
            user_id: Some(user),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        events,
        vec![event],
        "purging sessions never touches the audit log"
    );
}
