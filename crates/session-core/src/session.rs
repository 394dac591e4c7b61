//! The session model and its lifetimes.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::secret::{SessionId, TokenDigest};

/// Lifetimes and limits, with the contract's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Access-token lifetime (default 15 min).
    pub access_token: Duration,
    /// A session not refreshed for this long is dead (default 14 days).
    pub idle_timeout: Duration,
    /// A session dies this long after login, whatever its activity (90 days).
    pub absolute_lifetime: Duration,
    /// Window in which the token rotated away last is answered with the same
    /// successor (default 10 s; zero turns it off).
    pub refresh_grace: Duration,
    /// Active sessions per user; 0 is unlimited.
    pub max_sessions_per_user: u32,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            access_token: Duration::minutes(15),
            idle_timeout: Duration::days(14),
            absolute_lifetime: Duration::days(90),
            refresh_grace: Duration::seconds(10),
            max_sessions_per_user: 0,
        }
    }
}

/// Why a session was revoked; the contract's `reason` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// An operator revoked it.
    Admin,
    /// The user revoked one of their own sessions.
    UserRevoked,
    /// All of the user's sessions were revoked.
    RevokeAll,
    /// The user's password changed.
    PasswordChanged,
    /// A rotated-away refresh token was presented again.
    ReuseDetected,
    /// The anomaly policy revoked it.
    Anomaly,
    /// The per-user session limit evicted it.
    SessionLimit,
}

impl RevokeReason {
    /// The contract's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Admin => "admin",
            Self::UserRevoked => "user_revoked",
            Self::RevokeAll => "revoke_all",
            Self::PasswordChanged => "password_changed",
            Self::ReuseDetected => "reuse_detected",
            Self::Anomaly => "anomaly",
            Self::SessionLimit => "session_limit",
        }
    }

    /// Parses the contract's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "logout" => Self::Logout,
            "admin" => Self::Admin,
            "user_revoked" => Self::UserRevoked,
            "revoke_all" => Self::RevokeAll,
            "password_changed" => Self::PasswordChanged,
            "reuse_detected" => Self::ReuseDetected,
            "anomaly" => Self::Anomaly,
            "session_limit" => Self::SessionLimit,
            _ => return None,
        })
    }
}

/// When and why a session was revoked. A revoked session stays readable as
/// a tombstone until its own deadline so a late refresh is answered
/// `session_revoked` rather than `invalid_refresh_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Why.
    pub reason: RevokeReason,
}

/// The refresh-token family of a session: which token is live, which was
/// rotated away last, and what to answer a replay of it inside the grace
/// window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshState {
    /// Generation of the live token; 0 at login, +1 per rotation.
    pub generation: u64,
    /// Digest of the live token.
    pub current: TokenDigest,
    /// Digest of the token rotated away last (generation - 1).
    pub previous: Option<TokenDigest>,
    /// When `previous` was rotated away.
    #[serde(with = "time::serde::rfc3339::option")]
    pub rotated_at: Option<OffsetDateTime>,
    /// The live token, encrypted under the server's seal key, kept only to
    /// answer a replay of `previous` inside the grace window.
    pub grace_successor: Option<Vec<u8>>,
    /// Times of recent refreshes, for the rapid-refresh rule (bounded).
    #[serde(default, with = "unix_seconds_vec")]
    pub recent_refreshes: Vec<OffsetDateTime>,
}

mod unix_seconds_vec {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::OffsetDateTime;

    pub(super) fn serialize<S: Serializer>(v: &[OffsetDateTime], s: S) -> Result<S::Ok, S::Error> {
        let secs: Vec<i64> = v.iter().map(|t| t.unix_timestamp()).collect();
        secs.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<OffsetDateTime>, D::Error> {
        let secs = Vec::<i64>::deserialize(d)?;
        secs.into_iter()
            .map(|s| OffsetDateTime::from_unix_timestamp(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// One session: a user signed in on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// The user it belongs to.
    pub user_id: String,
    /// Login time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last login or refresh.
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen_at: OffsetDateTime,
    /// Dies at this instant unless refreshed before.
    #[serde(with = "time::serde::rfc3339")]
    pub idle_expires_at: OffsetDateTime,
    /// Dies at this instant whatever happens.
    #[serde(with = "time::serde::rfc3339")]
    pub absolute_expires_at: OffsetDateTime,
    /// Client IP at login or last refresh.
    pub ip: Option<String>,
    /// Client user agent at login or last refresh.
    pub user_agent: Option<String>,
    /// Free-form metadata from the backend that opened it.
    pub metadata: serde_json::Value,
    /// The refresh-token family.
    pub refresh: RefreshState,
    /// Set once revoked; never cleared.
    pub revoked: Option<Revocation>,
    /// The user's session epoch read when this session's login (or
    /// creation request) began. A password change or revoke-all moves the
    /// user's epoch on; from then on a store refuses to create this session
    /// and a refresh refuses to rotate it (see `SessionStore::user_epoch`).
    #[serde(default)]
    pub epoch: u64,
    /// Optimistic-concurrency version: every write bumps it, and stores
    /// replace a session only if the version they read is still there.
    pub version: u64,
    /// (v1.1) Thumbprint of the DPoP key the session is bound to (RFC
    /// 9449): from then on every refresh needs a proof by that key, and
    /// its access tokens carry it as `cnf.jkt`. Absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_jkt: Option<crate::dpop::Jkt>,
    /// (v1.1) Where the session was last used from, with when, as far as
    /// the GeoIP database knew (kept from the last use it knew).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<crate::geo::Location>,
}

impl Session {
    /// A fresh session opened at `now`, whose live refresh token has digest
    /// `refresh_digest` (generation 0).
    pub fn new(
        id: SessionId,
        user_id: String,
        refresh_digest: TokenDigest,
        lifetimes: &Lifetimes,
        now: OffsetDateTime,
    ) -> Self {
        let absolute = now + lifetimes.absolute_lifetime;
        Self {
            id,
            user_id,
            created_at: now,
            last_seen_at: now,
            idle_expires_at: (now + lifetimes.idle_timeout).min(absolute),
            absolute_expires_at: absolute,
            ip: None,
            user_agent: None,
            metadata: serde_json::Value::Object(serde_json::Map::new()),
            refresh: RefreshState {
                generation: 0,
                current: refresh_digest,
                previous: None,
                rotated_at: None,
                grace_successor: None,
                recent_refreshes: Vec::new(),
            },
            revoked: None,
            epoch: 0,
            version: 0,
            dpop_jkt: None,
            location: None,
        }
    }

    /// The instant the session dies unless refreshed: the earlier of its
    /// idle and absolute deadlines. Stores expire the record here.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.idle_expires_at.min(self.absolute_expires_at)
    }

    /// Whether the session has outlived a deadline at `now`.
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        now >= self.expires_at()
    }

    /// Alive: not revoked and before both deadlines.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked.is_none() && !self.is_expired(now)
    }

    /// Marks the session revoked at `now` (keeps the first revocation).
    pub fn revoke(&mut self, reason: RevokeReason, now: OffsetDateTime) {
        if self.revoked.is_none() {
            self.revoked = Some(Revocation { at: now, reason });
            self.refresh.grace_successor = None;
            self.version += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
    }

    fn session(l: &Lifetimes) -> Session {
        Session::new(
            SessionId::generate(),
            "u".into(),
            TokenDigest::of("t"),
            l,
            at(0),
        )
    }

    #[test]
    fn defaults_match_the_contract() {
        let l = Lifetimes::default();
        assert_eq!(l.access_token, Duration::minutes(15));
        assert_eq!(l.idle_timeout, Duration::days(14));
        assert_eq!(l.absolute_lifetime, Duration::days(90));
        assert_eq!(l.refresh_grace, Duration::seconds(10));
        assert_eq!(l.max_sessions_per_user, 0);
    }

    #[test]
    fn a_session_dies_at_its_idle_deadline() {
        let s = session(&Lifetimes::default());
        assert!(s.is_active(at(0)));
        assert!(s.is_active(at(14 * 86_400 - 1)));
        assert!(!s.is_active(at(14 * 86_400)));
    }

    #[test]
    fn the_absolute_deadline_caps_the_idle_one() {
        let l = Lifetimes {
            idle_timeout: Duration::days(30),
            absolute_lifetime: Duration::days(1),
            ..Lifetimes::default()
        };
        let s = session(&l);
        assert_eq!(s.expires_at(), at(86_400));
        assert!(!s.is_active(at(86_400)));
    }

    #[test]
    fn revocation_is_kept_once_and_bumps_the_version() {
        let mut s = session(&Lifetimes::default());
        s.revoke(RevokeReason::Logout, at(5));
        s.revoke(RevokeReason::Admin, at(6));
        assert_eq!(s.revoked.map(|r| r.reason), Some(RevokeReason::Logout));
        assert_eq!(s.version, 1);
        assert!(!s.is_active(at(5)));
    }

    #[test]
    fn revoke_reasons_round_trip_their_contract_names() {
        for r in [
            RevokeReason::Logout,
            RevokeReason::Admin,
            RevokeReason::UserRevoked,
            RevokeReason::RevokeAll,
            RevokeReason::PasswordChanged,
            RevokeReason::ReuseDetected,
            RevokeReason::Anomaly,
            RevokeReason::SessionLimit,
        ] {
            assert_eq!(RevokeReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
