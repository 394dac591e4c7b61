//! Anomaly rules: signs that a refresh does not come from the device that
//! opened the session.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::geo::{Location, Travel, impossible_travel};
use crate::session::Session;

/// What to do when a rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnomalyAction {
    /// Nothing.
    Ignore,
    /// Write an `anomaly_detected` event, let the refresh through.
    Log,
    /// Write the event and revoke the session (reason `anomaly`).
    Revoke,
}

impl FromStr for AnomalyAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ignore" => Ok(Self::Ignore),
            "log" => Ok(Self::Log),
            "revoke" => Ok(Self::Revoke),
            other => Err(format!("expected ignore, log or revoke, not {other:?}")),
        }
    }
}

impl fmt::Display for AnomalyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ignore => "ignore",
            Self::Log => "log",
            Self::Revoke => "revoke",
        })
    }
}

/// Which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The refresh's user agent differs from the session's.
    UserAgent,
    /// The refresh's IP differs from the session's.
    Ip,
    /// Too many refreshes of one session within the window.
    RapidRefresh,
    /// (v1.1, with a GeoIP database) the refresh comes from another
    /// country than the session's last use.
    Country,
    /// (v1.1, with a GeoIP database) the refresh is farther from the
    /// session's last use than `travel_speed_kmh` allows in the time since.
    ImpossibleTravel,
}

impl Signal {
    /// The name used in audit events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserAgent => "user_agent",
            Self::Ip => "ip",
            Self::RapidRefresh => "rapid_refresh",
            Self::Country => "country",
            Self::ImpossibleTravel => "impossible_travel",
        }
    }
}

/// The policy, with the contract's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnomalyPolicy {
    /// User agent changed (default `revoke`).
    pub user_agent: AnomalyAction,
    /// IP changed (default `log`: mobile networks change IPs).
    pub ip: AnomalyAction,
    /// More than `rapid_refresh_limit` refreshes within the window (default `revoke`).
    pub rapid_refresh: AnomalyAction,
    /// Default 10.
    pub rapid_refresh_limit: u32,
    /// Default 60 s.
    pub rapid_refresh_window: Duration,
    /// Country changed (default `log`; needs a GeoIP database).
    pub country: AnomalyAction,
    /// Impossible travel (default `log`; needs a GeoIP database).
    pub travel: AnomalyAction,
    /// Faster than this between two uses is impossible travel (default 1000).
    pub travel_speed_kmh: u32,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        Self {
            user_agent: AnomalyAction::Revoke,
            ip: AnomalyAction::Log,
            rapid_refresh: AnomalyAction::Revoke,
            rapid_refresh_limit: 10,
            rapid_refresh_window: Duration::seconds(60),
            country: AnomalyAction::Log,
            travel: AnomalyAction::Log,
            travel_speed_kmh: 1000,
        }
    }
}

/// Who is asking: the client's address and user agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientInfo {
    /// Client IP as the server determined it.
    pub ip: Option<String>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// Thumbprint of the key of the DPoP proof this request carried and
    /// that was checked (RFC 9449); binds a new session, and a bound
    /// session refreshes only with it.
    pub dpop_jkt: Option<crate::dpop::Jkt>,
    /// (v1.1) Where the GeoIP database places `ip`, where one is
    /// configured and knows the address.
    pub location: Option<Location>,
}

/// One fired rule, with what the audit event records.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// The rule.
    pub signal: Signal,
    /// The action the policy gives it.
    pub action: AnomalyAction,
    /// The session's value.
    pub old: String,
    /// The refresh's value.
    pub new: String,
    /// For impossible travel: both places, the distance and the speed.
    pub travel: Option<Travel>,
}

fn differs(
    out: &mut Vec<Anomaly>,
    signal: Signal,
    action: AnomalyAction,
    old: Option<&str>,
    new: Option<&str>,
) {
    if action == AnomalyAction::Ignore || old == new {
        return;
    }
    // A session opened without a value (e.g. by a backend that passed none)
    // has nothing to compare against.
    let Some(old) = old else { return };
    out.push(Anomaly {
        signal,
        action,
        old: old.to_owned(),
        new: new.unwrap_or_default().to_owned(),
        travel: None,
    });
}

impl AnomalyPolicy {
    /// The rules a refresh of `session` by `client` at `now` fires.
    /// `count_refresh` is false for a grace replay, which does not count
    /// towards the refresh rate.
    pub fn evaluate(
        &self,
        session: &Session,
        client: &ClientInfo,
        now: OffsetDateTime,
        count_refresh: bool,
    ) -> Vec<Anomaly> {
        let mut out = Vec::new();
        differs(
            &mut out,
            Signal::UserAgent,
            self.user_agent,
            session.user_agent.as_deref(),
            client.user_agent.as_deref(),
        );
        if client.ip.is_some() {
            differs(
                &mut out,
                Signal::Ip,
                self.ip,
                session.ip.as_deref(),
                client.ip.as_deref(),
            );
        }
        if count_refresh && self.rapid_refresh != AnomalyAction::Ignore {
            let since = now - self.rapid_refresh_window;
            let recent = session
                .refresh
                .recent_refreshes
                .iter()
                .filter(|t| **t > since)
                .count();
            let with_this = u32::try_from(recent + 1).unwrap_or(u32::MAX);
            if with_this > self.rapid_refresh_limit {
                out.push(Anomaly {
                    signal: Signal::RapidRefresh,
                    action: self.rapid_refresh,
                    old: format!(
                        "{} refreshes in {} s",
                        self.rapid_refresh_limit,
                        self.rapid_refresh_window.whole_seconds()
                    ),
                    new: format!("{with_this} refreshes"),
                    travel: None,
                });
            }
        }
        self.evaluate_location(&mut out, session, client, now);
        out
    }
}

impl AnomalyPolicy {
    /// The location rules: both need a place for the session's last use
    /// and for this one, and say nothing where either is unknown.
    fn evaluate_location(
        &self,
        out: &mut Vec<Anomaly>,
        session: &Session,
        client: &ClientInfo,
        now: OffsetDateTime,
    ) {
        let (Some(old), Some(new)) = (&session.location, &client.location) else {
            return;
        };
        if self.country != AnomalyAction::Ignore
            && let (Some(a), Some(b)) = (&old.country, &new.country)
            && a != b
        {
            out.push(Anomaly {
                signal: Signal::Country,
                action: self.country,
                old: a.clone(),
                new: b.clone(),
                travel: None,
            });
        }
        if self.travel != AnomalyAction::Ignore
            && let Some(t) = impossible_travel(old, new, now, self.travel_speed_kmh)
        {
            out.push(Anomaly {
                signal: Signal::ImpossibleTravel,
                action: self.travel,
                old: t.from.to_string(),
                new: t.to.to_string(),
                travel: Some(t),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{SessionId, TokenDigest};
    use crate::session::Lifetimes;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn session() -> Session {
        let mut s = Session::new(
            SessionId::generate(),
            "u".into(),
            TokenDigest::of("t"),
            &Lifetimes::default(),
            now(),
        );
        s.ip = Some("10.0.0.1".into());
        s.user_agent = Some("Firefox".into());
        s
    }

    fn client(ip: &str, ua: &str) -> ClientInfo {
        ClientInfo {
            ip: Some(ip.into()),
            user_agent: Some(ua.into()),
            dpop_jkt: None,
            location: None,
        }
    }

    fn place(country: &str, lat: f64, lon: f64) -> Location {
        Location {
            country: Some(country.into()),
            city: None,
            coordinates: Some(crate::geo::Coordinates {
                latitude: lat,
                longitude: lon,
                accuracy_km: Some(20),
            }),
            seen_at: None,
        }
    }

    fn signals(got: &[Anomaly]) -> Vec<(Signal, AnomalyAction)> {
        got.iter().map(|a| (a.signal, a.action)).collect()
    }

    #[test]
    fn paris_then_new_york_an_hour_later_is_a_country_change_and_impossible_travel() {
        let mut s = session();
        s.location = Some(place("FR", 48.8566, 2.3522).seen(now()));
        let mut c = client("10.0.0.1", "Firefox");
        c.location = Some(place("US", 40.7128, -74.0060));
        let later = now() + Duration::hours(1);
        let got = AnomalyPolicy::default().evaluate(&s, &c, later, false);
        assert_eq!(
            signals(&got),
            vec![
                (Signal::Country, AnomalyAction::Log),
                (Signal::ImpossibleTravel, AnomalyAction::Log)
            ]
        );
        assert_eq!((got[0].old.as_str(), got[0].new.as_str()), ("FR", "US"));
        let d = crate::audit::details::json(&crate::audit::details::AnomalyDetected::from(&got[1]));
        assert_eq!(d["signal"], "impossible_travel");
        assert_eq!(d["from"]["country"], "FR");
        assert_eq!(d["to"]["country"], "US");
        assert!(d["distance_km"].as_f64().unwrap() > 5800.0);
        assert!(d["speed_kmh"].as_f64().unwrap() > 5800.0);
        // A day later it is a trip, still another country.
        let got = AnomalyPolicy::default().evaluate(&s, &c, now() + Duration::days(1), false);
        assert_eq!(signals(&got), vec![(Signal::Country, AnomalyAction::Log)]);
    }

    #[test]
    fn location_rules_follow_their_policy_and_need_both_places() {
        let mut s = session();
        s.location = Some(place("FR", 48.8566, 2.3522).seen(now()));
        let mut c = client("10.0.0.1", "Firefox");
        c.location = Some(place("US", 40.7128, -74.0060));
        let later = now() + Duration::minutes(5);
        let p = AnomalyPolicy {
            country: AnomalyAction::Ignore,
            travel: AnomalyAction::Revoke,
            ..AnomalyPolicy::default()
        };
        assert_eq!(
            signals(&p.evaluate(&s, &c, later, false)),
            vec![(Signal::ImpossibleTravel, AnomalyAction::Revoke)]
        );
        let slow = AnomalyPolicy {
            travel_speed_kmh: 1_000_000,
            ..AnomalyPolicy::default()
        };
        assert_eq!(
            signals(&slow.evaluate(&s, &c, later, false)),
            vec![(Signal::Country, AnomalyAction::Log)]
        );
        // Unknown on either side: nothing.
        let unknown = c.clone();
        let mut c2 = unknown;
        c2.location = None;
        assert!(
            AnomalyPolicy::default()
                .evaluate(&s, &c2, later, false)
                .is_empty()
        );
        let mut s2 = s.clone();
        s2.location = None;
        assert!(
            AnomalyPolicy::default()
                .evaluate(&s2, &c, later, false)
                .is_empty()
        );
        // A country-only database: a country change, no travel.
        let mut s3 = s.clone();
        s3.location = Some(Location {
            country: Some("FR".into()),
            ..Location::default()
        });
        let mut c3 = c.clone();
        c3.location = Some(Location {
            country: Some("US".into()),
            ..Location::default()
        });
        assert_eq!(
            signals(&AnomalyPolicy::default().evaluate(&s3, &c3, later, false)),
            vec![(Signal::Country, AnomalyAction::Log)]
        );
    }

    #[test]
    fn defaults_match_the_contract() {
        let p = AnomalyPolicy::default();
        assert_eq!(p.user_agent, AnomalyAction::Revoke);
        assert_eq!(p.ip, AnomalyAction::Log);
        assert_eq!(p.rapid_refresh, AnomalyAction::Revoke);
        assert_eq!(p.rapid_refresh_limit, 10);
        assert_eq!(p.rapid_refresh_window, Duration::seconds(60));
    }

    #[test]
    fn the_same_device_fires_nothing() {
        let p = AnomalyPolicy::default();
        assert!(
            p.evaluate(&session(), &client("10.0.0.1", "Firefox"), now(), true)
                .is_empty()
        );
    }

    #[test]
    fn a_changed_user_agent_is_revoked_with_old_and_new_values() {
        let got =
            AnomalyPolicy::default().evaluate(&session(), &client("10.0.0.1", "curl"), now(), true);
        assert_eq!(
            got,
            vec![Anomaly {
                signal: Signal::UserAgent,
                action: AnomalyAction::Revoke,
                old: "Firefox".into(),
                new: "curl".into(),
                travel: None,
            }]
        );
    }

    #[test]
    fn a_changed_ip_is_only_logged_by_default() {
        let got = AnomalyPolicy::default().evaluate(
            &session(),
            &client("10.9.9.9", "Firefox"),
            now(),
            true,
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].signal, Signal::Ip);
        assert_eq!(got[0].action, AnomalyAction::Log);
        assert_eq!(
            (got[0].old.as_str(), got[0].new.as_str()),
            ("10.0.0.1", "10.9.9.9")
        );
    }

    #[test]
    fn ignored_rules_never_fire() {
        let p = AnomalyPolicy {
            user_agent: AnomalyAction::Ignore,
            ip: AnomalyAction::Ignore,
            rapid_refresh: AnomalyAction::Ignore,
            ..AnomalyPolicy::default()
        };
        let mut s = session();
        s.refresh.recent_refreshes = vec![now(); 50];
        assert!(
            p.evaluate(&s, &client("1.1.1.1", "x"), now(), true)
                .is_empty()
        );
    }

    #[test]
    fn the_eleventh_refresh_within_a_minute_is_rapid() {
        let p = AnomalyPolicy::default();
        let mut s = session();
        s.refresh.recent_refreshes = (0..9).map(|i| now() - Duration::seconds(i)).collect();
        assert!(
            p.evaluate(&s, &client("10.0.0.1", "Firefox"), now(), true)
                .is_empty()
        );
        s.refresh
            .recent_refreshes
            .push(now() - Duration::seconds(30));
        let got = p.evaluate(&s, &client("10.0.0.1", "Firefox"), now(), true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].signal, Signal::RapidRefresh);
    }

    #[test]
    fn refreshes_outside_the_window_do_not_count() {
        let p = AnomalyPolicy::default();
        let mut s = session();
        s.refresh.recent_refreshes = vec![now() - Duration::seconds(61); 20];
        assert!(
            p.evaluate(&s, &client("10.0.0.1", "Firefox"), now(), true)
                .is_empty()
        );
    }

    #[test]
    fn actions_parse_from_their_config_names() {
        assert_eq!("log".parse(), Ok(AnomalyAction::Log));
        assert!("LOUD".parse::<AnomalyAction>().is_err());
    }
}
