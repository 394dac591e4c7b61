//! The refresh-rotation state machine: a pure decision over the stored
//! family state, which each store then applies as one compare-and-swap.
//!
//! ```text
//! presented == live (same generation)            → Rotate (unless an anomaly revokes)
//! presented == rotated-away-last, inside grace   → GraceReplay (same successor, no write)
//! presented is older, or grace has passed        → Reuse → revoke the whole family
//! session revoked                                → Revoked
//! session past its idle or absolute deadline     → Expired
//! anything else (never issued)                   → Invalid, no side effect
//! ```

use time::{Duration, OffsetDateTime};

use crate::anomaly::{Anomaly, AnomalyAction, AnomalyPolicy, ClientInfo};
use crate::secret::{PresentedRefresh, TokenDigest};
use crate::session::{RevokeReason, Session};

/// The successor the service minted before asking the store: its digest
/// and, when a grace window is on, its sealed form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRefresh {
    /// Digest of the new token (generation = presented + 1).
    pub digest: TokenDigest,
    /// The new token sealed under the server key, kept for the grace window.
    pub sealed: Option<Vec<u8>>,
}

/// Everything a refresh needs besides the stored state.
#[derive(Debug, Clone)]
pub struct RefreshParams {
    /// Grace window; zero turns replays off.
    pub grace: Duration,
    /// Idle timeout: the new idle deadline is now + this.
    pub idle_timeout: Duration,
    /// Anomaly rules.
    pub anomaly: AnomalyPolicy,
    /// Who is refreshing.
    pub client: ClientInfo,
}

/// What a refresh comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The live token was rotated; the minted successor is now live.
    Rotated,
    /// A replay of the token rotated away last, inside the grace window:
    /// answer with the same successor as before (sealed here).
    GraceReplay {
        /// The successor, sealed.
        sealed: Vec<u8>,
    },
    /// A rotated-away token came back: the family is now revoked.
    Reused,
    /// The anomaly policy revoked the session.
    AnomalyRevoked,
    /// The session was already revoked.
    Revoked,
    /// The session is past a deadline (or gone).
    Expired,
    /// Not a token of this family's history.
    Invalid,
}

/// The decision: an outcome, the state to write (if any), and the rules
/// that fired.
#[derive(Debug, Clone)]
pub struct RefreshPlan {
    /// The outcome.
    pub outcome: RefreshOutcome,
    /// The new state to write with a compare-and-swap on
    /// `version - 1`; `None` when nothing changes.
    pub write: Option<Session>,
    /// Rules that fired (for audit), whatever their action.
    pub anomalies: Vec<Anomaly>,
}

impl RefreshPlan {
    fn nothing(outcome: RefreshOutcome) -> Self {
        Self {
            outcome,
            write: None,
            anomalies: Vec::new(),
        }
    }
}

/// Decides what a refresh presenting `presented` does to `session` at `now`.
pub fn plan_refresh(
    session: &Session,
    presented: &PresentedRefresh,
    next: &NextRefresh,
    params: &RefreshParams,
    now: OffsetDateTime,
) -> RefreshPlan {
    if session.id != presented.session_id {
        return RefreshPlan::nothing(RefreshOutcome::Invalid);
    }
    if session.revoked.is_some() {
        return RefreshPlan::nothing(RefreshOutcome::Revoked);
    }
    if session.is_expired(now) {
        return RefreshPlan::nothing(RefreshOutcome::Expired);
    }
    let state = &session.refresh;
    let is_live = presented.generation == state.generation && presented.digest == state.current;
    let is_last = presented.generation.checked_add(1) == Some(state.generation)
        && state.previous.as_ref() == Some(&presented.digest);

    if is_live {
        let anomalies = params.anomaly.evaluate(session, &params.client, now, true);
        if anomalies.iter().any(|a| a.action == AnomalyAction::Revoke) {
            return revoke(session, RefreshOutcome::AnomalyRevoked, RevokeReason::Anomaly, anomalies, now);
        }
        let mut new = session.clone();
        new.version += 1;
        new.refresh.previous = Some(state.current);
        new.refresh.current = next.digest;
        new.refresh.generation += 1;
        new.refresh.rotated_at = Some(now);
        new.refresh.grace_successor = if params.grace > Duration::ZERO {
            next.sealed.clone()
        } else {
            None
        };
        let since = now - params.anomaly.rapid_refresh_window;
        new.refresh.recent_refreshes.retain(|t| *t > since);
        new.refresh.recent_refreshes.push(now);
        let cap = usize::try_from(params.anomaly.rapid_refresh_limit)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let excess = new.refresh.recent_refreshes.len().saturating_sub(cap);
        new.refresh.recent_refreshes.drain(..excess);
        new.last_seen_at = now;
        new.idle_expires_at = (now + params.idle_timeout).min(session.absolute_expires_at);
        if params.client.ip.is_some() {
            new.ip.clone_from(&params.client.ip);
        }
        if params.client.user_agent.is_some() {
            new.user_agent.clone_from(&params.client.user_agent);
        }
        return RefreshPlan {
            outcome: RefreshOutcome::Rotated,
            write: Some(new),
            anomalies,
        };
    }

    if is_last {
        let in_grace = params.grace > Duration::ZERO
            && state.rotated_at.is_some_and(|at| now < at + params.grace);
        if let (true, Some(sealed)) = (in_grace, state.grace_successor.as_ref()) {
            let anomalies = params.anomaly.evaluate(session, &params.client, now, false);
            if anomalies.iter().any(|a| a.action == AnomalyAction::Revoke) {
                return revoke(session, RefreshOutcome::AnomalyRevoked, RevokeReason::Anomaly, anomalies, now);
            }
            return RefreshPlan {
                outcome: RefreshOutcome::GraceReplay {
                    sealed: sealed.clone(),
                },
                write: None,
                anomalies,
            };
        }
        return revoke(session, RefreshOutcome::Reused, RevokeReason::ReuseDetected, Vec::new(), now);
    }

    // The tag verified, so an older generation is a token this service
    // issued and rotated away: a reuse. A newer or same-generation token
    // with another digest was never issued.
    if presented.generation < state.generation {
        return revoke(session, RefreshOutcome::Reused, RevokeReason::ReuseDetected, Vec::new(), now);
    }
    RefreshPlan::nothing(RefreshOutcome::Invalid)
}

fn revoke(
    session: &Session,
    outcome: RefreshOutcome,
    reason: RevokeReason,
    anomalies: Vec<Anomaly>,
    now: OffsetDateTime,
) -> RefreshPlan {
    let mut new = session.clone();
    new.revoke(reason, now);
    RefreshPlan {
        outcome,
        write: Some(new),
        anomalies,
    }
}
