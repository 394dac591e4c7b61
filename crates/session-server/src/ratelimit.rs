//! Per-key request rate limits (governor's keyed GCRA limiter).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration as StdDuration;

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::Ipv6Net;

use crate::error::ApiError;

/// The key a client is counted under (contract: "Per-client rate limits
/// count an IPv6 client by its /64"): an IPv4 address as it is, an IPv6
/// address as its /64 (one subscriber usually holds a whole /64 and can
/// pick any address in it), an IPv4-mapped IPv6 address as the IPv4 one.
pub fn client_key(ip: Option<&str>) -> String {
    match ip.map(|s| s.parse::<IpAddr>()) {
        Some(Ok(IpAddr::V6(v6))) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => Ipv6Net::new(v6, 64).map_or_else(|_| v6.to_string(), |n| n.trunc().to_string()),
        },
        Some(Ok(IpAddr::V4(v4))) => v4.to_string(),
        Some(Err(_)) | None => ip.unwrap_or("-").to_owned(),
    }
}

/// One limit: `per_minute` requests per key per minute; 0 turns it off.
#[derive(Debug)]
pub struct Limit {
    limiter: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
}

impl Limit {
    /// A limit of `per_minute` per key (burst of the same size).
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// Takes one request for `key`, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::rate_limited(wait.max(StdDuration::from_secs(1)))
        })
    }

    /// Takes one request for the client at `ip` (see [`client_key`]).
    pub fn check_client(&self, ip: Option<&str>) -> Result<(), ApiError> {
        self.check(&client_key(ip))
    }

    /// Forgets keys that have fully recovered (bounded memory).
    pub fn shrink(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Failed logins allowed per username per minute (when login limits are on).
pub const FAILED_LOGINS_PER_USER: u32 = 10;

/// A username that failed too often is refused until this instant.
#[derive(Debug)]
pub struct Lockouts {
    failures: Limit,
    blocked: moka::sync::Cache<String, std::time::Instant>,
}

impl Lockouts {
    fn new(per_minute: u32) -> Self {
        Self {
            failures: Limit::per_minute(per_minute),
            blocked: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(StdDuration::from_secs(120))
                .build(),
        }
    }

    /// Refuses a username that is locked out.
    pub fn check(&self, username: &str) -> Result<(), ApiError> {
        match self.blocked.get(username) {
            Some(until) if until > std::time::Instant::now() => Err(ApiError::rate_limited(
                until.saturating_duration_since(std::time::Instant::now()),
            )),
            _ => Ok(()),
        }
    }

    /// Counts one failed login; past the limit the username is locked out
    /// for as long as the limiter says.
    pub fn failed(&self, username: &str) {
        if let Err(e) = self.failures.check(username) {
            let wait = e.retry_after().unwrap_or(StdDuration::from_secs(60));
            self.blocked
                .insert(username.to_owned(), std::time::Instant::now() + wait);
        }
    }
}

/// The limits of the contract, plus a per-username lockout on failed
/// logins (brute force against one account from many addresses).
#[derive(Debug)]
pub struct RateLimits {
    /// Login, per client IP.
    pub login_ip: Limit,
    /// Failed logins, per username.
    pub login_user: Lockouts,
    /// Refresh, per client IP (the rapid-refresh anomaly rule limits each
    /// session).
    pub refresh_ip: Limit,
    /// Admin session creation, per client IP.
    pub create_ip: Limit,
}

impl RateLimits {
    /// From the settings' per-minute numbers.
    pub fn new(login: u32, refresh: u32, create: u32) -> Self {
        Self {
            login_ip: Limit::per_minute(login),
            login_user: Lockouts::new(if login == 0 {
                0
            } else {
                FAILED_LOGINS_PER_USER
            }),
            refresh_ip: Limit::per_minute(refresh),
            create_ip: Limit::per_minute(create),
        }
    }

    /// Drops recovered keys from every limiter.
    pub fn shrink(&self) {
        for l in [
            &self.login_ip,
            &self.login_user.failures,
            &self.refresh_ip,
            &self.create_ip,
        ] {
            l.shrink();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_is_told_when_to_retry() {
        let l = Limit::per_minute(2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        let err = l.check("a").unwrap_err();
        assert_eq!(err.status().as_u16(), 429);
        assert!(l.check("b").is_ok(), "other keys are unaffected");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        assert_eq!(
            client_key(Some("2001:db8:1:2:aaaa::1")),
            client_key(Some("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_eq!(client_key(Some("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_ne!(
            client_key(Some("2001:db8:1:2::1")),
            client_key(Some("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(Some("::ffff:192.0.2.7")), "192.0.2.7");
        assert_eq!(client_key(Some("192.0.2.7")), "192.0.2.7");
        assert_ne!(client_key(Some("192.0.2.7")), client_key(Some("192.0.2.8")));
        assert_eq!(client_key(None), "-");
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = Limit::per_minute(0);
        for _ in 0..1000 {
            assert!(l.check("a").is_ok());
        }
    }
}
