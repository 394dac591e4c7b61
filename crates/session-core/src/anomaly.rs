//! Anomaly rules: signs that a refresh does not come from the device that
//! opened the session.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

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
}

impl Signal {
    /// The name used in audit events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserAgent => "user_agent",
            Self::Ip => "ip",
            Self::RapidRefresh => "rapid_refresh",
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
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        Self {
            user_agent: AnomalyAction::Revoke,
            ip: AnomalyAction::Log,
            rapid_refresh: AnomalyAction::Revoke,
            rapid_refresh_limit: 10,
            rapid_refresh_window: Duration::seconds(60),
        }
    }
}

/// Who is asking: the client's address and user agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Client IP as the server determined it.
    pub ip: Option<String>,
    /// `User-Agent` header.
    pub user_agent: Option<String>,
    /// Thumbprint of the key of the DPoP proof this request carried and
    /// that was checked (RFC 9449); binds a new session, and a bound
    /// session refreshes only with it.
    pub dpop_jkt: Option<crate::dpop::Jkt>,
}

/// One fired rule, with what the audit event records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// The rule.
    pub signal: Signal,
    /// The action the policy gives it.
    pub action: AnomalyAction,
    /// The session's value.
    pub old: String,
    /// The refresh's value.
    pub new: String,
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
                });
            }
        }
        out
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
        }
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
                new: "curl".into()
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
