//! The refresh-rotation state machine: a pure decision over the stored
//! family state, which each store then applies as one compare-and-swap.
//!
//! ```text
//! presented == live (same generation)            → Rotate (unless an anomaly revokes)
//! presented == rotated-away-last, inside grace   → GraceReplay (same successor, no write)
//! presented is older, or grace has passed        → Reuse → revoke the whole family
//! session revoked                                → Revoked
//! session past its idle or absolute deadline     → Expired
//! live or grace replay, session bound to a DPoP key,
//!   and the request's proof is by another key or absent → DpopKeyMismatch, no write
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
    /// The session is bound to a DPoP key and the request proved another
    /// key, or none: nothing changes.
    DpopKeyMismatch,
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
    let standing = classify_refresh(session, presented, params.grace, now);

    // A bound session refreshes only with a proof by its own key: its
    // refresh token alone rotates nothing (RFC 9449 §5).
    let key_mismatch =
        session.dpop_jkt.is_some() && params.client.dpop_jkt.as_ref() != session.dpop_jkt.as_ref();

    if standing == RefreshStanding::Live {
        if key_mismatch {
            return RefreshPlan::nothing(RefreshOutcome::DpopKeyMismatch);
        }
        let anomalies = params.anomaly.evaluate(session, &params.client, now, true);
        if anomalies.iter().any(|a| a.action == AnomalyAction::Revoke) {
            return revoke(
                session,
                RefreshOutcome::AnomalyRevoked,
                RevokeReason::Anomaly,
                anomalies,
                now,
            );
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
        if let Some(place) = &params.client.location {
            new.location = Some(place.clone().seen(now));
        }
        if new.dpop_jkt.is_none() {
            // A proof with the refresh of an unbound session binds it.
            new.dpop_jkt.clone_from(&params.client.dpop_jkt);
        }
        return RefreshPlan {
            outcome: RefreshOutcome::Rotated,
            write: Some(new),
            anomalies,
        };
    }

    // `Grace` holds only while the successor is held.
    if let (RefreshStanding::Grace, Some(sealed)) = (standing, state.grace_successor.as_ref()) {
        if key_mismatch {
            return RefreshPlan::nothing(RefreshOutcome::DpopKeyMismatch);
        }
        let anomalies = params.anomaly.evaluate(session, &params.client, now, false);
        if anomalies.iter().any(|a| a.action == AnomalyAction::Revoke) {
            return revoke(
                session,
                RefreshOutcome::AnomalyRevoked,
                RevokeReason::Anomaly,
                anomalies,
                now,
            );
        }
        return RefreshPlan {
            outcome: RefreshOutcome::GraceReplay {
                sealed: sealed.clone(),
            },
            write: None,
            anomalies,
        };
    }

    if standing == RefreshStanding::RotatedAway {
        return revoke(
            session,
            RefreshOutcome::Reused,
            RevokeReason::ReuseDetected,
            Vec::new(),
            now,
        );
    }
    RefreshPlan::nothing(RefreshOutcome::Invalid)
}

/// Where an authentic refresh token (its tag verified) stands against its
/// session's refresh state: the one rule that refresh, logout's cookie
/// fallback and introspection share. Revocation and expiry are the
/// caller's to check first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshStanding {
    /// The session's live token.
    Live,
    /// The token rotated away last, within the grace window while its
    /// successor is held: a client's own duplicate or retry.
    Grace,
    /// A token this service issued and rotated away: presenting it is a
    /// reuse.
    RotatedAway,
    /// Never issued for this session (another session, or a generation it
    /// has not reached, or another digest at the live generation).
    Unknown,
}

/// Classifies `presented` against `session` at `now` with grace window
/// `grace` (see [`RefreshStanding`]).
pub fn classify_refresh(
    session: &Session,
    presented: &PresentedRefresh,
    grace: Duration,
    now: OffsetDateTime,
) -> RefreshStanding {
    if session.id != presented.session_id {
        return RefreshStanding::Unknown;
    }
    let state = &session.refresh;
    if presented.generation == state.generation && presented.digest == state.current {
        return RefreshStanding::Live;
    }
    let is_last = presented.generation.checked_add(1) == Some(state.generation)
        && state.previous.as_ref() == Some(&presented.digest);
    let in_grace = grace > Duration::ZERO
        && state.rotated_at.is_some_and(|at| now < at + grace)
        && state.grace_successor.is_some();
    if is_last && in_grace {
        return RefreshStanding::Grace;
    }
    // The tag verified, so an older generation is a token this service
    // issued and rotated away. A newer or same-generation token with
    // another digest was never issued.
    if presented.generation < state.generation {
        RefreshStanding::RotatedAway
    } else {
        RefreshStanding::Unknown
    }
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

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::anomaly::Signal;
    use crate::secret::SessionId;
    use crate::session::{Lifetimes, Revocation};

    const IP: &str = "192.0.2.1";
    const UA: &str = "Firefox";

    fn at(secs: i64) -> OffsetDateTime {
        datetime!(2026-01-01 00:00 UTC) + Duration::seconds(secs)
    }

    fn digest(label: &str) -> TokenDigest {
        TokenDigest::of(label)
    }

    /// A session opened at 0 from [`IP`] with [`UA`], live token "t0".
    fn fresh() -> Session {
        let mut s = Session::new(
            SessionId::generate(),
            "alice".into(),
            digest("t0"),
            &Lifetimes::default(),
            at(0),
        );
        s.ip = Some(IP.into());
        s.user_agent = Some(UA.into());
        s
    }

    /// The session after two rotations, the last at 100 s: live "t2",
    /// previous "t1", sealed successor "sealed-t2".
    fn rotated() -> Session {
        let mut s = fresh();
        s.refresh.generation = 2;
        s.refresh.current = digest("t2");
        s.refresh.previous = Some(digest("t1"));
        s.refresh.rotated_at = Some(at(100));
        s.refresh.grace_successor = Some(b"sealed-t2".to_vec());
        s.refresh.recent_refreshes = vec![at(50), at(100)];
        s.last_seen_at = at(100);
        s.version = 2;
        s
    }

    fn presented(s: &Session, generation: u64, label: &str) -> PresentedRefresh {
        PresentedRefresh {
            session_id: s.id,
            generation,
            digest: digest(label),
        }
    }

    fn next(label: &str) -> NextRefresh {
        NextRefresh {
            digest: digest(label),
            sealed: Some(format!("sealed-{label}").into_bytes()),
        }
    }

    fn params() -> RefreshParams {
        RefreshParams {
            grace: Duration::seconds(10),
            idle_timeout: Duration::days(14),
            anomaly: AnomalyPolicy::default(),
            client: ClientInfo {
                ip: Some(IP.into()),
                user_agent: Some(UA.into()),
                dpop_jkt: None,
                location: None,
            },
        }
    }

    fn plan(
        s: &Session,
        p: &PresentedRefresh,
        params: &RefreshParams,
        now: OffsetDateTime,
    ) -> RefreshPlan {
        plan_refresh(s, p, &next("t3"), params, now)
    }

    fn assert_revoked_for_reuse(plan: &RefreshPlan, s: &Session, now: OffsetDateTime) {
        assert_eq!(plan.outcome, RefreshOutcome::Reused);
        let mut expected = s.clone();
        expected.revoke(RevokeReason::ReuseDetected, now);
        assert_eq!(
            plan.write.as_ref(),
            Some(&expected),
            "only the revocation is written"
        );
        assert_eq!(
            expected.revoked.map(|r| r.reason),
            Some(RevokeReason::ReuseDetected)
        );
    }

    fn jkt(byte: u8) -> crate::dpop::Jkt {
        crate::dpop::Jkt::from_digest([byte; 32])
    }

    fn with_key(key: Option<crate::dpop::Jkt>) -> RefreshParams {
        let mut p = params();
        p.client.dpop_jkt = key;
        p
    }

    #[test]
    fn one_classifier_tells_live_grace_rotated_away_and_never_issued_tokens_apart() {
        let s = rotated();
        let grace = Duration::seconds(10);
        let standing = |generation, label, now| {
            classify_refresh(&s, &presented(&s, generation, label), grace, now)
        };
        assert_eq!(standing(2, "t2", at(105)), RefreshStanding::Live);
        assert_eq!(standing(1, "t1", at(105)), RefreshStanding::Grace);
        // The same token once the window has passed, or with the window
        // off, is a reuse; so is anything older.
        assert_eq!(standing(1, "t1", at(110)), RefreshStanding::RotatedAway);
        assert_eq!(
            classify_refresh(&s, &presented(&s, 1, "t1"), Duration::ZERO, at(105)),
            RefreshStanding::RotatedAway
        );
        assert_eq!(standing(0, "t0", at(105)), RefreshStanding::RotatedAway);
        // Never issued: a generation not reached, or another digest at the
        // live one, or another session's token.
        assert_eq!(standing(3, "t3", at(105)), RefreshStanding::Unknown);
        assert_eq!(standing(2, "other", at(105)), RefreshStanding::Unknown);
        let other = fresh();
        assert_eq!(
            classify_refresh(&s, &presented(&other, 2, "t2"), grace, at(105)),
            RefreshStanding::Unknown
        );
    }

    #[test]
    fn a_proof_with_the_refresh_of_an_unbound_session_binds_it() {
        let s = rotated();
        let plan = plan(
            &s,
            &presented(&s, 2, "t2"),
            &with_key(Some(jkt(1))),
            at(200),
        );
        assert_eq!(plan.outcome, RefreshOutcome::Rotated);
        assert_eq!(plan.write.unwrap().dpop_jkt, Some(jkt(1)));
    }

    #[test]
    fn a_bound_session_refreshes_only_with_a_proof_by_its_key() {
        let mut s = rotated();
        s.dpop_jkt = Some(jkt(1));
        for key in [None, Some(jkt(2))] {
            let p = plan(&s, &presented(&s, 2, "t2"), &with_key(key.clone()), at(200));
            assert_eq!(p.outcome, RefreshOutcome::DpopKeyMismatch, "{key:?}");
            assert!(p.write.is_none(), "nothing is written");
            // A grace replay needs the key too.
            let p = plan(&s, &presented(&s, 1, "t1"), &with_key(key), at(105));
            assert_eq!(p.outcome, RefreshOutcome::DpopKeyMismatch);
            assert!(p.write.is_none());
        }
        let p = plan(
            &s,
            &presented(&s, 2, "t2"),
            &with_key(Some(jkt(1))),
            at(200),
        );
        assert_eq!(p.outcome, RefreshOutcome::Rotated);
        assert_eq!(p.write.unwrap().dpop_jkt, Some(jkt(1)), "the binding stays");
    }

    #[test]
    fn presenting_the_live_token_rotates_it_to_the_minted_successor() {
        let s = rotated();
        let got = plan_refresh(&s, &presented(&s, 2, "t2"), &next("t3"), &params(), at(200));
        assert_eq!(got.outcome, RefreshOutcome::Rotated);
        assert!(got.anomalies.is_empty());
        let w = got.write.expect("a rotation writes");
        assert_eq!(
            w.version,
            s.version + 1,
            "the write is a compare-and-swap on the next version"
        );
        assert_eq!(w.refresh.generation, 3);
        assert_eq!(w.refresh.current, digest("t3"));
        assert_eq!(w.refresh.previous, Some(digest("t2")));
        assert_eq!(w.refresh.rotated_at, Some(at(200)));
        assert_eq!(w.refresh.grace_successor, Some(b"sealed-t3".to_vec()));
        assert_eq!(
            w.refresh.recent_refreshes,
            vec![at(200)],
            "older refreshes left the 60 s window"
        );
        assert_eq!(w.last_seen_at, at(200));
        assert_eq!(w.idle_expires_at, at(200) + Duration::days(14));
        assert_eq!(
            (w.created_at, w.absolute_expires_at),
            (s.created_at, s.absolute_expires_at)
        );
        assert!(w.revoked.is_none());
    }

    #[test]
    fn rotation_moves_the_idle_deadline_but_never_past_the_absolute_one() {
        let mut s = fresh();
        s.absolute_expires_at = at(86_400);
        s.idle_expires_at = at(86_400);
        let w = plan(&s, &presented(&s, 0, "t0"), &params(), at(3_600))
            .write
            .expect("rotates");
        assert_eq!(w.idle_expires_at, at(86_400));
        assert_eq!(w.absolute_expires_at, at(86_400));
    }

    #[test]
    fn rotation_without_a_grace_window_keeps_no_sealed_successor() {
        let s = fresh();
        let p = RefreshParams {
            grace: Duration::ZERO,
            ..params()
        };
        let w = plan(&s, &presented(&s, 0, "t0"), &p, at(1))
            .write
            .expect("rotates");
        assert_eq!(w.refresh.grace_successor, None);
        assert_eq!(w.refresh.current, digest("t3"));
    }

    #[test]
    fn rotation_keeps_recent_refreshes_bounded_by_the_rapid_limit() {
        let mut s = fresh();
        s.refresh.recent_refreshes = (0..30).map(at).collect();
        let p = RefreshParams {
            anomaly: AnomalyPolicy {
                rapid_refresh: AnomalyAction::Ignore,
                ..AnomalyPolicy::default()
            },
            ..params()
        };
        let w = plan(&s, &presented(&s, 0, "t0"), &p, at(40))
            .write
            .expect("rotates");
        let limit = usize::try_from(p.anomaly.rapid_refresh_limit).unwrap();
        assert_eq!(w.refresh.recent_refreshes.len(), limit + 1);
        assert_eq!(
            w.refresh.recent_refreshes.last(),
            Some(&at(40)),
            "the newest is kept"
        );
    }

    #[test]
    fn rotation_records_the_clients_values_and_keeps_old_ones_when_none_are_given() {
        let s = fresh();
        let mut p = params();
        p.anomaly.ip = AnomalyAction::Ignore;
        p.client.ip = Some("198.51.100.7".into());
        let w = plan(&s, &presented(&s, 0, "t0"), &p, at(1))
            .write
            .expect("rotates");
        assert_eq!(w.ip.as_deref(), Some("198.51.100.7"));
        assert_eq!(w.user_agent.as_deref(), Some(UA));

        p.client = ClientInfo::default();
        let w = plan(&s, &presented(&s, 0, "t0"), &p, at(1))
            .write
            .expect("rotates");
        assert_eq!(
            (w.ip.as_deref(), w.user_agent.as_deref()),
            (Some(IP), Some(UA))
        );
    }

    #[test]
    fn a_logged_anomaly_still_rotates_and_is_reported() {
        let s = fresh();
        let mut p = params();
        p.client.ip = Some("203.0.113.9".into());
        let got = plan(&s, &presented(&s, 0, "t0"), &p, at(1));
        assert_eq!(got.outcome, RefreshOutcome::Rotated);
        assert_eq!(got.anomalies.len(), 1);
        assert_eq!(got.anomalies[0].signal, Signal::Ip);
        assert_eq!(got.anomalies[0].action, AnomalyAction::Log);
        assert_eq!(
            got.write.expect("rotates").ip.as_deref(),
            Some("203.0.113.9")
        );
    }

    #[test]
    fn a_revoking_anomaly_revokes_the_session_instead_of_rotating() {
        let s = fresh();
        let mut p = params();
        p.client.user_agent = Some("curl/8".into());
        let got = plan(&s, &presented(&s, 0, "t0"), &p, at(1));
        assert_eq!(got.outcome, RefreshOutcome::AnomalyRevoked);
        assert_eq!(got.anomalies[0].signal, Signal::UserAgent);
        let w = got.write.expect("the revocation is written");
        assert_eq!(
            w.revoked,
            Some(Revocation {
                at: at(1),
                reason: RevokeReason::Anomaly
            })
        );
        assert_eq!(w.refresh, s.refresh, "nothing rotated");
        assert_eq!(w.version, s.version + 1);
    }

    #[test]
    fn too_many_refreshes_within_the_window_revoke_the_session() {
        let mut s = fresh();
        s.refresh.recent_refreshes = (0..10).map(|i| at(100 + i)).collect();
        let got = plan(&s, &presented(&s, 0, "t0"), &params(), at(120));
        assert_eq!(got.outcome, RefreshOutcome::AnomalyRevoked);
        assert_eq!(got.anomalies[0].signal, Signal::RapidRefresh);
    }

    #[test]
    fn the_previous_token_inside_the_grace_window_replays_the_same_successor_without_writing() {
        let s = rotated();
        for now in [at(100), at(105), at(109)] {
            let got = plan(&s, &presented(&s, 1, "t1"), &params(), now);
            assert_eq!(
                got.outcome,
                RefreshOutcome::GraceReplay {
                    sealed: b"sealed-t2".to_vec()
                },
                "the stored successor, not the newly minted one"
            );
            assert!(got.write.is_none(), "a replay writes nothing");
        }
    }

    #[test]
    fn the_previous_token_at_the_end_of_the_grace_window_is_reuse() {
        let s = rotated();
        let got = plan(&s, &presented(&s, 1, "t1"), &params(), at(110));
        assert_revoked_for_reuse(&got, &s, at(110));
    }

    #[test]
    fn the_previous_token_after_the_grace_window_revokes_the_family() {
        let s = rotated();
        let got = plan(&s, &presented(&s, 1, "t1"), &params(), at(3_600));
        assert_revoked_for_reuse(&got, &s, at(3_600));
        assert!(
            got.write
                .expect("written")
                .refresh
                .grace_successor
                .is_none()
        );
    }

    #[test]
    fn the_previous_token_is_reuse_when_the_grace_window_is_off() {
        let s = rotated();
        let p = RefreshParams {
            grace: Duration::ZERO,
            ..params()
        };
        let got = plan(&s, &presented(&s, 1, "t1"), &p, at(100));
        assert_revoked_for_reuse(&got, &s, at(100));
    }

    #[test]
    fn the_previous_token_is_reuse_when_no_sealed_successor_was_kept() {
        let mut s = rotated();
        s.refresh.grace_successor = None;
        let got = plan(&s, &presented(&s, 1, "t1"), &params(), at(101));
        assert_revoked_for_reuse(&got, &s, at(101));
    }

    #[test]
    fn a_grace_replay_from_another_user_agent_is_revoked_as_an_anomaly() {
        let s = rotated();
        let mut p = params();
        p.client.user_agent = Some("curl/8".into());
        let got = plan(&s, &presented(&s, 1, "t1"), &p, at(101));
        assert_eq!(got.outcome, RefreshOutcome::AnomalyRevoked);
        assert_eq!(
            got.write.and_then(|w| w.revoked).map(|r| r.reason),
            Some(RevokeReason::Anomaly)
        );
    }

    #[test]
    fn a_grace_replay_does_not_count_towards_the_refresh_rate() {
        let mut s = rotated();
        s.refresh.recent_refreshes = (0..10).map(|i| at(91 + i)).collect();
        let got = plan(&s, &presented(&s, 1, "t1"), &params(), at(101));
        assert!(
            matches!(got.outcome, RefreshOutcome::GraceReplay { .. }),
            "{:?}",
            got.outcome
        );
        assert!(got.anomalies.is_empty());
    }

    #[test]
    fn a_token_two_generations_back_is_reuse_even_inside_the_grace_window() {
        let s = rotated();
        let got = plan(&s, &presented(&s, 0, "t0"), &params(), at(101));
        assert_revoked_for_reuse(&got, &s, at(101));
    }

    #[test]
    fn an_older_generation_with_an_unknown_digest_is_reuse_because_its_tag_verified() {
        let s = rotated();
        let got = plan(
            &s,
            &presented(&s, 1, "t1-minted-but-lost"),
            &params(),
            at(101),
        );
        assert_revoked_for_reuse(&got, &s, at(101));
    }

    #[test]
    fn a_never_issued_future_generation_is_invalid_and_writes_nothing() {
        let s = rotated();
        for generation in [3, 4, 1_000, u64::MAX] {
            let got = plan(&s, &presented(&s, generation, "future"), &params(), at(101));
            assert_eq!(got.outcome, RefreshOutcome::Invalid);
            assert!(got.write.is_none());
            assert!(got.anomalies.is_empty());
        }
    }

    #[test]
    fn the_live_generation_with_another_digest_is_invalid() {
        let s = rotated();
        let got = plan(
            &s,
            &presented(&s, 2, "t2-minted-but-lost"),
            &params(),
            at(101),
        );
        assert_eq!(got.outcome, RefreshOutcome::Invalid);
        assert!(got.write.is_none());
    }

    #[test]
    fn a_token_of_another_session_is_invalid() {
        let s = rotated();
        let mut p = presented(&s, 2, "t2");
        p.session_id = SessionId::generate();
        let got = plan(&s, &p, &params(), at(101));
        assert_eq!(got.outcome, RefreshOutcome::Invalid);
        assert!(got.write.is_none());
    }

    #[test]
    fn a_revoked_session_answers_revoked_whatever_is_presented() {
        let mut s = rotated();
        s.revoke(RevokeReason::Logout, at(101));
        for (generation, label) in [(2, "t2"), (1, "t1"), (0, "t0"), (9, "future")] {
            let got = plan(&s, &presented(&s, generation, label), &params(), at(102));
            assert_eq!(
                got.outcome,
                RefreshOutcome::Revoked,
                "generation {generation}"
            );
            assert!(got.write.is_none(), "the first revocation stands");
        }
        let got = plan(
            &s,
            &presented(&s, 2, "t2"),
            &params(),
            at(100) + Duration::days(365),
        );
        assert_eq!(
            got.outcome,
            RefreshOutcome::Revoked,
            "revoked outranks expired"
        );
    }

    #[test]
    fn a_session_answers_expired_from_its_idle_deadline_on() {
        let s = rotated();
        let deadline = s.idle_expires_at;
        assert_eq!(
            plan(
                &s,
                &presented(&s, 2, "t2"),
                &params(),
                deadline - Duration::seconds(1)
            )
            .outcome,
            RefreshOutcome::Rotated
        );
        for now in [deadline, deadline + Duration::days(1)] {
            for (generation, label) in [(2, "t2"), (1, "t1"), (0, "t0")] {
                let got = plan(&s, &presented(&s, generation, label), &params(), now);
                assert_eq!(got.outcome, RefreshOutcome::Expired);
                assert!(
                    got.write.is_none(),
                    "an expired session is not revoked by a late reuse"
                );
            }
        }
    }

    #[test]
    fn a_session_answers_expired_at_its_absolute_deadline_even_if_recently_refreshed() {
        let mut s = rotated();
        s.absolute_expires_at = at(1_000);
        s.idle_expires_at = at(1_000);
        let got = plan(&s, &presented(&s, 2, "t2"), &params(), at(1_000));
        assert_eq!(got.outcome, RefreshOutcome::Expired);
        assert!(got.write.is_none());
    }
}
