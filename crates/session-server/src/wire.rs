//! What the listeners answer with: the JSON bodies of sessions and issued
//! tokens (with their OpenAPI schemas), and the helpers every router uses
//! to send them (`issued_response`, `no_store`, `log_session`). Routers and
//! the OpenAPI document import from here; nothing here imports a router.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use session_axum::IssuedCookies;
use session_core::service::Issued;
use session_core::{Session, SessionId};
use time::OffsetDateTime;

use crate::state::AppState;

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
/// attribute does not compile.
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

/// Login / refresh / session-creation answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// Session id.
    pub session_id: String,
    /// User id.
    pub user_id: String,
    /// CSRF token for cookie-transport state changes.
    pub csrf_token: String,
    /// When the access token expires (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub access_expires_at: Timestamp,
    /// When the session dies unless refreshed (RFC 3339).
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Bearer transport: the access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Bearer transport: the refresh token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Bearer transport: `Bearer`, or `DPoP` for a session bound to a DPoP key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Bearer transport: access-token lifetime in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

/// Who-am-I answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Session id.
    pub session_id: String,
    /// User id.
    pub user_id: String,
    /// Login time.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Last login or refresh.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// When the session dies unless refreshed.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Metadata from the backend that opened it.
    #[schema(value_type = Object)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// Session id.
    pub session_id: String,
    /// Login time.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Last login or refresh.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// Client IP at login or last refresh.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Whether this is the calling session.
    pub current: bool,
    /// (v1.1, with a GeoIP database) where the session was last used;
    /// `null` where unknown. Absent without a database.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<LocationView>, nullable)]
    pub location: Option<Option<LocationView>>,
}

/// (v1.1) Where a session was last used, as far as the GeoIP database
/// knows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LocationView {
    /// ISO 3166-1 alpha-2 country code, `null` where unknown.
    pub country: Option<String>,
    /// English city name, `null` where unknown.
    pub city: Option<String>,
}

impl LocationView {
    /// The view of `s`'s location for a server with (`Some`) or without
    /// (`None`, the field is left out) a GeoIP database.
    pub fn of(state: &AppState, s: &Session) -> Option<Option<Self>> {
        state.geoip.as_ref()?;
        Some(s.location.as_ref().map(|l| Self {
            country: l.country.clone(),
            city: l.city.clone(),
        }))
    }
}

/// The caller's devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceList {
    /// Active sessions, oldest first.
    pub sessions: Vec<DeviceView>,
}

/// One session as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminSessionView {
    /// Session id.
    pub session_id: String,
    /// User id.
    pub user_id: String,
    /// Login time.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Last login or refresh.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// The earlier of the idle and absolute deadlines.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// Idle deadline.
    #[schema(value_type = String, format = DateTime)]
    pub idle_expires_at: Timestamp,
    /// Absolute deadline.
    #[schema(value_type = String, format = DateTime)]
    pub absolute_expires_at: Timestamp,
    /// Client IP.
    pub ip: Option<String>,
    /// Client user agent.
    pub user_agent: Option<String>,
    /// Metadata.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Alive now.
    pub active: bool,
    /// When revoked.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
    /// Why revoked.
    pub revoked_reason: Option<&'static str>,
    /// Refresh-token generation.
    pub refresh_generation: u64,
    /// (v1.1, with a GeoIP database) where the session was last used;
    /// `null` where unknown. Absent without a database.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<LocationView>, nullable)]
    pub location: Option<Option<LocationView>>,
}

impl AdminSessionView {
    pub(crate) fn new(s: &Session, now: OffsetDateTime, state: &AppState) -> Self {
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
            revoked_reason: s.revoked.map(|r| r.reason.as_str()),
            refresh_generation: s.refresh.generation,
            location: LocationView::of(state, s),
        }
    }
}

/// Makes a response never cacheable: every answer that carries or names
/// a token, or says who the caller is.
pub(crate) fn no_store(res: &mut Response) {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// The answer that carries newly issued tokens: JSON, plus cookies in
/// cookie transport, and never cacheable.
pub(crate) fn issued_response(
    state: &AppState,
    issued: &Issued,
    bearer: bool,
    status: StatusCode,
) -> Response {
    let now = state.service.now();
    let expires_in = (issued.access_expires_at - now).whole_seconds().max(0);
    let body = TokenResponse {
        session_id: issued.session.id.to_string(),
        user_id: issued.session.user_id.clone(),
        csrf_token: issued.csrf_token.expose().to_owned(),
        access_expires_at: issued.access_expires_at.into(),
        expires_at: issued.session.expires_at().into(),
        access_token: bearer.then(|| issued.access_token.expose().to_owned()),
        refresh_token: bearer.then(|| issued.refresh_token.expose().to_owned()),
        token_type: bearer.then_some(if issued.session.dpop_jkt.is_some() {
            "DPoP"
        } else {
            "Bearer"
        }),
        expires_in: bearer.then_some(expires_in),
    };
    let mut res = (status, Json(body)).into_response();
    if !bearer {
        let session_left = (issued.session.expires_at() - now).whole_seconds().max(0);
        let tokens = IssuedCookies {
            access: issued.access_token.expose(),
            refresh: issued.refresh_token.expose(),
            csrf: issued.csrf_token.expose(),
        };
        state
            .cookies
            .set_tokens(&mut res, tokens, expires_in, session_left);
    }
    no_store(&mut res);
    log_session(&mut res, &issued.session.id);
    res
}

/// Names the session in the request's log line (a session id is not a
/// secret; tokens never are logged).
pub(crate) fn log_session(res: &mut Response, id: &SessionId) {
    res.extensions_mut()
        .insert(crate::telemetry::LoggedSession(id.to_string()));
}

#[cfg(test)]
mod tests {
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
}
