//! Audit events: the append-only record of what happened to sessions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::session::RevokeReason;

pub(crate) mod details;

/// The contract's event kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A session was opened.
    SessionCreated,
    /// A refresh token was rotated.
    SessionRefreshed,
    /// A session was revoked (see `reason`).
    SessionRevoked,
    /// A rotated-away refresh token was presented again.
    RefreshReuseDetected,
    /// An anomaly rule fired.
    AnomalyDetected,
    /// A password login failed.
    LoginFailed,
    /// A new signing key was started.
    KeyRotated,
    /// A built-in user's password was changed.
    PasswordChanged,
}

impl AuditKind {
    /// All kinds, in the contract's order.
    pub const ALL: [Self; 8] = [
        Self::SessionCreated,
        Self::SessionRefreshed,
        Self::SessionRevoked,
        Self::RefreshReuseDetected,
        Self::AnomalyDetected,
        Self::LoginFailed,
        Self::KeyRotated,
        Self::PasswordChanged,
    ];

    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionCreated => "session_created",
            Self::SessionRefreshed => "session_refreshed",
            Self::SessionRevoked => "session_revoked",
            Self::RefreshReuseDetected => "refresh_reuse_detected",
            Self::AnomalyDetected => "anomaly_detected",
            Self::LoginFailed => "login_failed",
            Self::KeyRotated => "key_rotated",
            Self::PasswordChanged => "password_changed",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown audit event kind {s:?}"))
    }
}

/// Who caused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The session's own user.
    User,
    /// An operator or trusted backend on the admin listener.
    Admin,
    /// The service itself (policy, reuse detection, limits).
    System,
}

impl Actor {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
            Self::System => "system",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            "system" => Some(Self::System),
            _ => None,
        }
    }
}

/// One audit event. Never holds a token or a password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id (UUID v7, time-ordered).
    pub id: Uuid,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What.
    pub kind: AuditKind,
    /// The session concerned.
    pub session_id: Option<String>,
    /// The user concerned.
    pub user_id: Option<String>,
    /// Who did it.
    pub actor: Actor,
    /// Client IP, where there was a client.
    pub ip: Option<String>,
    /// Client user agent, where there was a client.
    pub user_agent: Option<String>,
    /// For `session_revoked`: the contract's reason.
    pub reason: Option<String>,
    /// Anything else (signal, old and new values, key id…).
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// A new event of `kind` at `now`, with an id derived from `now`.
    pub fn new(kind: AuditKind, actor: Actor, now: OffsetDateTime) -> Self {
        let nanos = now.unix_timestamp_nanos();
        let secs = u64::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(0);
        let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0);
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, sub);
        Self {
            id: Uuid::new_v7(ts),
            at: now,
            kind,
            session_id: None,
            user_id: None,
            actor,
            ip: None,
            user_agent: None,
            reason: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Sets the session and user.
    #[must_use]
    pub fn session(mut self, session_id: impl ToString, user_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.to_string());
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the user only.
    #[must_use]
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }

    /// Sets the client's IP and user agent.
    #[must_use]
    pub fn client(mut self, client: &crate::anomaly::ClientInfo) -> Self {
        self.ip.clone_from(&client.ip);
        self.user_agent.clone_from(&client.user_agent);
        self
    }

    /// Sets the revocation reason.
    #[must_use]
    pub fn reason(mut self, reason: RevokeReason) -> Self {
        self.reason = Some(reason.as_str().to_owned());
        self
    }

    /// Sets the details.
    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Sets the details to one of the [`details`] types.
    #[must_use]
    pub(crate) fn with_details(self, details: &impl Serialize) -> Self {
        self.details(details::json(details))
    }
}

/// A query over the audit log: every filter optional, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this user's events.
    pub user_id: Option<String>,
    /// Only this session's events.
    pub session_id: Option<String>,
    /// Only this kind.
    pub kind: Option<AuditKind>,
    /// Only events at or after this instant.
    pub since: Option<OffsetDateTime>,
    /// Keyset cursor: only events older than the event with this id.
    pub before: Option<Uuid>,
    /// At most this many (the stores cap it at [`AuditQuery::MAX_LIMIT`]).
    pub limit: u32,
}

impl AuditQuery {
    /// The largest page a store returns.
    pub const MAX_LIMIT: u32 = 1000;
    /// The page size when none is asked for.
    pub const DEFAULT_LIMIT: u32 = 100;

    /// The limit to apply: the asked one, within 1..=MAX_LIMIT.
    pub fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }

    /// Whether `event` passes every filter but the cursor.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.user_id
            .as_ref()
            .is_none_or(|u| event.user_id.as_ref() == Some(u))
            && self
                .session_id
                .as_ref()
                .is_none_or(|s| event.session_id.as_ref() == Some(s))
            && self.kind.is_none_or(|k| event.kind == k)
            && self.since.is_none_or(|t| event.at >= t)
    }
}

/// An [`AuditLog`](crate::AuditLog) that writes each event as a `tracing`
/// event (target `session_audit`, level INFO), for applications that
/// embed the service and ship their logs elsewhere, and need no durable,
/// queryable audit log. Durability is the subscriber's: an event counts
/// as recorded once handed to `tracing`. Queries are refused
/// ([`NotQueryable`]), never answered with an empty list that would read
/// as "nothing happened".
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAuditLog;

/// [`TracingAuditLog`] keeps nothing to query.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the tracing audit log keeps no events to query; query wherever the logs are shipped")]
pub struct NotQueryable;

#[async_trait::async_trait]
impl crate::AuditLog for TracingAuditLog {
    async fn append(&self, event: &AuditEvent) -> Result<(), crate::StoreError> {
        tracing::info!(
            target: "session_audit",
            id = %event.id,
            at = %event.at,
            kind = event.kind.as_str(),
            session_id = event.session_id.as_deref(),
            user_id = event.user_id.as_deref(),
            actor = ?event.actor,
            ip = event.ip.as_deref(),
            user_agent = event.user_agent.as_deref(),
            reason = event.reason.as_deref(),
            details = %event.details,
            "audit event"
        );
        Ok(())
    }

    async fn query(&self, _query: &AuditQuery) -> Result<Vec<AuditEvent>, crate::StoreError> {
        Err(crate::StoreError::backend(NotQueryable))
    }

    async fn ping(&self) -> Result<(), crate::StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_contract_names() {
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert!("session_deleted".parse::<AuditKind>().is_err());
    }

    #[test]
    fn event_ids_follow_time() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let a = AuditEvent::new(AuditKind::LoginFailed, Actor::System, t);
        let b = AuditEvent::new(
            AuditKind::LoginFailed,
            Actor::System,
            t + time::Duration::seconds(1),
        );
        assert!(a.id < b.id);
    }

    #[test]
    fn queries_apply_every_filter() {
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let e = AuditEvent::new(AuditKind::SessionCreated, Actor::User, t).session("s1", "alice");
        let q = AuditQuery {
            user_id: Some("alice".into()),
            kind: Some(AuditKind::SessionCreated),
            ..AuditQuery::default()
        };
        assert!(q.matches(&e));
        assert!(
            !AuditQuery {
                user_id: Some("bob".into()),
                ..q.clone()
            }
            .matches(&e)
        );
        assert!(
            !AuditQuery {
                since: Some(t + time::Duration::seconds(1)),
                ..q.clone()
            }
            .matches(&e)
        );
        assert_eq!(AuditQuery::default().effective_limit(), 100);
        assert_eq!(AuditQuery { limit: 5000, ..q }.effective_limit(), 1000);
    }

    #[tokio::test]
    async fn the_tracing_audit_log_writes_every_field_and_refuses_queries() {
        use crate::AuditLog as _;
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let mut event = AuditEvent::new(AuditKind::SessionRevoked, Actor::Admin, t);
        event.session_id = Some("sid-123".into());
        event.user_id = Some("alice".into());
        event.reason = Some("admin".into());
        event.details = serde_json::json!({"note": "laptop stolen"});
        let log = TracingAuditLog;
        {
            let _guard = tracing::subscriber::set_default(subscriber);
            log.append(&event).await.unwrap();
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for needle in [
            "session_audit",
            "session_revoked",
            "sid-123",
            "alice",
            "reason=\"admin\"",
            "laptop stolen",
            &event.id.to_string(),
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
        assert!(log.query(&AuditQuery::default()).await.is_err());
        assert!(log.ping().await.is_ok());
    }
}
