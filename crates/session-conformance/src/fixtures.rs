//! Building blocks the checks share, public so a store's own tests can use
//! them too.

use session_core::anomaly::{AnomalyPolicy, ClientInfo};
use session_core::rotation::{NextRefresh, RefreshParams};
use session_core::secret::{PresentedRefresh, RefreshToken, SessionId, TokenSecrets};
use session_core::session::{Lifetimes, Session};
use session_core::{Clock, SystemClock};
use time::{Duration, OffsetDateTime};

/// The IP every fixture session is opened from and refreshed from.
pub const CLIENT_IP: &str = "192.0.2.10";
/// The user agent every fixture session is opened with and refreshed with.
pub const CLIENT_USER_AGENT: &str = "session-conformance/1 (checks)";

/// The instant a check starts from: the wall clock, cut to whole seconds.
///
/// Real time (not a fixed date) because stores that expire records
/// themselves (Redis `EXAT`) set absolute deadlines: a session "opened" in
/// the past would vanish at once. Whole seconds because some backends keep
/// less than nanosecond precision. Later instants in a check are this plus
/// explicit offsets; no check sleeps.
pub fn base_time() -> OffsetDateTime {
    let now = SystemClock.now();
    OffsetDateTime::from_unix_timestamp(now.unix_timestamp()).unwrap_or(now)
}

/// Offsets `base` by whole seconds.
pub fn secs(base: OffsetDateTime, seconds: i64) -> OffsetDateTime {
    base + Duration::seconds(seconds)
}

/// A user id no other check (or concurrent test run) uses.
pub fn unique_user(label: &str) -> String {
    format!("conformance-{label}-{}", SessionId::generate())
}

/// Fresh server keys.
pub fn secrets() -> TokenSecrets {
    TokenSecrets::from_master(&TokenSecrets::generate_master())
}

/// A freshly opened session of `user_id` at `now`, from [`CLIENT_IP`] with
/// [`CLIENT_USER_AGENT`], with its generation-0 refresh token.
pub fn open_session(
    secrets: &TokenSecrets,
    user_id: &str,
    lifetimes: &Lifetimes,
    now: OffsetDateTime,
) -> (Session, RefreshToken, PresentedRefresh) {
    let id = SessionId::generate();
    let (token, presented) = secrets.issue_refresh(&id, 0);
    let mut session = Session::new(id, user_id.to_owned(), presented.digest, lifetimes, now);
    session.ip = Some(CLIENT_IP.to_owned());
    session.user_agent = Some(CLIENT_USER_AGENT.to_owned());
    (session, token, presented)
}

/// What the service does before asking the store to rotate: mints the
/// successor of `generation` and seals it for the grace window.
pub fn mint(
    secrets: &TokenSecrets,
    session_id: &SessionId,
    generation: u64,
) -> (RefreshToken, PresentedRefresh, NextRefresh) {
    let (token, presented) = secrets.issue_refresh(session_id, generation);
    let next = NextRefresh {
        digest: presented.digest,
        sealed: Some(secrets.seal_successor(session_id, &token)),
    };
    (token, presented, next)
}

/// Refresh parameters with the contract's defaults, the given grace window,
/// and the fixture client (so no anomaly rule fires).
pub fn params(grace: Duration) -> RefreshParams {
    RefreshParams {
        grace,
        idle_timeout: Lifetimes::default().idle_timeout,
        anomaly: AnomalyPolicy::default(),
        client: ClientInfo {
            ip: Some(CLIENT_IP.to_owned()),
            user_agent: Some(CLIENT_USER_AGENT.to_owned()),
            dpop_jkt: None,
            location: None,
        },
    }
}

/// The contract's default grace window (10 s).
pub fn default_grace() -> Duration {
    Lifetimes::default().refresh_grace
}
