//! Per-key request rate limits (governor's keyed GCRA limiter).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use ipnet::Ipv6Net;
use tokio::sync::{Semaphore, SemaphorePermit};

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

    /// A limit of `per_minute` per key whose bursts hold at most `burst`
    /// requests (and never more than `per_minute`).
    pub fn per_minute_with_burst(per_minute: u32, burst: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| {
                let burst = NonZeroU32::new(burst.min(per_minute)).unwrap_or(n);
                RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst))
            }),
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

/// Failed logins of one username from one client within
/// [`LOCKOUT_WINDOW`] that lock that username for that client.
pub const FAILED_LOGINS_PER_USER: usize = 10;

/// The window of the login lockout.
pub const LOCKOUT_WINDOW: StdDuration = StdDuration::from_secs(60);

/// Contract v1.1 "Login lockout": after [`FAILED_LOGINS_PER_USER`] failed
/// logins within [`LOCKOUT_WINDOW`], a username is locked (429) only for
/// the client (IP, IPv6 /64) that failed; another client with the right
/// password still gets in, so nobody can lock a user out from afar.
#[derive(Debug)]
pub struct Lockouts {
    enabled: bool,
    /// (client, username) → the instants of its recent failures.
    failures: moka::sync::Cache<String, Arc<Mutex<VecDeque<Instant>>>>,
}

impl Lockouts {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            failures: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(LOCKOUT_WINDOW)
                .build(),
        }
    }

    // A username holds no control characters (validated before), so the
    // NUL keeps (client, username) pairs apart.
    fn key(username: &str, client: Option<&str>) -> String {
        format!("{}\0{username}", client_key(client))
    }

    /// Refuses `username` from `client` while it is locked for that client.
    pub fn check(&self, username: &str, client: Option<&str>) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let Some(failures) = self.failures.get(&Self::key(username, client)) else {
            return Ok(());
        };
        let now = Instant::now();
        let failures = failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let recent: Vec<&Instant> = failures
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < LOCKOUT_WINDOW)
            .collect();
        match recent.first() {
            Some(oldest) if recent.len() >= FAILED_LOGINS_PER_USER => Err(ApiError::rate_limited(
                (**oldest + LOCKOUT_WINDOW).saturating_duration_since(now),
            )),
            _ => Ok(()),
        }
    }

    /// Counts one failed login of `username` from `client`.
    pub fn failed(&self, username: &str, client: Option<&str>) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let entry = self
            .failures
            .get_with(Self::key(username, client), Default::default);
        let mut failures = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= LOCKOUT_WINDOW)
        {
            failures.pop_front();
        }
        failures.push_back(now);
        while failures.len() > FAILED_LOGINS_PER_USER {
            failures.pop_front();
        }
    }
}

/// The most logins one client may start at once; the per-minute rate
/// refills it.
pub const LOGIN_BURST: u32 = 20;

/// Bounds concurrent password hashing: argon2id takes 19 MiB and a core
/// for each hash, so unbounded logins exhaust memory and starve the
/// stores. A hash runs only with one of `slots` permits (the number of
/// cores); a few more requests may wait for one; the rest are refused at
/// once, before any hashing, with 503 `overloaded` and `Retry-After`.
#[derive(Debug)]
pub struct PasswordWork {
    slots: Semaphore,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl PasswordWork {
    /// Requests that may wait per slot: a wait of a few hashes (tens of
    /// milliseconds each) beats a refusal; memory is bounded by the slots.
    pub const QUEUE_PER_SLOT: usize = 8;

    /// `slots` hashes at a time, and [`PasswordWork::QUEUE_PER_SLOT`]
    /// times as many waiting.
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self {
            slots: Semaphore::new(slots),
            waiting: AtomicUsize::new(0),
            max_waiting: slots * Self::QUEUE_PER_SLOT,
        }
    }

    /// One slot per core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    }

    /// A permit for a trusted caller (the admin API): it waits its turn
    /// however long the queue, so hashing stays bounded all the same.
    pub async fn wait_turn(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        self.slots
            .acquire()
            .await
            .map_err(|_| ApiError::overloaded())
    }

    /// A permit to hash a password, or 503 `overloaded` at once.
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, ApiError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("session_password_work_refused_total").increment(1);
            return Err(ApiError::overloaded());
        }
        // Counted down however the wait ends (also when the request is
        // dropped while waiting).
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _waiting = Waiting(&self.waiting);
        self.slots
            .acquire()
            .await
            .map_err(|_| ApiError::overloaded())
    }
}

/// The limits of the contract, plus the login lockout per (username,
/// client).
#[derive(Debug)]
pub struct RateLimits {
    /// Login, per client IP.
    pub login_ip: Limit,
    /// Failed logins, per (username, client).
    pub login_user: Lockouts,
    /// Refresh, per client IP (the rapid-refresh anomaly rule limits each
    /// session).
    pub refresh_ip: Limit,
    /// Admin session creation, per client IP.
    pub create_ip: Limit,
    /// Concurrent password hashing (login, user creation, password change).
    pub password_work: PasswordWork,
}

impl RateLimits {
    /// From the settings' per-minute numbers.
    pub fn new(login: u32, refresh: u32, create: u32) -> Self {
        Self {
            login_ip: Limit::per_minute_with_burst(login, LOGIN_BURST),
            login_user: Lockouts::new(login != 0),
            refresh_ip: Limit::per_minute(refresh),
            create_ip: Limit::per_minute(create),
            password_work: PasswordWork::per_core(),
        }
    }

    /// Drops recovered keys from every limiter.
    pub fn shrink(&self) {
        for l in [&self.login_ip, &self.refresh_ip, &self.create_ip] {
            l.shrink();
        }
        self.login_user.failures.run_pending_tasks();
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
    fn ten_failures_lock_a_username_for_that_client_only() {
        let l = Lockouts::new(true);
        let (attacker, victim) = (Some("198.51.100.6"), Some("203.0.113.7"));
        for _ in 0..FAILED_LOGINS_PER_USER - 1 {
            l.failed("alice", attacker);
        }
        assert!(
            l.check("alice", attacker).is_ok(),
            "nine failures are not ten"
        );
        l.failed("alice", attacker);
        let err = l.check("alice", attacker).unwrap_err();
        assert_eq!(err.status().as_u16(), 429);
        assert!(err.retry_after().unwrap() <= LOCKOUT_WINDOW);
        assert!(l.check("alice", victim).is_ok());
        assert!(l.check("bob", attacker).is_ok());
        // The same /64 is the same client.
        for _ in 0..FAILED_LOGINS_PER_USER {
            l.failed("carol", Some("2001:db8::1"));
        }
        assert!(l.check("carol", Some("2001:db8::ffff")).is_err());
        assert!(l.check("carol", Some("2001:db8:0:1::1")).is_ok());
        assert!(Lockouts::new(false).check("alice", attacker).is_ok());
    }

    #[test]
    fn a_burst_is_capped_and_the_rate_refills_it() {
        let l = Limit::per_minute_with_burst(600, 5);
        for _ in 0..5 {
            assert!(l.check("a").is_ok());
        }
        assert!(l.check("a").is_err(), "the sixth at once is over the burst");
        let small = Limit::per_minute_with_burst(2, 20);
        assert!(small.check("a").is_ok() && small.check("a").is_ok());
        assert!(small.check("a").is_err(), "a burst never exceeds the rate");
    }

    #[tokio::test]
    async fn password_work_beyond_its_slots_and_queue_is_refused_at_once() {
        let work = PasswordWork::new(1);
        let running = work.acquire().await.unwrap();
        // A few may wait...
        let mut waiting: Vec<_> = (0..PasswordWork::QUEUE_PER_SLOT)
            .map(|_| Box::pin(work.acquire()))
            .collect();
        for w in &mut waiting {
            assert!(futures::poll!(w).is_pending());
        }
        // ...the next is refused without waiting.
        let err = work.acquire().await.unwrap_err();
        assert_eq!(err.status().as_u16(), 503);
        assert_eq!(err.code(), "overloaded");
        assert!(err.retry_after().is_some());
        // A waiter that gives up frees its place in the queue.
        drop(waiting.pop());
        let mut c = Box::pin(work.acquire());
        assert!(futures::poll!(&mut c).is_pending());
        drop(running);
        assert!(waiting.remove(0).await.is_ok());
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let l = Limit::per_minute(0);
        for _ in 0..1000 {
            assert!(l.check("a").is_ok());
        }
    }
}
