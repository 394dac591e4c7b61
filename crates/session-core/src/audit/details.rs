//! The `details` of the audit events the service writes: one type per
//! shape. The event kinds and their detail fields are part of the contract
//! ("Audit events", "Anomaly policy"): a field changes here only with it,
//! and the tests below pin each shape's JSON.
//!
//! [`json`] turns one into the [`AuditEvent::details`](super::AuditEvent)
//! value the stores keep; as a `serde_json::Value` its keys are sorted,
//! whatever the order of the fields here.

use serde::Serialize;

use crate::anomaly::Anomaly;
use crate::geo::{Coordinates, Location};

/// The JSON of `details`, for [`AuditEvent::details`](super::AuditEvent).
pub(crate) fn json(details: &impl Serialize) -> serde_json::Value {
    match serde_json::to_value(details) {
        Ok(value) => value,
        // Not reached: every type here is strings, numbers, booleans and
        // options, nothing keyed by anything but a field name. Were it
        // reached, the event is still recorded, with empty details.
        Err(e) => {
            tracing::error!(error = %e, "audit details do not serialize");
            serde_json::Value::Object(serde_json::Map::new())
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `login_failed`: whether the user name exists; `superseded` (only when
/// true) for a right password whose session lost to a password change or
/// revoke-all that landed meanwhile.
#[derive(Debug, Serialize)]
pub(crate) struct LoginFailed {
    pub(crate) known_user: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) superseded: bool,
}

/// `session_refreshed`: the session's refresh generation after it;
/// `grace_replay` (only when true) for a replay answered within the grace
/// window.
#[derive(Debug, Serialize)]
pub(crate) struct Refreshed {
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) grace_replay: bool,
    pub(crate) generation: u64,
}

/// `refresh_reuse_detected`: the generation of the token presented and the
/// session's live one.
#[derive(Debug, Serialize)]
pub(crate) struct ReuseDetected {
    pub(crate) presented_generation: u64,
    pub(crate) live_generation: u64,
}

/// `session_revoked` by an operator who gave a reason: the operator's
/// note (the event's `reason` stays the contract's value).
#[derive(Debug, Serialize)]
pub(crate) struct RevocationNote<'a> {
    pub(crate) note: &'a str,
}

/// `key_rotated`: the new key's id and algorithm, its activation time (RFC
/// 3339; `null` if it cannot be written as one) and whether the rotation
/// was immediate.
#[derive(Debug, Serialize)]
pub(crate) struct KeyRotated<'a> {
    pub(crate) kid: &'a str,
    pub(crate) alg: String,
    pub(crate) activated_at: Option<String>,
    pub(crate) immediate: bool,
}

/// `anomaly_detected`: the signal, the policy's action, the session's and
/// the refresh's values and, for impossible travel, the two places, the
/// distance and the speed.
#[derive(Debug, Serialize)]
pub(crate) struct AnomalyDetected<'a> {
    pub(crate) signal: &'static str,
    pub(crate) action: String,
    pub(crate) old: &'a str,
    pub(crate) new: &'a str,
    #[serde(flatten)]
    pub(crate) travel: Option<TravelDetails<'a>>,
}

impl<'a> From<&'a Anomaly> for AnomalyDetected<'a> {
    fn from(a: &'a Anomaly) -> Self {
        Self {
            signal: a.signal.as_str(),
            action: a.action.to_string(),
            old: &a.old,
            new: &a.new,
            travel: a.travel.as_ref().map(|t| TravelDetails {
                from: Place::from(&t.from),
                to: Place::from(&t.to),
                distance_km: t.distance_km.round(),
                speed_kmh: t.speed_kmh.round(),
            }),
        }
    }
}

/// The travel part of [`AnomalyDetected`]: both places, the distance in km
/// and the speed in km/h (whole numbers, as floats).
#[derive(Debug, Serialize)]
pub(crate) struct TravelDetails<'a> {
    pub(crate) from: Place<'a>,
    pub(crate) to: Place<'a>,
    pub(crate) distance_km: f64,
    pub(crate) speed_kmh: f64,
}

/// A place as the audit log shows it: country and city (`null` where
/// unknown), plus the coordinates and accuracy where known.
#[derive(Debug, Serialize)]
pub(crate) struct Place<'a> {
    pub(crate) country: Option<&'a str>,
    pub(crate) city: Option<&'a str>,
    #[serde(flatten)]
    pub(crate) coordinates: Option<Coordinates>,
}

impl<'a> From<&'a Location> for Place<'a> {
    fn from(l: &'a Location) -> Self {
        Self {
            country: l.country.as_deref(),
            city: l.city.as_deref(),
            coordinates: l.coordinates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(details: &impl Serialize) -> String {
        json(details).to_string()
    }

    #[test]
    fn login_failed_says_whether_the_user_exists_and_only_then_superseded() {
        let failed = |known_user, superseded| {
            written(&LoginFailed {
                known_user,
                superseded,
            })
        };
        assert_eq!(failed(false, false), r#"{"known_user":false}"#);
        assert_eq!(failed(true, false), r#"{"known_user":true}"#);
        assert_eq!(
            failed(true, true),
            r#"{"known_user":true,"superseded":true}"#
        );
    }

    #[test]
    fn session_refreshed_has_the_generation_and_only_a_replay_says_so() {
        assert_eq!(
            written(&Refreshed {
                grace_replay: false,
                generation: 3
            }),
            r#"{"generation":3}"#
        );
        assert_eq!(
            written(&Refreshed {
                grace_replay: true,
                generation: 3
            }),
            r#"{"generation":3,"grace_replay":true}"#
        );
    }

    #[test]
    fn reuse_detected_has_both_generations() {
        assert_eq!(
            written(&ReuseDetected {
                presented_generation: 2,
                live_generation: 4
            }),
            r#"{"live_generation":4,"presented_generation":2}"#
        );
    }

    #[test]
    fn an_operators_revocation_keeps_the_note() {
        assert_eq!(
            written(&RevocationNote {
                note: "laptop stolen"
            }),
            r#"{"note":"laptop stolen"}"#
        );
    }

    #[test]
    fn key_rotated_has_the_key_and_an_activation_time_or_null() {
        let rotated = |activated_at: Option<&str>, immediate| {
            written(&KeyRotated {
                kid: "k-2025",
                alg: "EdDSA".to_owned(),
                activated_at: activated_at.map(str::to_owned),
                immediate,
            })
        };
        assert_eq!(
            rotated(Some("2025-03-04T05:06:07Z"), true),
            r#"{"activated_at":"2025-03-04T05:06:07Z","alg":"EdDSA","immediate":true,"kid":"k-2025"}"#
        );
        assert_eq!(
            rotated(None, false),
            r#"{"activated_at":null,"alg":"EdDSA","immediate":false,"kid":"k-2025"}"#
        );
    }

    #[test]
    fn an_anomaly_has_its_signal_action_and_both_values() {
        assert_eq!(
            written(&AnomalyDetected {
                signal: "user_agent",
                action: "revoke".to_owned(),
                old: "Firefox",
                new: "Chrome",
                travel: None,
            }),
            r#"{"action":"revoke","new":"Chrome","old":"Firefox","signal":"user_agent"}"#
        );
    }

    #[test]
    fn an_anomaly_is_written_from_the_rule_that_fired() {
        use time::macros::datetime;

        use crate::anomaly::{AnomalyAction, Signal};
        use crate::geo::Travel;

        let user_agent = Anomaly {
            signal: Signal::UserAgent,
            action: AnomalyAction::Revoke,
            old: "Firefox".into(),
            new: "Chrome".into(),
            travel: None,
        };
        assert_eq!(
            written(&AnomalyDetected::from(&user_agent)),
            r#"{"action":"revoke","new":"Chrome","old":"Firefox","signal":"user_agent"}"#
        );
        let paris = Location {
            country: Some("FR".into()),
            city: Some("Paris".into()),
            coordinates: Some(Coordinates {
                latitude: 48.8566,
                longitude: 2.3522,
                accuracy_km: Some(20),
            }),
            // When it was seen is not written.
            seen_at: Some(datetime!(2025-03-04 05:06:07 UTC)),
        };
        let new_york = Location {
            country: Some("US".into()),
            city: None,
            coordinates: Some(Coordinates {
                latitude: 40.7128,
                longitude: -74.006,
                accuracy_km: None,
            }),
            seen_at: None,
        };
        let travel = Anomaly {
            signal: Signal::ImpossibleTravel,
            action: AnomalyAction::Log,
            old: "Paris, FR".into(),
            new: "US".into(),
            travel: Some(Travel {
                from: paris,
                to: new_york,
                distance_km: 5837.4,
                speed_kmh: 5837.5,
            }),
        };
        // Distance and speed rounded to whole numbers.
        assert_eq!(
            written(&AnomalyDetected::from(&travel)),
            concat!(
                r#"{"action":"log","distance_km":5837.0,"#,
                r#""from":{"accuracy_km":20,"city":"Paris","country":"FR","latitude":48.8566,"longitude":2.3522},"#,
                r#""new":"US","old":"Paris, FR","signal":"impossible_travel","speed_kmh":5838.0,"#,
                r#""to":{"city":null,"country":"US","latitude":40.7128,"longitude":-74.006}}"#
            )
        );
    }

    #[test]
    fn impossible_travel_adds_both_places_the_distance_and_the_speed() {
        let paris = Place {
            country: Some("FR"),
            city: Some("Paris"),
            coordinates: Some(Coordinates {
                latitude: 48.8566,
                longitude: 2.3522,
                accuracy_km: Some(20),
            }),
        };
        let new_york = || Place {
            country: Some("US"),
            city: None,
            coordinates: Some(Coordinates {
                latitude: 40.7128,
                longitude: -74.006,
                accuracy_km: None,
            }),
        };
        assert_eq!(
            written(&AnomalyDetected {
                signal: "impossible_travel",
                action: "log".to_owned(),
                old: "Paris, FR",
                new: "US",
                travel: Some(TravelDetails {
                    from: paris,
                    to: new_york(),
                    distance_km: 5837.0,
                    speed_kmh: 5838.0,
                }),
            }),
            concat!(
                r#"{"action":"log","distance_km":5837.0,"#,
                r#""from":{"accuracy_km":20,"city":"Paris","country":"FR","latitude":48.8566,"longitude":2.3522},"#,
                r#""new":"US","old":"Paris, FR","signal":"impossible_travel","speed_kmh":5838.0,"#,
                r#""to":{"city":null,"country":"US","latitude":40.7128,"longitude":-74.006}}"#
            )
        );
        // A place with nothing known, and a distance that is not a number.
        assert_eq!(
            written(&AnomalyDetected {
                signal: "impossible_travel",
                action: "log".to_owned(),
                old: "a",
                new: "b",
                travel: Some(TravelDetails {
                    from: Place::from(&Location::default()),
                    to: new_york(),
                    distance_km: f64::NAN,
                    speed_kmh: 0.0,
                }),
            }),
            concat!(
                r#"{"action":"log","distance_km":null,"from":{"city":null,"country":null},"#,
                r#""new":"b","old":"a","signal":"impossible_travel","speed_kmh":0.0,"#,
                r#""to":{"city":null,"country":"US","latitude":40.7128,"longitude":-74.006}}"#
            )
        );
    }
}
