//! Checks of an [`AuditLog`]: round-trips, filters, order, limits, the
//! `before` cursor and idempotent appends.
//!
//! Every check writes events of its own users and sessions and filters on
//! them, so the checks may share one log and run concurrently.

use std::sync::Arc;

use session_core::audit::{Actor, AuditEvent, AuditKind, AuditQuery};
use session_core::secret::SessionId;
use session_core::session::RevokeReason;
use session_core::store::AuditLog;
use time::OffsetDateTime;

use crate::fixtures::{base_time, secs, unique_user};

/// Event ids, for readable assertions.
fn ids(events: &[AuditEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.to_string()).collect()
}

/// An event of `kind` for `user` (and `session`, if any) at `at`.
fn event(kind: AuditKind, user: &str, session: Option<&str>, at: OffsetDateTime) -> AuditEvent {
    let e = AuditEvent::new(kind, Actor::User, at);
    match session {
        Some(s) => e.session(s, user),
        None => e.user(user),
    }
}

async fn append_all(log: &dyn AuditLog, events: &[AuditEvent]) {
    for e in events {
        log.append(e).await.expect("append");
    }
}

async fn query(log: &dyn AuditLog, q: AuditQuery) -> Vec<AuditEvent> {
    log.query(&q).await.expect("query")
}

fn by_user(user: &str) -> AuditQuery {
    AuditQuery {
        user_id: Some(user.to_owned()),
        ..AuditQuery::default()
    }
}

/// Newest first: the reverse of the order they were written in.
fn newest_first(events: &[AuditEvent]) -> Vec<AuditEvent> {
    events.iter().rev().cloned().collect()
}

/// An appended event reads back with every field: id, time, kind, session,
/// user, actor, IP, user agent, reason and the details JSON.
pub async fn appended_events_read_back_with_every_field(log: Arc<dyn AuditLog>) {
    let user = unique_user("audit-fields");
    let session = SessionId::generate().to_string();
    let mut e = AuditEvent::new(AuditKind::SessionRevoked, Actor::Admin, base_time())
        .session(&session, &user)
        .reason(RevokeReason::Admin)
        .details(serde_json::json!({
            "signal": "user_agent",
            "old": "Firefox",
            "new": "curl/8 \"quoted\" ünïcødé",
            "count": 11,
            "nested": { "list": [1, 2, null] },
        }));
    e.ip = Some("2001:db8::9".to_owned());
    e.user_agent = Some("Mozilla/5.0 (conformance)".to_owned());

    log.append(&e).await.expect("append");
    assert_eq!(query(&*log, by_user(&user)).await, vec![e]);
}

/// Each filter (user, session, kind, since) narrows the answer, filters
/// combine, and the answer is newest first.
pub async fn query_filters_by_user_session_kind_and_since(log: Arc<dyn AuditLog>) {
    let now = base_time();
    let (user, other) = (unique_user("audit-filter"), unique_user("audit-other"));
    let s1 = SessionId::generate().to_string();
    let s2 = SessionId::generate().to_string();
    let e = [
        event(AuditKind::SessionCreated, &user, Some(&s1), secs(now, 0)),
        event(AuditKind::SessionRefreshed, &user, Some(&s1), secs(now, 1)),
        event(AuditKind::SessionCreated, &user, Some(&s2), secs(now, 2)),
        event(AuditKind::SessionRevoked, &user, Some(&s1), secs(now, 3))
            .reason(RevokeReason::Logout),
        event(AuditKind::LoginFailed, &user, None, secs(now, 4)),
        event(AuditKind::SessionCreated, &other, None, secs(now, 5)),
    ];
    append_all(&*log, &e).await;

    assert_eq!(
        query(&*log, by_user(&user)).await,
        newest_first(&e[..5]),
        "by user"
    );
    let q = AuditQuery {
        session_id: Some(s1.clone()),
        ..AuditQuery::default()
    };
    assert_eq!(
        query(&*log, q).await,
        vec![e[3].clone(), e[1].clone(), e[0].clone()],
        "by session"
    );
    let q = AuditQuery {
        kind: Some(AuditKind::SessionCreated),
        ..by_user(&user)
    };
    assert_eq!(
        query(&*log, q).await,
        vec![e[2].clone(), e[0].clone()],
        "by user and kind"
    );
    let q = AuditQuery {
        since: Some(secs(now, 2)),
        ..by_user(&user)
    };
    assert_eq!(
        query(&*log, q).await,
        newest_first(&e[2..5]),
        "since is inclusive"
    );
    let q = AuditQuery {
        session_id: Some(s1),
        kind: Some(AuditKind::SessionRevoked),
        since: Some(secs(now, 1)),
        ..by_user(&user)
    };
    assert_eq!(
        query(&*log, q).await,
        vec![e[3].clone()],
        "all filters at once"
    );
    assert_eq!(
        query(&*log, by_user(&other)).await,
        vec![e[5].clone()],
        "another user"
    );
    assert!(
        query(&*log, by_user(&unique_user("nobody")))
            .await
            .is_empty()
    );
}

/// `limit` caps the answer, keeping the newest; 0 means the default page.
pub async fn query_is_newest_first_and_honours_the_limit(log: Arc<dyn AuditLog>) {
    let now = base_time();
    let user = unique_user("audit-limit");
    let e: Vec<_> = (0..5)
        .map(|i| event(AuditKind::SessionRefreshed, &user, None, secs(now, i)))
        .collect();
    append_all(&*log, &e).await;

    let q = AuditQuery {
        limit: 2,
        ..by_user(&user)
    };
    assert_eq!(query(&*log, q).await, vec![e[4].clone(), e[3].clone()]);
    let q = AuditQuery {
        limit: 0,
        ..by_user(&user)
    };
    assert_eq!(
        query(&*log, q).await,
        newest_first(&e),
        "0 asks for the default page size"
    );
    let q = AuditQuery {
        limit: 1000,
        ..by_user(&user)
    };
    assert_eq!(query(&*log, q).await, newest_first(&e));
}

/// Paging with `before` = the last id of the previous page walks the whole
/// log, newest first, without overlap or gaps, and ends with an empty page.
pub async fn before_cursor_pages_without_overlap_or_gaps(log: Arc<dyn AuditLog>) {
    let now = base_time();
    let user = unique_user("audit-pages");
    let e: Vec<_> = (0..7)
        .map(|i| event(AuditKind::SessionRefreshed, &user, None, secs(now, i)))
        .collect();
    append_all(&*log, &e).await;

    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = query(
            &*log,
            AuditQuery {
                before,
                limit: 3,
                ..by_user(&user)
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        assert!(page.len() <= 3, "a page holds at most the limit");
        pages.push(page);
        assert!(pages.len() <= 7, "paging terminates");
    }
    let sizes: Vec<_> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    let walked: Vec<_> = pages.into_iter().flatten().collect();
    assert_eq!(
        ids(&walked),
        ids(&newest_first(&e)),
        "every event once, newest first"
    );
}

/// Appending the same event id twice stores it once; the first write wins.
pub async fn appending_the_same_event_twice_stores_one(log: Arc<dyn AuditLog>) {
    let user = unique_user("audit-idempotent");
    let e = event(AuditKind::LoginFailed, &user, None, base_time());
    log.append(&e).await.expect("append");
    log.append(&e).await.expect("append the same event again");
    let mut retried = e.clone();
    retried.details = serde_json::json!({ "retry": true });
    log.append(&retried)
        .await
        .expect("append a retry with the same id");

    assert_eq!(query(&*log, by_user(&user)).await, vec![e]);
}

/// `ping` answers a reachable log.
pub async fn audit_ping_answers(log: Arc<dyn AuditLog>) {
    log.ping()
        .await
        .expect("a reachable audit log answers ping");
}
