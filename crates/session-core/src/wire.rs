//! The JSON bodies of the service's answers, one definition for both
//! sides of the wire: the server writes them, `session-admin` (and any
//! other client) reads them. Serde only: the HTTP side (status codes,
//! headers, cookies) stays with the server. With the non-default `openapi`
//! feature each body also derives `utoipa::ToSchema`, for the server's
//! OpenAPI document.
//!
//! The audit events and key views the admin listener lists are core's own
//! types, re-exported here: [`AuditEvent`], [`KeyInfo`],
//! [`ArchivedKeyInfo`].

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

pub use crate::audit::AuditEvent;
pub use crate::keys::{ArchivedKeyInfo, KeyInfo};
use crate::session::Session;

/// A point in time on the wire: an RFC 3339 string in UTC, as the contract
/// says every time is. A body's time fields are of this type, so none can
/// be written in `time`'s own serde form (an array of numbers) by a field
/// that forgot its `serde(with)`.
///
/// Each such field still says `#[schema(value_type = String, format =
/// DateTime)]`: utoipa inlines a field's schema only for types it knows,
/// and a `ToSchema` of this type would turn every time field of the
/// published OpenAPI document into a `$ref` to a new `Timestamp` schema.
/// The type deliberately has no `ToSchema`, so a field without the
/// attribute does not compile (with the `openapi` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub OffsetDateTime);

impl From<OffsetDateTime> for Timestamp {
    fn from(t: OffsetDateTime) -> Self {
        Self(t)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde::rfc3339::serialize(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        time::serde::rfc3339::deserialize(deserializer).map(Self)
    }
}

/// The contract's error body, `{"error": "<code>", "message": "<text>"}`,
/// of every 4xx and 5xx answer. (The OpenAPI document describes it by
/// hand, as `Error`, open to further members.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A fixed snake_case code, e.g. `invalid_token`.
    pub error: String,
    /// Text for humans (read as empty when a server leaves it out).
    #[serde(default)]
    pub message: String,
}

/// Login / refresh / session-creation answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenResponse {
    /// Session id.
    pub session_id: String,
    /// User id.
    pub user_id: String,
    /// CSRF token for cookie-transport state changes.
    pub csrf_token: String,
    /// When the access token expires (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub access_expires_at: Timestamp,
    /// When the session dies unless refreshed (RFC 3339).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
    /// Bearer transport: the access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Bearer transport: the refresh token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Bearer transport: `Bearer`, or `DPoP` for a session bound to a DPoP key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Bearer transport: access-token lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

/// Who-am-I answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    /// Session id.
    pub session_id: String,
    /// User id.
    pub user_id: String,
    /// Login time.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Last login or refresh.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen_at: Timestamp,
    /// When the session dies unless refreshed.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
    /// Metadata from the backend that opened it.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// Cookie transport only: the session's CSRF token (also in the
    /// `__Host-csrf` cookie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<String>,
}

impl From<&Session> for SessionView {
    fn from(s: &Session) -> Self {
        Self {
            session_id: s.id.to_string(),
            user_id: s.user_id.clone(),
            created_at: s.created_at.into(),
            last_seen_at: s.last_seen_at.into(),
            expires_at: s.expires_at().into(),
            metadata: s.metadata.clone(),
            csrf_token: None,
        }
    }
}

/// One device in the caller's list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceView {
    /// Session id.
    pub session_id: String,
    /// Login time.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Last login or refresh.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen_at: Timestamp,
    /// Client IP at login or last refresh.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Whether this is the calling session.
    pub current: bool,
    /// (v1.1, with a GeoIP database) where the session was last used;
    /// `null` where unknown. Absent without a database.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<LocationView>, nullable))]
    pub location: Option<Option<LocationView>>,
}

/// (v1.1) Where a session was last used, as far as the GeoIP database
/// knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocationView {
    /// ISO 3166-1 alpha-2 country code, `null` where unknown.
    pub country: Option<String>,
    /// English city name, `null` where unknown.
    pub city: Option<String>,
}

impl LocationView {
    /// The view of `s`'s location for a server with (`geoip`: `Some`) or
    /// without (`None`, the field is left out) a GeoIP database.
    pub fn of(s: &Session, geoip: bool) -> Option<Option<Self>> {
        geoip.then(|| {
            s.location.as_ref().map(|l| Self {
                country: l.country.clone(),
                city: l.city.clone(),
            })
        })
    }
}

/// The caller's devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceList {
    /// Active sessions, oldest first.
    pub sessions: Vec<DeviceView>,
}

/// One session as operators see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminSessionView {
    /// Session id.
    pub session_id: String,
    /// User id.
    pub user_id: String,
    /// Login time.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Last login or refresh.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub last_seen_at: Timestamp,
    /// The earlier of the idle and absolute deadlines.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
    /// Idle deadline.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub idle_expires_at: Timestamp,
    /// Absolute deadline.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub absolute_expires_at: Timestamp,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Metadata.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Value,
    /// Alive now.
    pub active: bool,
    /// When revoked.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = DateTime))]
    pub revoked_at: Option<Timestamp>,
    /// Why revoked.
    pub revoked_reason: Option<String>,
    /// Refresh-token generation.
    pub refresh_generation: u64,
    /// (v1.1, with a GeoIP database) where the session was last used;
    /// `null` where unknown. Absent without a database.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<LocationView>, nullable))]
    pub location: Option<Option<LocationView>>,
}

impl AdminSessionView {
    /// The view of `s` at `now`, for a server with or without (`geoip`) a
    /// GeoIP database.
    pub fn new(s: &Session, now: OffsetDateTime, geoip: bool) -> Self {
        Self {
            session_id: s.id.to_string(),
            user_id: s.user_id.clone(),
            created_at: s.created_at.into(),
            last_seen_at: s.last_seen_at.into(),
            expires_at: s.expires_at().into(),
            idle_expires_at: s.idle_expires_at.into(),
            absolute_expires_at: s.absolute_expires_at.into(),
            ip: s.ip.clone(),
            user_agent: s.user_agent.clone(),
            metadata: s.metadata.clone(),
            active: s.is_active(now),
            revoked_at: s.revoked.map(|r| r.at.into()),
            revoked_reason: s.revoked.map(|r| r.reason.as_str().to_owned()),
            refresh_generation: s.refresh.generation,
            location: LocationView::of(s, geoip),
        }
    }
}

// Audit-chain checkpoints: the form `GET /admin/v1/audit/checkpoints` lists
// them in, `session-admin audit checkpoints --export` keeps them in outside
// the database, and `POST /admin/v1/audit/verify` takes them back in. Shape
// only: the server checks the fields before it uses them.

/// One signed head of the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckpointView {
    /// The `seq` of the last event it covers.
    pub seq: i64,
    /// That event's chain hash, 64 lowercase hex digits.
    pub head_hash: String,
    /// The signing key's id (a key of the ring, or of its archive).
    pub kid: String,
    /// The base64url signature over `session-audit-checkpoint/v1\n`, the
    /// `seq` as 8 big-endian bytes and the 32 hash bytes.
    pub signature: String,
    /// When it was written (the database's clock).
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

/// `{"checkpoints": [...]}`: the export file, and the body of `POST
/// /admin/v1/audit/verify` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckpointList {
    /// Oldest first.
    pub checkpoints: Vec<CheckpointView>,
}

/// A field that may be absent, `null` or a value: present (`Some`) even
/// when `null`, which a plain `Option<Option<_>>` would read as absent.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_timestamp_is_written_exactly_as_the_rfc3339_attribute_wrote_it() {
        #[derive(Serialize)]
        struct Attributed {
            #[serde(with = "time::serde::rfc3339")]
            at: OffsetDateTime,
            #[serde(with = "time::serde::rfc3339::option")]
            maybe: Option<OffsetDateTime>,
        }
        #[derive(Serialize)]
        struct Typed {
            at: Timestamp,
            maybe: Option<Timestamp>,
        }
        for at in [
            OffsetDateTime::UNIX_EPOCH,
            datetime!(2025-03-04 05:06:07 UTC),
            datetime!(2025-03-04 05:06:07.120 UTC),
            datetime!(2025-03-04 05:06:07.123456789 UTC),
            datetime!(2025-03-04 05:06:07 +02:00),
        ] {
            for maybe in [None, Some(at)] {
                let attributed = serde_json::to_string(&Attributed { at, maybe }).unwrap();
                let typed = serde_json::to_string(&Typed {
                    at: at.into(),
                    maybe: maybe.map(Timestamp),
                })
                .unwrap();
                assert_eq!(typed, attributed);
            }
        }
    }

    #[test]
    fn a_timestamp_is_an_rfc3339_string_in_utc() {
        let json = |t: OffsetDateTime| serde_json::to_string(&Timestamp(t)).unwrap();
        assert_eq!(
            json(datetime!(2025-03-04 05:06:07 UTC)),
            r#""2025-03-04T05:06:07Z""#
        );
        assert_eq!(
            json(datetime!(2025-03-04 05:06:07.25 UTC)),
            r#""2025-03-04T05:06:07.25Z""#
        );
        assert_eq!(serde_json::to_string(&None::<Timestamp>).unwrap(), "null");
    }

    #[test]
    fn a_timestamp_reads_back_what_it_wrote_and_nothing_else() {
        let at = Timestamp(datetime!(2025-03-04 05:06:07.5 UTC));
        let text = serde_json::to_string(&at).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&text).unwrap(), at);
        for other in [
            r#""2025-03-04 05:06:07""#,
            "1741064767",
            "[2025,63]",
            r#""""#,
        ] {
            assert!(serde_json::from_str::<Timestamp>(other).is_err(), "{other}");
        }
    }

    fn admin_view(location: Option<Option<LocationView>>) -> AdminSessionView {
        AdminSessionView {
            session_id: "s1".into(),
            user_id: "alice".into(),
            created_at: datetime!(2026-01-31 12:00 UTC).into(),
            last_seen_at: datetime!(2026-01-31 12:05 UTC).into(),
            expires_at: datetime!(2026-01-31 13:05 UTC).into(),
            idle_expires_at: datetime!(2026-01-31 13:05 UTC).into(),
            absolute_expires_at: datetime!(2026-02-01 12:00 UTC).into(),
            ip: Some("203.0.113.9".into()),
            user_agent: None,
            metadata: json!({"device": "phone"}),
            active: true,
            revoked_at: None,
            revoked_reason: None,
            refresh_generation: 3,
            location,
        }
    }

    #[test]
    fn a_location_is_absent_without_a_database_and_null_where_unknown_both_ways() {
        let paris = LocationView {
            country: Some("FR".into()),
            city: Some("Paris".into()),
        };
        for (location, written) in [
            (None, None),
            (Some(None), Some(json!(null))),
            (
                Some(Some(paris)),
                Some(json!({"country": "FR", "city": "Paris"})),
            ),
        ] {
            let view = admin_view(location);
            let value = serde_json::to_value(&view).unwrap();
            assert_eq!(value.get("location"), written.as_ref(), "{value}");
            let back: AdminSessionView = serde_json::from_value(value).unwrap();
            assert_eq!(back, view);
        }
    }

    #[test]
    fn every_body_reads_back_what_the_server_writes() {
        let token = TokenResponse {
            session_id: "s1".into(),
            user_id: "alice".into(),
            csrf_token: "c".into(),
            access_expires_at: datetime!(2026-01-31 12:15 UTC).into(),
            expires_at: datetime!(2026-01-31 13:00 UTC).into(),
            access_token: None,
            refresh_token: None,
            token_type: Some("DPoP".into()),
            expires_in: Some(900),
        };
        let text = serde_json::to_string(&token).unwrap();
        assert!(!text.contains("access_token"), "{text}");
        assert_eq!(serde_json::from_str::<TokenResponse>(&text).unwrap(), token);

        let devices = DeviceList {
            sessions: vec![DeviceView {
                session_id: "s1".into(),
                created_at: datetime!(2026-01-31 12:00 UTC).into(),
                last_seen_at: datetime!(2026-01-31 12:05 UTC).into(),
                ip: None,
                user_agent: Some("curl/8".into()),
                current: true,
                location: Some(None),
            }],
        };
        let text = serde_json::to_string(&devices).unwrap();
        assert_eq!(serde_json::from_str::<DeviceList>(&text).unwrap(), devices);

        let checkpoints = CheckpointList {
            checkpoints: vec![CheckpointView {
                seq: 7,
                head_hash: "ab".repeat(32),
                kid: "k1".into(),
                signature: "c2ln".into(),
                at: datetime!(2026-01-31 12:00:00.5 UTC).into(),
            }],
        };
        let text = serde_json::to_string(&checkpoints).unwrap();
        assert_eq!(
            serde_json::from_str::<CheckpointList>(&text).unwrap(),
            checkpoints
        );
        assert!(
            serde_json::from_str::<CheckpointList>(r#"{"checkpoints": [], "more": 1}"#).is_err()
        );
    }

    #[test]
    fn an_error_body_without_a_message_reads_as_an_empty_one() {
        let body: ErrorBody = serde_json::from_str(r#"{"error": "not_found"}"#).unwrap();
        assert_eq!(body.error, "not_found");
        assert_eq!(body.message, "");
        assert_eq!(
            serde_json::to_value(ErrorBody {
                error: "internal_error".into(),
                message: "internal error".into(),
            })
            .unwrap(),
            json!({"error": "internal_error", "message": "internal error"})
        );
    }
}
