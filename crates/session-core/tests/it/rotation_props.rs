//! Property tests of the refresh-rotation state machine, applied by
//! `MemoryStore`: random interleavings of refreshes of the live token,
//! replays of the previous and of older tokens, never-issued tokens,
//! revocations, logins of new families and clock steps (across the grace
//! window and the idle deadline), checked against a model after every step.

use std::collections::HashMap;

use proptest::prelude::*;
use session_core::ApplyRefresh as _;
use session_core::anomaly::{AnomalyAction, AnomalyPolicy, ClientInfo};
use session_core::clock::{Clock, ManualClock};
use session_core::memory::MemoryStore;
use session_core::rotation::{NextRefresh, RefreshOutcome, RefreshParams};
use session_core::secret::{PresentedRefresh, RefreshToken, SessionId, TokenDigest, TokenSecrets};
use session_core::session::{Lifetimes, RevokeReason, Session};
use session_core::store::SessionStore;
use time::{Duration, OffsetDateTime};

const GRACE_SECS: i64 = 10;
const IDLE_SECS: i64 = 600;
const ABSOLUTE_SECS: i64 = 3_600;

#[derive(Debug, Clone)]
enum Op {
    /// Present the live token.
    RefreshLive,
    /// Present the token rotated away last.
    ReplayPrevious,
    /// Present a token two or more generations back (which one: the index
    /// modulo how many there are).
    ReplayOlder(usize),
    /// Present a token the family never reached: `ahead` generations past
    /// the live one, or the live generation with another digest.
    NeverIssued { ahead: u64, same_generation: bool },
    /// Revoke the family (logout).
    Revoke,
    /// Log in again: a new family becomes the one the next steps act on.
    Login,
    /// Move the clock forward.
    Advance(i64),
}

fn clock_step() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1..=3_i64,
        2 => (GRACE_SECS - 1)..=(GRACE_SECS + 1),
        1 => (IDLE_SECS - 2)..=(IDLE_SECS + 2),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::RefreshLive),
        4 => Just(Op::ReplayPrevious),
        2 => any::<usize>().prop_map(Op::ReplayOlder),
        3 => (0..4_u64, any::<bool>()).prop_map(|(ahead, same_generation)| Op::NeverIssued { ahead, same_generation }),
        1 => Just(Op::Revoke),
        1 => Just(Op::Login),
        5 => clock_step().prop_map(Op::Advance),
    ]
}

/// What the model knows of one family.
struct Family {
    id: SessionId,
    /// The tokens that were live, by generation; the last one is live now.
    chain: Vec<(RefreshToken, PresentedRefresh)>,
    /// Every token ever minted for this family, handed out or not.
    minted: Vec<TokenDigest>,
    revoked: Option<RevokeReason>,
    rotated_at: Option<OffsetDateTime>,
    idle_deadline: OffsetDateTime,
    absolute_deadline: OffsetDateTime,
}

impl Family {
    fn generation(&self) -> u64 {
        u64::try_from(self.chain.len() - 1).unwrap()
    }

    fn expired(&self, now: OffsetDateTime) -> bool {
        now >= self.idle_deadline.min(self.absolute_deadline)
    }
}

/// Which token a step presents, as the model classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Live,
    Previous,
    Older,
    NeverIssued,
}

/// The outcome the contract asks for, worked out from the model alone.
fn expected(f: &Family, kind: Presented, grace: Duration, now: OffsetDateTime) -> RefreshOutcome {
    if f.revoked.is_some() {
        return RefreshOutcome::Revoked;
    }
    if f.expired(now) {
        return RefreshOutcome::Expired;
    }
    match kind {
        Presented::Live => RefreshOutcome::Rotated,
        Presented::Previous => {
            let in_grace =
                grace > Duration::ZERO && f.rotated_at.is_some_and(|at| now < at + grace);
            if in_grace {
                // The sealed bytes are compared separately.
                RefreshOutcome::GraceReplay { sealed: Vec::new() }
            } else {
                RefreshOutcome::Reused
            }
        }
        Presented::Older => RefreshOutcome::Reused,
        Presented::NeverIssued => RefreshOutcome::Invalid,
    }
}

fn same_kind(a: &RefreshOutcome, b: &RefreshOutcome) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

struct World {
    store: MemoryStore,
    secrets: TokenSecrets,
    clock: ManualClock,
    params: RefreshParams,
    lifetimes: Lifetimes,
    families: Vec<Family>,
}

impl World {
    fn new(grace: Duration) -> Self {
        let lifetimes = Lifetimes {
            idle_timeout: Duration::seconds(IDLE_SECS),
            absolute_lifetime: Duration::seconds(ABSOLUTE_SECS),
            refresh_grace: grace,
            ..Lifetimes::default()
        };
        let ignore = AnomalyPolicy {
            user_agent: AnomalyAction::Ignore,
            ip: AnomalyAction::Ignore,
            rapid_refresh: AnomalyAction::Ignore,
            ..AnomalyPolicy::default()
        };
        Self {
            store: MemoryStore::new(),
            secrets: TokenSecrets::from_master(&[42; 32]),
            clock: ManualClock::at_epoch(),
            params: RefreshParams {
                grace,
                idle_timeout: lifetimes.idle_timeout,
                anomaly: ignore,
                client: ClientInfo::default(),
            },
            lifetimes,
            families: Vec::new(),
        }
    }

    async fn login(&mut self) {
        let now = self.clock.now();
        let id = SessionId::generate();
        let (token, presented) = self.secrets.issue_refresh(&id, 0);
        let session = Session::new(
            id,
            "prop-user".into(),
            presented.digest,
            &self.lifetimes,
            now,
        );
        self.store.create(&session).await.unwrap();
        self.families.push(Family {
            id,
            chain: vec![(token, presented)],
            minted: vec![presented.digest],
            revoked: None,
            rotated_at: None,
            idle_deadline: session.idle_expires_at,
            absolute_deadline: session.absolute_expires_at,
        });
    }

    async fn snapshot(&self) -> HashMap<SessionId, Session> {
        let mut out = HashMap::new();
        for f in &self.families {
            out.insert(f.id, self.store.get(&f.id).await.unwrap().unwrap());
        }
        out
    }

    /// Presents a token of the current family and checks the outcome and
    /// the stored state against the model.
    async fn present(&mut self, kind: Presented, presented: PresentedRefresh) {
        let now = self.clock.now();
        let before = self.snapshot().await;
        let f = self.families.last_mut().unwrap();
        let want = expected(f, kind, self.params.grace, now);

        let (successor, next_presented) = self.secrets.issue_refresh(&f.id, f.generation() + 1);
        f.minted.push(next_presented.digest);
        let next = NextRefresh {
            digest: next_presented.digest,
            sealed: Some(self.secrets.seal_successor(&f.id, &successor)),
        };
        let got = self
            .store
            .refresh(&presented, &next, &self.params, now)
            .await
            .unwrap();
        assert!(
            same_kind(&got.outcome, &want),
            "presenting the {kind:?} token at generation {} gave {:?}, the model wants {want:?}",
            f.generation(),
            got.outcome
        );
        if kind == Presented::Older {
            assert!(
                !matches!(got.outcome, RefreshOutcome::GraceReplay { .. }),
                "grace never answers a token two generations back"
            );
        }

        match &got.outcome {
            RefreshOutcome::Rotated => {
                f.chain.push((successor, next_presented));
                f.rotated_at = Some(now);
                f.idle_deadline = (now + self.params.idle_timeout).min(f.absolute_deadline);
            }
            RefreshOutcome::GraceReplay { sealed } => {
                let opened = self
                    .secrets
                    .unseal_successor(&f.id, sealed)
                    .expect("the successor unseals");
                assert_eq!(
                    &opened,
                    &f.chain.last().unwrap().0,
                    "a grace replay hands out the live token"
                );
            }
            RefreshOutcome::Reused => f.revoked = Some(RevokeReason::ReuseDetected),
            _ => {}
        }

        let after = self.snapshot().await;
        let id = self.families.last().unwrap().id;
        let writes = matches!(
            got.outcome,
            RefreshOutcome::Rotated | RefreshOutcome::Reused
        );
        if !writes {
            assert_eq!(after[&id], before[&id], "{:?} changes nothing", got.outcome);
        }
        for (other, state) in &before {
            if *other != id {
                assert_eq!(
                    &after[other], state,
                    "one family's refresh never touches another"
                );
            }
        }
        self.check_invariants().await;
    }

    async fn revoke(&mut self) {
        let now = self.clock.now();
        let f = self.families.last_mut().unwrap();
        let active = f.revoked.is_none() && !f.expired(now);
        let got = self
            .store
            .revoke(&f.id, RevokeReason::Logout, now)
            .await
            .unwrap();
        assert_eq!(
            got.is_some(),
            active,
            "revoke answers Some only for an active session"
        );
        if active {
            f.revoked = Some(RevokeReason::Logout);
        }
        self.check_invariants().await;
    }

    async fn check_invariants(&self) {
        for f in &self.families {
            let s = self.store.get(&f.id).await.unwrap().unwrap();
            assert_eq!(
                s.refresh.generation,
                f.generation(),
                "one generation per rotation"
            );
            assert_eq!(
                s.refresh.current,
                f.chain.last().unwrap().1.digest,
                "the model's live token is live"
            );
            let live = f.minted.iter().filter(|d| **d == s.refresh.current).count();
            assert_eq!(live, 1, "never two live successors");
            assert_eq!(
                s.revoked.map(|r| r.reason),
                f.revoked,
                "revocations match the model"
            );
            assert_eq!(s.idle_expires_at, f.idle_deadline);
            if f.generation() >= 1 {
                assert_eq!(
                    s.refresh.previous,
                    Some(f.chain[f.chain.len() - 2].1.digest),
                    "previous is the token rotated away last"
                );
            }
        }
    }

    async fn step(&mut self, op: &Op) {
        let f = self.families.last().unwrap();
        let generation = f.chain.len() - 1;
        match *op {
            Op::RefreshLive => {
                let p = f.chain[generation].1;
                self.present(Presented::Live, p).await;
            }
            Op::ReplayPrevious if generation >= 1 => {
                let p = f.chain[generation - 1].1;
                self.present(Presented::Previous, p).await;
            }
            Op::ReplayOlder(pick) if generation >= 2 => {
                let p = f.chain[pick % (generation - 1)].1;
                self.present(Presented::Older, p).await;
            }
            Op::ReplayPrevious | Op::ReplayOlder(_) => {}
            Op::NeverIssued {
                ahead,
                same_generation,
            } => {
                let g = f.generation();
                let at = if same_generation { g } else { g + 1 + ahead };
                let (_, p) = self.secrets.issue_refresh(&f.id, at);
                self.families.last_mut().unwrap().minted.push(p.digest);
                self.present(Presented::NeverIssued, p).await;
            }
            Op::Revoke => self.revoke().await,
            Op::Login => self.login().await,
            Op::Advance(secs) => self.clock.advance(Duration::seconds(secs)),
        }
    }
}

fn run(grace_on: bool, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let grace = if grace_on {
            Duration::seconds(GRACE_SECS)
        } else {
            Duration::ZERO
        };
        let mut world = World::new(grace);
        world.login().await;
        for op in ops {
            world.step(op).await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_interleavings_keep_one_live_successor_and_revoke_every_reuse(
        grace_on in prop::bool::weighted(0.8),
        ops in prop::collection::vec(op(), 1..48),
    ) {
        run(grace_on, &ops);
    }
}

#[test]
fn a_fixed_walk_through_every_step_kind_matches_the_model() {
    use Op::*;
    run(
        true,
        &[
            RefreshLive,
            Advance(1),
            ReplayPrevious,
            RefreshLive,
            NeverIssued {
                ahead: 0,
                same_generation: false,
            },
            NeverIssued {
                ahead: 0,
                same_generation: true,
            },
            Advance(GRACE_SECS),
            RefreshLive,
            ReplayOlder(0),
            RefreshLive,
            Login,
            RefreshLive,
            Advance(IDLE_SECS),
            RefreshLive,
            Revoke,
            Login,
            RefreshLive,
            Advance(GRACE_SECS + 1),
            ReplayPrevious,
            RefreshLive,
            Revoke,
        ],
    );
}
