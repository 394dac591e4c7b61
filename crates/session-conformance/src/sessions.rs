//! Checks of a [`SessionStore`]: creation, reads, compare-and-swap,
//! revocation, limits, listing, expiry and refresh rotation.
//!
//! Every check opens its own sessions for its own users, so the checks may
//! share one store and run concurrently.

use std::sync::Arc;

use session_core::rotation::RefreshOutcome;
use session_core::secret::{PresentedRefresh, RefreshToken, SessionId, TokenSecrets};
use session_core::session::{Lifetimes, Revocation, RevokeReason, Session};
use session_core::store::{GuessedCreate, RefreshResult, SessionStore, StoreError};
use time::{Duration, OffsetDateTime};

pub use crate::dpop::{
    a_dpop_binding_is_stored_and_enforced_on_refresh, a_dpop_proof_is_remembered_once,
};
use crate::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::ApplyRefresh as _;
use session_core::WriteHints;

/// Opens a session with default lifetimes and stores it.
async fn opened(
    store: &dyn SessionStore,
    secrets: &TokenSecrets,
    user: &str,
    now: OffsetDateTime,
) -> (Session, RefreshToken, PresentedRefresh) {
    let opened = open_session(secrets, user, &Lifetimes::default(), now);
    store
        .create(&opened.0)
        .await
        .expect("create a fresh session");
    opened
}

/// Rotates `presented` to a freshly minted successor at `now` and checks
/// that it rotated; returns the successor.
async fn rotate(
    store: &dyn SessionStore,
    secrets: &TokenSecrets,
    presented: &PresentedRefresh,
    grace: Duration,
    now: OffsetDateTime,
) -> (RefreshToken, PresentedRefresh, RefreshResult) {
    let (token, next_presented, next) =
        mint(secrets, &presented.session_id, presented.generation + 1);
    let result = store
        .refresh(presented, &next, &params(grace), now)
        .await
        .expect("refresh the live token");
    assert_eq!(
        result.outcome,
        RefreshOutcome::Rotated,
        "presenting the live token rotates it"
    );
    (token, next_presented, result)
}

async fn stored(store: &dyn SessionStore, id: &SessionId) -> Session {
    store
        .get(id)
        .await
        .expect("read a session")
        .expect("the session is still stored")
}

/// Whether a refresh with this outcome gives the caller tokens.
fn issues_tokens(outcome: &RefreshOutcome) -> bool {
    matches!(
        outcome,
        RefreshOutcome::Rotated | RefreshOutcome::GraceReplay { .. }
    )
}

fn ids(sessions: &[Session]) -> Vec<SessionId> {
    sessions.iter().map(|s| s.id).collect()
}

/// `create` never overwrites: a second session with the same id is a
/// `Conflict` (through `create` and `create_limited`), and the original
/// is kept unchanged.
pub async fn create_never_overwrites(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (original, _, _) = opened(&*store, &secrets, &unique_user("create"), now).await;

    let mut impostor = original.clone();
    impostor.user_id = unique_user("impostor");
    impostor.metadata = serde_json::json!({ "impostor": true });
    impostor.refresh.current = secrets.issue_refresh(&original.id, 0).1.digest;

    let err = store
        .create(&impostor)
        .await
        .expect_err("a second create with the same id fails");
    assert!(
        matches!(err, StoreError::Conflict),
        "expected Conflict, got {err:?}"
    );
    let err = store
        .create_limited(&impostor, 0, now)
        .await
        .expect_err("a second create_limited with the same id fails");
    assert!(
        matches!(err, StoreError::Conflict),
        "expected Conflict, got {err:?}"
    );

    assert_eq!(
        stored(&*store, &original.id).await,
        original,
        "the original is kept"
    );
    assert!(
        store
            .list_user(&impostor.user_id, now)
            .await
            .expect("list")
            .is_empty(),
        "the impostor's user gained no session"
    );
}

/// `get` returns exactly what was created: every field, including the
/// metadata JSON, IP and user agent, and the whole refresh state (grace
/// successor bytes, recent refreshes). An unknown id is `None`.
pub async fn get_returns_what_was_created(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (mut session, _, _) = open_session(
        &secrets,
        &unique_user("roundtrip"),
        &Lifetimes::default(),
        now,
    );
    session.created_at = secs(now, -3_600);
    session.last_seen_at = secs(now, -5);
    session.idle_expires_at = secs(now, 86_400);
    session.absolute_expires_at = secs(now, 30 * 86_400);
    session.ip = Some("2001:db8::7".to_owned());
    session.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) \"quoted\" ünïcødé ✓".to_owned());
    session.metadata = serde_json::json!({
        "tenant": "acme",
        "roles": ["reader", "writer"],
        "level": 3,
        "ratio": 0.5,
        "flags": { "mfa": true, "note": null },
        "empty": {},
    });
    session.refresh.generation = 3;
    session.refresh.current = secrets.issue_refresh(&session.id, 3).1.digest;
    session.refresh.previous = Some(secrets.issue_refresh(&session.id, 2).1.digest);
    session.refresh.rotated_at = Some(secs(now, -5));
    session.refresh.grace_successor = Some((0..=255).collect());
    session.refresh.recent_refreshes = vec![secs(now, -40), secs(now, -20), secs(now, -5)];
    session.version = 3;

    store.create(&session).await.expect("create");
    assert_eq!(
        stored(&*store, &session.id).await,
        session,
        "every field round-trips"
    );
    assert_eq!(
        store
            .get(&SessionId::generate())
            .await
            .expect("get unknown"),
        None
    );
}

/// A revoked session still reads back, as a tombstone: revoked with its
/// time and reason, version bumped, grace successor dropped.
pub async fn a_revoked_session_reads_back_as_a_tombstone(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = opened(&*store, &secrets, &unique_user("tombstone"), now).await;
    let (_, _, rotated) = rotate(&*store, &secrets, &p0, default_grace(), secs(now, 1)).await;
    let mut expected = rotated.session.expect("a rotation returns the session");
    assert!(expected.refresh.grace_successor.is_some());

    let revoked = store
        .revoke(&session.id, RevokeReason::Admin, secs(now, 2))
        .await
        .expect("revoke")
        .expect("an active session is revoked");
    expected.revoke(RevokeReason::Admin, secs(now, 2));
    assert_eq!(revoked, expected, "revoke returns the tombstone");
    assert_eq!(
        expected.revoked,
        Some(Revocation {
            at: secs(now, 2),
            reason: RevokeReason::Admin
        })
    );
    assert_eq!(
        stored(&*store, &session.id).await,
        expected,
        "get returns the tombstone"
    );
}

/// `replace` is a compare-and-swap on the version: it succeeds once with
/// the version read, and fails (changing nothing) with a stale version or
/// for an unknown session.
pub async fn replace_with_a_stale_version_fails(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, _) = opened(&*store, &secrets, &unique_user("replace"), now).await;

    let mut first = session.clone();
    first.version += 1;
    first.metadata = serde_json::json!({ "writer": "first" });
    assert!(
        store
            .replace(&first, session.version, WriteHints::NONE)
            .await
            .expect("replace"),
        "the version read is current"
    );

    let mut second = session.clone();
    second.version += 1;
    second.metadata = serde_json::json!({ "writer": "second" });
    assert!(
        !store
            .replace(&second, session.version, WriteHints::NONE)
            .await
            .expect("replace"),
        "a stale version loses"
    );
    assert_eq!(
        stored(&*store, &session.id).await,
        first,
        "the loser changed nothing"
    );

    let (ghost, _, _) = open_session(&secrets, &session.user_id, &Lifetimes::default(), now);
    assert!(
        !store
            .replace(&ghost, ghost.version, WriteHints::NONE)
            .await
            .expect("replace unknown"),
        "replacing an unknown session fails"
    );
    assert_eq!(
        store.get(&ghost.id).await.expect("get"),
        None,
        "replace never creates"
    );
}

/// A write never un-revokes a session: `replace` with the current version
/// but without the revocation answers false and leaves the tombstone as it
/// was; a write that keeps it revoked goes through.
pub async fn replace_never_clears_a_revocation(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, _) = opened(&*store, &secrets, &unique_user("unrevoke"), now).await;
    let tombstone = store
        .revoke(&session.id, RevokeReason::Admin, secs(now, 1))
        .await
        .expect("revoke")
        .expect("an active session is revoked");

    let mut revived = tombstone.clone();
    revived.revoked = None;
    revived.version += 1;
    revived.metadata = serde_json::json!({ "revived": true });
    assert!(
        !store
            .replace(&revived, tombstone.version, WriteHints::NONE)
            .await
            .expect("replace"),
        "a write that clears the revocation is refused"
    );
    assert_eq!(
        stored(&*store, &session.id).await,
        tombstone,
        "the tombstone is unchanged"
    );

    let mut annotated = tombstone.clone();
    annotated.version += 1;
    annotated.metadata = serde_json::json!({ "note": "kept revoked" });
    assert!(
        store
            .replace(&annotated, tombstone.version, WriteHints::NONE)
            .await
            .expect("replace"),
        "a write that keeps the revocation goes through"
    );
    assert_eq!(stored(&*store, &session.id).await, annotated);
}

/// Presenting the live token rotates it: the minted successor becomes
/// live, the presented one becomes `previous`, the idle deadline moves,
/// the client is recorded, and the successor rotates in turn.
pub async fn refresh_rotates_the_live_token(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = opened(&*store, &secrets, &unique_user("rotate"), now).await;
    let at = secs(now, 60);
    let (_, p1, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(default_grace()), at)
        .await
        .expect("refresh");
    assert_eq!(result.outcome, RefreshOutcome::Rotated);

    let after = stored(&*store, &session.id).await;
    assert_eq!(
        result.session.as_ref(),
        Some(&after),
        "the result is the stored state"
    );
    assert_eq!(after.refresh.generation, 1);
    assert_eq!(after.refresh.current, p1.digest);
    assert_eq!(after.refresh.previous, Some(p0.digest));
    assert_eq!(after.refresh.rotated_at, Some(at));
    assert_eq!(after.refresh.grace_successor, next.sealed);
    assert_eq!(after.refresh.recent_refreshes, vec![at]);
    assert_eq!(after.last_seen_at, at);
    assert_eq!(
        after.idle_expires_at,
        at + Lifetimes::default().idle_timeout
    );
    assert_eq!(after.absolute_expires_at, session.absolute_expires_at);
    assert_eq!(after.created_at, session.created_at);
    assert!(
        after.version > session.version,
        "a rotation bumps the version"
    );
    assert!(after.revoked.is_none());

    rotate(&*store, &secrets, &p1, default_grace(), secs(now, 120)).await;
    assert_eq!(stored(&*store, &session.id).await.refresh.generation, 2);
}

async fn concurrent_rotations(store: Arc<dyn SessionStore>, grace: Duration) {
    const TASKS: usize = 24;
    let secrets = Arc::new(secrets());
    let now = base_time();
    let (session, _, p0) = opened(&*store, &secrets, &unique_user("race"), now).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let params = Arc::new(params(grace));

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, secrets, barrier, params) = (
                Arc::clone(&store),
                Arc::clone(&secrets),
                Arc::clone(&barrier),
                Arc::clone(&params),
            );
            tokio::spawn(async move {
                let (token, _, next) = mint(&secrets, &p0.session_id, 1);
                barrier.wait().await;
                let result = store.refresh(&p0, &next, &params, now).await;
                (token, next, result)
            })
        })
        .collect();
    let mut runs = Vec::with_capacity(TASKS);
    for joined in futures::future::join_all(tasks).await {
        let (token, next, result) = joined.expect("a refresh task panicked");
        runs.push((
            token,
            next,
            result
                .expect("a concurrent refresh errs only on a broken store")
                .outcome,
        ));
    }

    let winners: Vec<_> = runs
        .iter()
        .filter(|r| r.2 == RefreshOutcome::Rotated)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one refresh rotates: {:?}",
        runs.iter().map(|r| &r.2).collect::<Vec<_>>()
    );
    let (winner_token, winner_next, _) = winners[0];

    let after = stored(&*store, &session.id).await;
    assert_eq!(after.refresh.generation, 1, "one rotation happened");
    assert_eq!(
        after.refresh.current, winner_next.digest,
        "the winner's successor is live"
    );
    let live = runs
        .iter()
        .filter(|(token, _, _)| {
            let parsed = secrets
                .parse_refresh(token.expose())
                .expect("a minted token parses");
            parsed.digest == after.refresh.current
        })
        .count();
    assert_eq!(live, 1, "never two live successors");

    let losers = runs.iter().filter(|r| r.2 != RefreshOutcome::Rotated);
    if grace > Duration::ZERO {
        for (_, _, outcome) in losers {
            let RefreshOutcome::GraceReplay { sealed } = outcome else {
                panic!(
                    "inside the grace window a duplicate refresh is a grace replay, not {outcome:?}"
                );
            };
            assert_eq!(
                Some(sealed),
                winner_next.sealed.as_ref(),
                "every replay gets the same sealed successor"
            );
            let opened = secrets
                .unseal_successor(&session.id, sealed)
                .expect("the successor unseals");
            assert_eq!(
                &opened, winner_token,
                "the replayed successor is the live token"
            );
        }
        assert!(
            after.revoked.is_none(),
            "duplicates inside the grace window log nobody out"
        );
    } else {
        let mut reused = 0;
        for (_, _, outcome) in losers {
            match outcome {
                RefreshOutcome::Reused => reused += 1,
                RefreshOutcome::Revoked => {}
                other => panic!("without a grace window a duplicate is a reuse, not {other:?}"),
            }
        }
        assert!(reused >= 1, "the first duplicate is detected as a reuse");
        assert_eq!(
            after.revoked.map(|r| r.reason),
            Some(RevokeReason::ReuseDetected),
            "the reuse revoked the family"
        );
    }
}

/// Many concurrent refreshes of one token with the grace window on: exactly
/// one rotates, every other gets the same sealed successor, and exactly one
/// minted token is live afterwards.
pub async fn concurrent_rotations_of_one_token_leave_one_live_successor(
    store: Arc<dyn SessionStore>,
) {
    concurrent_rotations(store, default_grace()).await;
}

/// Many concurrent refreshes of one token with the grace window off:
/// exactly one rotates, the others are reuses (or find the family already
/// revoked), and there are never two live successors.
pub async fn concurrent_rotations_without_grace_revoke_the_family(store: Arc<dyn SessionStore>) {
    concurrent_rotations(store, Duration::ZERO).await;
}

/// A token two generations back is a reuse even inside the grace window:
/// the whole family is revoked (reason `reuse_detected`), and the live
/// token is answered `Revoked` from then on.
pub async fn reuse_of_a_token_two_generations_back_revokes_the_family(
    store: Arc<dyn SessionStore>,
) {
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("reuse");
    let (session, _, p0) = opened(&*store, &secrets, &user, now).await;
    let (_, p1, _) = rotate(&*store, &secrets, &p0, default_grace(), now).await;
    let (_, p2, _) = rotate(&*store, &secrets, &p1, default_grace(), secs(now, 1)).await;

    let (_, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(default_grace()), secs(now, 2))
        .await
        .expect("refresh");
    assert_eq!(result.outcome, RefreshOutcome::Reused);
    let revoked = result.session.expect("a reuse returns the revoked session");
    assert_eq!(
        revoked.revoked,
        Some(Revocation {
            at: secs(now, 2),
            reason: RevokeReason::ReuseDetected
        })
    );
    assert_eq!(
        stored(&*store, &session.id).await,
        revoked,
        "the revocation is stored"
    );

    let (_, _, next) = mint(&secrets, &session.id, 3);
    let result = store
        .refresh(&p2, &next, &params(default_grace()), secs(now, 3))
        .await
        .expect("refresh");
    assert_eq!(
        result.outcome,
        RefreshOutcome::Revoked,
        "the live token died with its family"
    );
    assert!(
        store
            .list_user(&user, secs(now, 3))
            .await
            .expect("list")
            .is_empty()
    );
}

/// A replay of the token rotated away last, inside the grace window, gets
/// the very same sealed successor and writes nothing; the live token keeps
/// working.
pub async fn replay_of_the_previous_token_inside_grace_returns_the_same_successor(
    store: Arc<dyn SessionStore>,
) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = opened(&*store, &secrets, &unique_user("grace"), now).await;
    let (t1, p1, rotated) = rotate(&*store, &secrets, &p0, default_grace(), now).await;
    let before = stored(&*store, &session.id).await;
    assert_eq!(rotated.session.as_ref(), Some(&before));

    let (_, _, other_next) = mint(&secrets, &session.id, 1);
    let replay_at = now + default_grace() - Duration::seconds(1);
    let result = store
        .refresh(&p0, &other_next, &params(default_grace()), replay_at)
        .await
        .expect("refresh");
    let RefreshOutcome::GraceReplay { sealed } = &result.outcome else {
        panic!(
            "a replay inside the window is a grace replay, not {:?}",
            result.outcome
        );
    };
    assert_eq!(
        Some(sealed),
        before.refresh.grace_successor.as_ref(),
        "the same sealed successor"
    );
    assert_eq!(
        secrets.unseal_successor(&session.id, sealed),
        Some(t1),
        "it opens to the live token"
    );
    assert_eq!(
        stored(&*store, &session.id).await,
        before,
        "a grace replay writes nothing"
    );

    rotate(&*store, &secrets, &p1, default_grace(), secs(now, 10)).await;
}

/// A replay of the token rotated away last, once the grace window has
/// passed (its end included), is a reuse: the family is revoked.
pub async fn replay_of_the_previous_token_after_grace_is_reuse(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = opened(&*store, &secrets, &unique_user("late-replay"), now).await;
    rotate(&*store, &secrets, &p0, default_grace(), now).await;

    let (_, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(default_grace()), now + default_grace())
        .await
        .expect("refresh");
    assert_eq!(
        result.outcome,
        RefreshOutcome::Reused,
        "the window's end is outside it"
    );
    assert_eq!(
        stored(&*store, &session.id).await.revoked.map(|r| r.reason),
        Some(RevokeReason::ReuseDetected)
    );
}

/// A token of a generation the family never reached, or of the live
/// generation with another digest, is `Invalid` and changes nothing; the
/// live token still rotates afterwards.
pub async fn a_never_issued_generation_is_invalid_without_side_effects(
    store: Arc<dyn SessionStore>,
) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, p0) = opened(&*store, &secrets, &unique_user("never-issued"), now).await;
    let (_, p1, _) = rotate(&*store, &secrets, &p0, default_grace(), now).await;
    let before = stored(&*store, &session.id).await;

    for generation in [2, 7, u64::MAX] {
        let (_, future, _) = mint(&secrets, &session.id, generation);
        let (_, _, next) = mint(&secrets, &session.id, generation.saturating_add(1));
        let result = store
            .refresh(&future, &next, &params(default_grace()), secs(now, 1))
            .await
            .expect("refresh");
        assert_eq!(
            result.outcome,
            RefreshOutcome::Invalid,
            "generation {generation} was never issued"
        );
        assert_eq!(
            stored(&*store, &session.id).await,
            before,
            "an invalid token changes nothing"
        );
    }
    let (_, sibling, _) = mint(&secrets, &session.id, 1);
    let (_, _, next) = mint(&secrets, &session.id, 2);
    let result = store
        .refresh(&sibling, &next, &params(default_grace()), secs(now, 1))
        .await
        .expect("refresh");
    assert_eq!(
        result.outcome,
        RefreshOutcome::Invalid,
        "same generation, other token"
    );
    assert_eq!(
        stored(&*store, &session.id).await,
        before,
        "an invalid token changes nothing"
    );

    rotate(&*store, &secrets, &p1, default_grace(), secs(now, 2)).await;
}

/// A refresh at or after the idle deadline is `Expired`, and `list_user`
/// omits the session from that instant on.
pub async fn refresh_after_the_idle_deadline_is_expired(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("idle");
    let (session, _, p0) = opened(&*store, &secrets, &user, now).await;
    let deadline = session.idle_expires_at;
    assert_eq!(deadline, now + Lifetimes::default().idle_timeout);

    let listed = store
        .list_user(&user, deadline - Duration::seconds(1))
        .await
        .expect("list");
    assert_eq!(ids(&listed), vec![session.id], "alive until the deadline");
    assert!(
        store
            .list_user(&user, deadline)
            .await
            .expect("list")
            .is_empty(),
        "list_user omits an expired session"
    );

    let (_, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(default_grace()), deadline)
        .await
        .expect("refresh");
    assert_eq!(result.outcome, RefreshOutcome::Expired);
    assert!(
        store
            .list_user(&user, deadline)
            .await
            .expect("list")
            .is_empty(),
        "no refresh revived it"
    );
}

/// Refreshing moves the idle deadline but never past the absolute one; at
/// the absolute deadline a refresh is `Expired`.
pub async fn refresh_never_outlives_the_absolute_deadline(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let lifetimes = Lifetimes {
        absolute_lifetime: Duration::days(1),
        ..Lifetimes::default()
    };
    let (session, _, p0) = open_session(&secrets, &unique_user("absolute"), &lifetimes, now);
    store.create(&session).await.expect("create");
    assert_eq!(session.expires_at(), secs(now, 86_400));

    let (_, p1, rotated) = rotate(
        &*store,
        &secrets,
        &p0,
        default_grace(),
        secs(now, 20 * 3_600),
    )
    .await;
    let after = rotated.session.expect("a rotation returns the session");
    assert_eq!(
        after.idle_expires_at,
        secs(now, 86_400),
        "the idle deadline is capped"
    );

    let (_, _, next) = mint(&secrets, &session.id, 2);
    let result = store
        .refresh(&p1, &next, &params(default_grace()), secs(now, 86_400))
        .await
        .expect("refresh");
    assert_eq!(result.outcome, RefreshOutcome::Expired);
}

/// Refreshing a session the store never held is `Expired` (gone).
pub async fn refresh_of_an_unknown_session_is_expired(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let id = SessionId::generate();
    let (_, presented, _) = mint(&secrets, &id, 0);
    let (_, _, next) = mint(&secrets, &id, 1);
    let result = store
        .refresh(&presented, &next, &params(default_grace()), base_time())
        .await
        .expect("refresh");
    assert_eq!(result.outcome, RefreshOutcome::Expired);
    assert_eq!(
        store.get(&id).await.expect("get"),
        None,
        "a refresh never creates"
    );
}

/// `revoke` answers `Some` only for the call that revoked an active
/// session: a second revoke, an unknown id and an expired session are
/// `None`, and the first reason is kept.
pub async fn revoke_twice_returns_none_the_second_time(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, _) = opened(&*store, &secrets, &unique_user("revoke"), now).await;

    let first = store
        .revoke(&session.id, RevokeReason::Logout, secs(now, 1))
        .await
        .expect("revoke");
    let first = first.expect("the first revoke revokes");
    assert_eq!(
        first.revoked.map(|r| (r.at, r.reason)),
        Some((secs(now, 1), RevokeReason::Logout))
    );
    let second = store
        .revoke(&session.id, RevokeReason::Admin, secs(now, 2))
        .await
        .expect("revoke");
    assert_eq!(second, None, "the second revoke finds nothing active");
    assert_eq!(
        stored(&*store, &session.id).await.revoked.map(|r| r.reason),
        Some(RevokeReason::Logout),
        "the first revocation is kept"
    );

    let unknown = store
        .revoke(&SessionId::generate(), RevokeReason::Admin, now)
        .await
        .expect("revoke unknown");
    assert_eq!(unknown, None);

    let (expiring, _, _) = opened(&*store, &secrets, &unique_user("revoke-expired"), now).await;
    let expired = store
        .revoke(&expiring.id, RevokeReason::Admin, expiring.expires_at())
        .await
        .expect("revoke expired");
    assert_eq!(expired, None, "an expired session is not revoked again");
}

/// `revoke_user` revokes every active session of that user, returns them,
/// and leaves other users' sessions alone.
pub async fn revoke_user_touches_only_that_user(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (alice, bob) = (unique_user("alice"), unique_user("bob"));
    let (a1, _, _) = opened(&*store, &secrets, &alice, now).await;
    let (a2, _, _) = opened(&*store, &secrets, &alice, secs(now, 1)).await;
    let (b1, _, _) = opened(&*store, &secrets, &bob, secs(now, 2)).await;

    let at = secs(now, 3);
    let mut revoked = store
        .revoke_user(&alice, RevokeReason::PasswordChanged, at)
        .await
        .expect("revoke_user");
    revoked.sort_by_key(|s| s.created_at);
    assert_eq!(ids(&revoked), vec![a1.id, a2.id]);
    for s in &revoked {
        assert_eq!(
            s.revoked.map(|r| (r.at, r.reason)),
            Some((at, RevokeReason::PasswordChanged))
        );
        assert_eq!(
            stored(&*store, &s.id).await,
            *s,
            "the returned session is the stored tombstone"
        );
    }
    assert!(store.list_user(&alice, at).await.expect("list").is_empty());
    assert_eq!(
        ids(&store.list_user(&bob, at).await.expect("list")),
        vec![b1.id],
        "bob keeps his session"
    );
    assert_eq!(stored(&*store, &b1.id).await, b1);

    let again = store
        .revoke_user(&alice, RevokeReason::RevokeAll, secs(now, 4))
        .await
        .expect("revoke_user again");
    assert!(again.is_empty(), "nothing is left to revoke");
}

/// `revoke_user` moves the user's epoch on: a create of that user begun
/// before it (its session carries the older epoch) is refused with
/// `Superseded` and writes nothing, through `create` and `create_limited`;
/// a session opened under the new epoch is created; other users are
/// untouched.
pub async fn revoke_user_refuses_creates_begun_before_it(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (user, other) = (unique_user("epoch"), unique_user("epoch-other"));
    let before = store.user_epoch(&user).await.expect("user_epoch");
    assert_eq!(before, 0, "a user never revoked is at epoch 0");
    let (first, _, _) = opened(&*store, &secrets, &user, now).await;

    let revoked = store
        .revoke_user(&user, RevokeReason::RevokeAll, secs(now, 1))
        .await
        .expect("revoke_user");
    assert_eq!(ids(&revoked), vec![first.id]);
    let after = store.user_epoch(&user).await.expect("user_epoch");
    assert!(after > before, "revoke_user moves the epoch on");

    let late = |at: i64| {
        let (mut s, _, _) = open_session(&secrets, &user, &Lifetimes::default(), secs(now, at));
        s.epoch = before;
        s
    };
    let (s2, s3) = (late(2), late(3));
    let err = store.create(&s2).await.expect_err("an old-epoch create");
    assert!(
        matches!(err, StoreError::Superseded),
        "expected Superseded, got {err:?}"
    );
    let err = store
        .create_limited(&s3, 2, secs(now, 3))
        .await
        .expect_err("an old-epoch create_limited");
    assert!(
        matches!(err, StoreError::Superseded),
        "expected Superseded, got {err:?}"
    );
    for s in [&s2, &s3] {
        assert_eq!(
            store.get(&s.id).await.expect("get"),
            None,
            "nothing written"
        );
    }
    assert!(
        store
            .list_user(&user, secs(now, 4))
            .await
            .expect("list")
            .is_empty()
    );

    let (mut current, _, _) = open_session(&secrets, &user, &Lifetimes::default(), secs(now, 5));
    current.epoch = after;
    store
        .create(&current)
        .await
        .expect("a current-epoch create");
    assert_eq!(
        ids(&store.list_user(&user, secs(now, 6)).await.expect("list")),
        vec![current.id]
    );

    assert_eq!(store.user_epoch(&other).await.expect("user_epoch"), 0);
    opened(&*store, &secrets, &other, now).await;
}

/// A create at a guessed epoch writes only when the guess is the user's
/// epoch exactly; otherwise it writes nothing and answers the epoch, under
/// which the session can then be created. A guess ahead of the user's
/// epoch is as wrong as one behind it (a session must never carry an
/// epoch its user has not reached). With and without a session limit.
pub async fn a_create_at_a_guessed_epoch_writes_only_when_the_guess_is_exact(
    store: Arc<dyn SessionStore>,
) {
    let secrets = secrets();
    let now = base_time();
    for max in [0, 3] {
        let user = unique_user("guess");
        let (mut right, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
        right.epoch = 0;
        match store
            .create_at_guessed_epoch(&right, max, now)
            .await
            .expect("create at epoch 0")
        {
            GuessedCreate::Created(evicted) => assert!(evicted.is_empty()),
            GuessedCreate::EpochIs(e) => panic!("a new user is at epoch 0, not {e}"),
        }
        assert_eq!(stored(&*store, &right.id).await.user_id, user);

        store
            .revoke_user(&user, RevokeReason::RevokeAll, secs(now, 1))
            .await
            .expect("revoke_user");
        let epoch = store.user_epoch(&user).await.expect("user_epoch");
        assert!(epoch > 0);
        for guess in [0, epoch + 1] {
            let (mut wrong, _, _) =
                open_session(&secrets, &user, &Lifetimes::default(), secs(now, 2));
            wrong.epoch = guess;
            match store
                .create_at_guessed_epoch(&wrong, max, secs(now, 2))
                .await
                .expect("create at a wrong guess")
            {
                GuessedCreate::EpochIs(e) => assert_eq!(e, epoch, "max {max}, guess {guess}"),
                GuessedCreate::Created(_) => panic!("created at epoch {guess}, user at {epoch}"),
            }
            assert_eq!(
                store.get(&wrong.id).await.expect("get"),
                None,
                "nothing written"
            );
        }
        let (mut exact, _, _) = open_session(&secrets, &user, &Lifetimes::default(), secs(now, 3));
        exact.epoch = epoch;
        assert!(matches!(
            store
                .create_at_guessed_epoch(&exact, max, secs(now, 3))
                .await
                .expect("create at the user's epoch"),
            GuessedCreate::Created(_)
        ));
        assert_eq!(
            ids(&store.list_user(&user, secs(now, 4)).await.expect("list")),
            vec![exact.id]
        );
    }
}

/// Defence in depth: a refresh never gives tokens to an active session
/// whose epoch is behind its user's (one a revoke-all should have ended):
/// the outcome is `Revoked`, and the session ends revoked (`revoke_all`),
/// since the epoch is read alongside the rotation's write; a later replay
/// of the token gets nothing either.
pub async fn refresh_refuses_a_session_of_an_older_epoch(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("epoch-refresh");
    store
        .revoke_user(&user, RevokeReason::RevokeAll, now)
        .await
        .expect("revoke_user");
    let epoch = store.user_epoch(&user).await.expect("user_epoch");
    assert!(epoch > 0);
    let (mut session, _, p0) = open_session(&secrets, &user, &Lifetimes::default(), now);
    session.epoch = epoch;
    store.create(&session).await.expect("create");
    // As if it had slipped past the revoke-all: its epoch is the old one.
    let mut stale = session.clone();
    stale.epoch = epoch - 1;
    stale.version += 1;
    assert!(
        store
            .replace(&stale, session.version, WriteHints::NONE)
            .await
            .expect("replace")
    );

    let (_, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(default_grace()), secs(now, 1))
        .await
        .expect("refresh");
    assert_eq!(result.outcome, RefreshOutcome::Revoked);
    assert!(result.revoked_here, "this refresh ended the session");
    let after = stored(&*store, &session.id).await;
    assert_eq!(
        after.revoked.map(|r| r.reason),
        Some(RevokeReason::RevokeAll),
        "the session is revoked, not left rotated"
    );
    for at in [2, 3_600] {
        let (_, _, next) = mint(&secrets, &session.id, 1);
        let again = store
            .refresh(&p0, &next, &params(default_grace()), secs(now, at))
            .await
            .expect("refresh");
        assert!(
            !issues_tokens(&again.outcome),
            "a replay {at} s later got tokens: {:?}",
            again.outcome
        );
    }
}

/// Hundreds of creates racing one `revoke_user` (each reads the user's
/// epoch, then creates under it, as a login does around its password
/// check): every session created under the epoch from before the
/// revoke-all is revoked afterwards and no refresh rotates it; zero
/// survivors.
pub async fn creates_racing_revoke_user_leave_no_survivor(store: Arc<dyn SessionStore>) {
    const CREATES: usize = 200;
    let secrets = Arc::new(secrets());
    let now = base_time();
    let user = Arc::new(unique_user("epoch-race"));
    let begun = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let creates: Vec<_> = (0..CREATES)
        .map(|_| {
            let (store, secrets, user, begun) = (
                Arc::clone(&store),
                Arc::clone(&secrets),
                Arc::clone(&user),
                Arc::clone(&begun),
            );
            tokio::spawn(async move {
                let epoch = store.user_epoch(&user).await.expect("user_epoch");
                begun.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::task::yield_now().await;
                let (mut session, _, presented) =
                    open_session(&secrets, &user, &Lifetimes::default(), now);
                session.epoch = epoch;
                match store.create_limited(&session, 0, now).await {
                    Ok(_) => (epoch, Some(presented)),
                    Err(StoreError::Superseded) => (epoch, None),
                    Err(e) => panic!("a racing create failed: {e:?}"),
                }
            })
        })
        .collect();
    let revoker = {
        let (store, user, begun) = (Arc::clone(&store), Arc::clone(&user), Arc::clone(&begun));
        tokio::spawn(async move {
            while begun.load(std::sync::atomic::Ordering::SeqCst) < CREATES / 2 {
                tokio::task::yield_now().await;
            }
            store
                .revoke_user(&user, RevokeReason::RevokeAll, now)
                .await
                .expect("revoke_user");
        })
    };
    let results: Vec<_> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|r| r.expect("a create task panicked"))
        .collect();
    revoker.await.expect("the revoker panicked");
    let current = store.user_epoch(&user).await.expect("user_epoch");
    assert_no_survivors(&*store, &secrets, &results, current, now).await;
}

/// Every session created under an epoch older than `current` is revoked
/// and refuses to rotate; and at least half the attempts began before the
/// change (so the race was real).
pub(crate) async fn assert_no_survivors(
    store: &dyn SessionStore,
    secrets: &TokenSecrets,
    results: &[(u64, Option<PresentedRefresh>)],
    current: u64,
    now: OffsetDateTime,
) {
    let old: Vec<_> = results.iter().filter(|(e, _)| *e < current).collect();
    assert!(
        old.len() >= results.len() / 2,
        "at least half the attempts began before the change ({} of {})",
        old.len(),
        results.len()
    );
    let mut survivors = 0;
    for (_, created) in &old {
        let Some(presented) = created else { continue };
        let (_, _, next) = mint(secrets, &presented.session_id, 1);
        let result = store
            .refresh(presented, &next, &params(default_grace()), secs(now, 1))
            .await
            .expect("refresh");
        let session = store.get(&presented.session_id).await.expect("get");
        if result.outcome == RefreshOutcome::Rotated
            || session.is_some_and(|s| s.is_active(secs(now, 1)))
        {
            survivors += 1;
        }
    }
    let created = old.iter().filter(|(_, c)| c.is_some()).count();
    assert_eq!(
        survivors,
        0,
        "{survivors} of {created} sessions opened before the change survived it \
         ({} refused)",
        old.len() - created
    );
}

/// With a limit of 2 on a user who has 2 sessions, `create_limited`
/// revokes the oldest (reason `session_limit`), returns it, and keeps the
/// other; a limit of 0 evicts nothing.
pub async fn the_per_user_limit_revokes_the_oldest(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("limit");
    let (oldest, _, _) = opened(&*store, &secrets, &user, now).await;
    let (middle, _, _) = opened(&*store, &secrets, &user, secs(now, 1)).await;

    let at = secs(now, 2);
    let (newest, _, _) = open_session(&secrets, &user, &Lifetimes::default(), at);
    let evicted = store
        .create_limited(&newest, 2, at)
        .await
        .expect("create_limited");
    assert_eq!(ids(&evicted), vec![oldest.id], "the oldest is evicted");
    assert_eq!(
        evicted[0].revoked.map(|r| (r.at, r.reason)),
        Some((at, RevokeReason::SessionLimit))
    );
    assert_eq!(stored(&*store, &oldest.id).await, evicted[0]);
    assert_eq!(
        ids(&store.list_user(&user, at).await.expect("list")),
        vec![middle.id, newest.id]
    );

    let later = secs(now, 3);
    let (unlimited, _, _) = open_session(&secrets, &user, &Lifetimes::default(), later);
    let evicted = store
        .create_limited(&unlimited, 0, later)
        .await
        .expect("create_limited");
    assert!(evicted.is_empty(), "a limit of 0 is unlimited");
    assert_eq!(
        ids(&store.list_user(&user, later).await.expect("list")),
        vec![middle.id, newest.id, unlimited.id]
    );
}

/// `list_user` returns the user's active sessions oldest first, without
/// revoked ones or other users' ones.
pub async fn list_user_is_oldest_first_and_omits_revoked(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let user = unique_user("list");
    // Created out of order, so insertion order is not the answer.
    let (second, _, _) = opened(&*store, &secrets, &user, secs(now, 20)).await;
    let (first, _, _) = opened(&*store, &secrets, &user, secs(now, 10)).await;
    let (gone, _, _) = opened(&*store, &secrets, &user, secs(now, 25)).await;
    let (third, _, _) = opened(&*store, &secrets, &user, secs(now, 30)).await;
    opened(
        &*store,
        &secrets,
        &unique_user("someone-else"),
        secs(now, 15),
    )
    .await;
    store
        .revoke(&gone.id, RevokeReason::UserRevoked, secs(now, 40))
        .await
        .expect("revoke")
        .expect("revoked");

    let listed = store.list_user(&user, secs(now, 50)).await.expect("list");
    assert_eq!(ids(&listed), vec![first.id, second.id, third.id]);
    assert_eq!(listed[0], first, "listed sessions are whole");
    assert!(
        store
            .list_user(&unique_user("nobody"), now)
            .await
            .expect("list")
            .is_empty()
    );
}

/// `purge_expired` never drops a live session.
pub async fn purge_expired_keeps_live_sessions(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let (session, _, _) = opened(&*store, &secrets, &unique_user("purge"), now).await;
    store.purge_expired(secs(now, 60)).await.expect("purge");
    assert_eq!(stored(&*store, &session.id).await, session);
}

/// `ping` answers a reachable store.
pub async fn ping_answers(store: Arc<dyn SessionStore>) {
    store.ping().await.expect("a reachable store answers ping");
}

/// Two instances of one store on one backend (two servers on one Redis,
/// two handles on one SQLite file): what `here` remembers of the sessions
/// it wrote ([`SessionStore::recent`]) never decides a refresh once
/// `there` has written since. Revoked there, a session gets no tokens
/// here: not by a rotation, not by a grace replay (which writes nothing,
/// so no compare-and-swap would catch a stale copy); rotated there, the
/// replay here gets the successor `there` stored.
pub async fn a_copy_kept_by_one_instance_never_outvotes_another(
    here: Arc<dyn SessionStore>,
    there: Arc<dyn SessionStore>,
) {
    let secrets = secrets();
    let now = base_time();
    let grace = default_grace();

    // Revoked there after a rotation here: the live token and the replay
    // of the previous one inside the grace window both get nothing.
    let (session, _, p0) = opened(&*here, &secrets, &unique_user("copies"), now).await;
    let (_, p1, _) = rotate(&*here, &secrets, &p0, grace, secs(now, 1)).await;
    there
        .revoke(&session.id, RevokeReason::Admin, secs(now, 2))
        .await
        .expect("revoke")
        .expect("active until now");
    for (presented, what) in [(&p0, "a replay inside grace"), (&p1, "the live token")] {
        let (_, _, next) = mint(&secrets, &session.id, presented.generation + 1);
        let result = here
            .refresh(presented, &next, &params(grace), secs(now, 3))
            .await
            .expect("refresh");
        assert!(
            !issues_tokens(&result.outcome),
            "{what} of a session revoked by another instance got tokens: {:?}",
            result.outcome
        );
    }
    let after = stored(&*there, &session.id).await;
    assert_eq!(
        after.revoked.map(|r| r.reason),
        Some(RevokeReason::Admin),
        "the revocation stands"
    );

    // Rotated there after a rotation here: replaying the token here rotated
    // away gets what `there` stored, and the live token there still works.
    let (session, _, p0) = opened(&*here, &secrets, &unique_user("copies"), now).await;
    let (_, p1, _) = rotate(&*here, &secrets, &p0, grace, secs(now, 1)).await;
    let (t2, p2, _) = rotate(&*there, &secrets, &p1, grace, secs(now, 2)).await;
    let (_, _, next) = mint(&secrets, &session.id, 2);
    let replay = here
        .refresh(&p1, &next, &params(grace), secs(now, 3))
        .await
        .expect("refresh");
    let RefreshOutcome::GraceReplay { sealed } = &replay.outcome else {
        panic!(
            "a replay of the token rotated away elsewhere is a grace replay, not {:?}",
            replay.outcome
        );
    };
    assert_eq!(
        secrets.unseal_successor(&session.id, sealed),
        Some(t2),
        "the successor the other instance issued"
    );
    rotate(&*here, &secrets, &p2, grace, secs(now, 4)).await;

    // The user's sessions revoked there: the copy here is refused too.
    let user = unique_user("copies");
    let (_, _, p0) = opened(&*here, &secrets, &user, now).await;
    let (_, p1, _) = rotate(&*here, &secrets, &p0, grace, secs(now, 1)).await;
    there
        .revoke_user(&user, RevokeReason::RevokeAll, secs(now, 2))
        .await
        .expect("revoke_user");
    let (_, _, next) = mint(&secrets, &p1.session_id, 2);
    let result = here
        .refresh(&p1, &next, &params(grace), secs(now, 3))
        .await
        .expect("refresh");
    assert!(
        !issues_tokens(&result.outcome),
        "a session revoked with its user elsewhere got tokens: {:?}",
        result.outcome
    );
}
