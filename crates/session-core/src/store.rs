//! The store traits every backend implements. Object-safe: the server holds
//! `Arc<dyn SessionStore>` and never names a backend.

use std::error::Error as StdError;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditQuery};
use crate::rotation::{NextRefresh, RefreshOutcome, RefreshParams, plan_refresh};
use crate::secret::{PresentedRefresh, SessionId};
use crate::session::{RevokeReason, Session};
use crate::user::User;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong in a store. "Not found" is an `Option`, not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot answer (connection refused, timeout, I/O). The
    /// request must be refused (503), never waved through.
    #[error("session store unavailable")]
    Unavailable(#[source] BoxError),
    /// A record with this key already exists; nothing was overwritten.
    #[error("record already exists")]
    Conflict,
    /// A compare-and-swap kept losing to concurrent writers.
    #[error("too many concurrent writers")]
    Contention,
    /// A stored record could not be decoded.
    #[error("stored record is corrupt")]
    Corrupt(#[source] BoxError),
    /// Any other backend failure.
    #[error("session store failed")]
    Backend(#[source] BoxError),
    /// The user's sessions were revoked (a password change or revoke-all
    /// moved the user's epoch past the session's) after this session's
    /// creation began: nothing was written.
    #[error("the user's sessions were revoked while this one was being created")]
    Superseded,
}

impl StoreError {
    /// Wraps a connection-level failure.
    pub fn unavailable(e: impl Into<BoxError>) -> Self {
        Self::Unavailable(e.into())
    }

    /// Wraps a decoding failure.
    pub fn corrupt(e: impl Into<BoxError>) -> Self {
        Self::Corrupt(e.into())
    }

    /// Wraps any other failure.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        Self::Backend(e.into())
    }
}

/// What a refresh did, as applied by the store.
#[derive(Debug, Clone)]
pub struct RefreshResult {
    /// The outcome.
    pub outcome: RefreshOutcome,
    /// The session as it stands after the refresh (when there is one).
    pub session: Option<Session>,
    /// Anomaly rules that fired.
    pub anomalies: Vec<crate::anomaly::Anomaly>,
    /// This refresh revoked the session (reason `revoke_all`): its user's
    /// epoch had moved past it (a revoke-all or password change still in
    /// progress, or one that stopped halfway), found only after the
    /// rotation was written. The caller records the revocation.
    pub revoked_here: bool,
}

/// How often [`ApplyRefresh::refresh`] re-reads after losing a race.
pub const MAX_CAS_ATTEMPTS: usize = 16;

/// What a write to an existing session knows beyond the session itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteHints {
    /// Until when the session's sealed grace successor is needed: its
    /// rotation plus the grace window, known on the refresh path. `None`
    /// keeps it until the session's own deadline. A store may drop the
    /// successor any time after this (Redis expires it, SQLite purges it).
    pub grace_until: Option<OffsetDateTime>,
}

impl WriteHints {
    /// No hints: keep everything to the session's deadline.
    pub const NONE: Self = Self { grace_until: None };

    /// A refresh's write of `session` with grace window `grace`.
    pub fn refresh(session: &Session, grace: time::Duration) -> Self {
        Self {
            grace_until: session
                .refresh
                .grace_successor
                .as_ref()
                .and(session.refresh.rotated_at)
                .map(|at| at + grace),
        }
    }
}

/// What [`SessionStore::create_at_guessed_epoch`] did.
#[derive(Debug)]
#[must_use]
pub enum GuessedCreate {
    /// The guess was right: the session exists; the sessions the limit
    /// evicted, as [`SessionStore::create_limited`] returns them.
    Created(Vec<Session>),
    /// The user's epoch is this, not the guess: nothing was written.
    EpochIs(u64),
}

/// The sessions and their refresh-token families.
#[async_trait]
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// Inserts a new session. Never overwrites: an existing id is
    /// [`StoreError::Conflict`]. Refuses with [`StoreError::Superseded`],
    /// writing nothing, when the user's epoch has moved past
    /// `session.epoch` (checked atomically with the insert, or re-checked
    /// after it and undone, so that no session opened under an old epoch
    /// outlives a [`SessionStore::revoke_user`]).
    async fn create(&self, session: &Session) -> Result<(), StoreError>;

    /// Inserts a new session while keeping the user at no more than `max`
    /// active sessions (0 = unlimited): the oldest are revoked with reason
    /// `session_limit` and returned. Refuses like [`SessionStore::create`]
    /// when the user's epoch moved on. Atomic in stores that override it.
    async fn create_limited(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut evicted = Vec::new();
        if max > 0 {
            let active = self.list_user(&session.user_id, now).await?;
            let keep = usize::try_from(max - 1).unwrap_or(usize::MAX);
            let excess = active.len().saturating_sub(keep);
            for old in active.iter().take(excess) {
                if let Some(s) = self
                    .revoke(&old.id, RevokeReason::SessionLimit, now)
                    .await?
                {
                    evicted.push(s);
                }
            }
        }
        self.create(session).await?;
        Ok(evicted)
    }

    /// [`SessionStore::create_limited`] where `session.epoch` is a guess at
    /// the user's epoch (the caller has not read it): the session is
    /// created only when the user's epoch is exactly `session.epoch`, and
    /// otherwise nothing is written and the epoch the store holds comes
    /// back ([`GuessedCreate::EpochIs`]), for the caller to open the
    /// session under it. A correct guess saves the read of the epoch
    /// (stores that override this check it in the same step as the insert:
    /// one round trip); the default reads the epoch, then creates as
    /// `create_limited` does, re-checking it.
    async fn create_at_guessed_epoch(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<GuessedCreate, StoreError> {
        create_reading_epoch(self, session, max, now).await
    }

    /// The session with this id, revoked or not, while its record lives.
    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// This instance's copy of session `id` as it last wrote it (see
    /// [`crate::recent::RecentWrites`]), for the refresh path to plan on
    /// instead of reading: a hint, never an answer. It may be stale; a store
    /// that keeps copies must move the version on every write that changes
    /// the record (so that a compare-and-swap planned on a stale copy loses)
    /// and forget the copy when a compare-and-swap of it loses. The default
    /// keeps none.
    fn recent(&self, _id: &SessionId) -> Option<Session> {
        None
    }

    /// Replaces the stored session with `session` if the stored version is
    /// still `expected_version`; false when another writer got there first
    /// or the session is gone. `hints` say how long parts of the record
    /// are needed (see [`WriteHints`]).
    ///
    /// **A write never un-revokes a session**: when the stored session is
    /// revoked and `session` is not, nothing is written and the answer is
    /// false, whatever the version. Revocation is final for every store.
    async fn replace(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<bool, StoreError>;

    /// Revokes one session. `Some(session)` when this call revoked an
    /// active session, `None` when it was unknown, expired or already revoked.
    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError>;

    /// The user's session epoch: 0 until the first revoke-all or password
    /// change, moved on by each. A login reads it before checking the
    /// password and opens its session under it, so that a create or a
    /// refresh can tell a session begun before the user's sessions were
    /// revoked.
    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError>;

    /// Moves the user's epoch on first (so every create of this user begun
    /// before, whose session carries an older epoch, is refused from then
    /// on), then revokes every active session of `user_id`; returns those
    /// it revoked. No session opened under an older epoch survives it.
    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError>;

    /// The user's active sessions, oldest first.
    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError>;

    /// [`SessionStore::replace`], and the epoch of `session`'s user (see
    /// [`SessionStore::user_epoch`]) read in the same step where the store
    /// can (one transaction, one round trip), else beside the write. The
    /// refresh path uses it to refuse a rotation that a revoke-all or
    /// password change overtook. The default runs the two side by side.
    async fn replace_reading_epoch(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<(bool, u64), StoreError> {
        replace_beside_epoch(self, session, expected_version, hints).await
    }

    /// Drops session `id`'s sealed grace successor if its window (the
    /// [`WriteHints::grace_until`] it was written with) has passed by
    /// `now`. Refresh calls it when the record it read holds a successor
    /// that is due, then reads again, so a successor is not kept at rest
    /// past its window while a purge is pending. Stores whose backend
    /// expires the successor by itself keep the default.
    async fn clear_expired_grace(
        &self,
        _id: &SessionId,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The DPoP `jti` replay set (RFC 9449 §11.1): remembers `key` (a
    /// proof's [`crate::dpop::VerifiedProof::replay_key`]) until
    /// `expires_at`. `true` the first time; `false` while it is remembered
    /// (a replayed proof). Atomic: of concurrent calls with one key exactly
    /// one gets `true`, on every instance sharing the store.
    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Drops records past their deadline; returns how many. Stores whose
    /// backend expires records itself keep the default.
    async fn purge_expired(&self, _now: OffsetDateTime) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// [`SessionStore::create_at_guessed_epoch`]'s default, for a store that
/// overrides it only in some configurations: the epoch read, then
/// [`SessionStore::create_limited`] when the guess was right.
pub async fn create_reading_epoch<S: SessionStore + ?Sized>(
    store: &S,
    session: &Session,
    max: u32,
    now: OffsetDateTime,
) -> Result<GuessedCreate, StoreError> {
    let current = store.user_epoch(&session.user_id).await?;
    if current != session.epoch {
        return Ok(GuessedCreate::EpochIs(current));
    }
    store
        .create_limited(session, max, now)
        .await
        .map(GuessedCreate::Created)
}

/// [`SessionStore::replace_reading_epoch`]'s default, for a store that
/// overrides it only in some configurations: the write and the epoch read
/// side by side.
pub async fn replace_beside_epoch<S: SessionStore + ?Sized>(
    store: &S,
    session: &Session,
    expected_version: u64,
    hints: WriteHints,
) -> Result<(bool, u64), StoreError> {
    let (written, epoch) = tokio::join!(
        store.replace(session, expected_version, hints),
        store.user_epoch(&session.user_id)
    );
    Ok((written?, epoch?))
}

/// The refresh algorithm, over any [`SessionStore`]: read, decide with
/// [`plan_refresh`], compare-and-swap with [`SessionStore::replace`],
/// again when a concurrent writer won. Blanket-implemented for every
/// store, so that no store can fork it; [`crate::service::SessionService`] is its
/// caller.
#[async_trait]
pub trait ApplyRefresh: SessionStore {
    /// Applies one refresh at `now`.
    async fn refresh(
        &self,
        presented: &PresentedRefresh,
        next: &NextRefresh,
        params: &RefreshParams,
        now: OffsetDateTime,
    ) -> Result<RefreshResult, StoreError>;
}

#[async_trait]
impl<S: SessionStore + ?Sized> ApplyRefresh for S {
    async fn refresh(
        &self,
        presented: &PresentedRefresh,
        next: &NextRefresh,
        params: &RefreshParams,
        now: OffsetDateTime,
    ) -> Result<RefreshResult, StoreError> {
        refresh_with_cas(self, presented, next, params, now).await
    }
}

/// Whether `session` holds a sealed grace successor whose keeping time
/// (the end of the grace window after its rotation, at the latest the
/// session's deadline: what [`WriteHints::refresh`] tells the store) has
/// passed.
fn successor_due(session: &Session, grace: time::Duration, now: OffsetDateTime) -> bool {
    session.refresh.grace_successor.is_some()
        && WriteHints::refresh(session, grace)
            .grace_until
            .map_or(session.expires_at(), |until| {
                until.min(session.expires_at())
            })
            <= now
}

/// The loop behind [`ApplyRefresh::refresh`].
///
/// Defence in depth: a session opened under an older epoch of its user
/// (one that a revoke-all or password change should have ended) is never
/// given new tokens. Where the rotation writes, the epoch is read alongside
/// the write (one round trip for both on a networked store); when it turns
/// out to have moved on, the rotation just written is revoked and no token
/// is issued.
async fn refresh_with_cas<S: SessionStore + ?Sized>(
    store: &S,
    presented: &PresentedRefresh,
    next: &NextRefresh,
    params: &RefreshParams,
    now: OffsetDateTime,
) -> Result<RefreshResult, StoreError> {
    let answer = |outcome, session, anomalies| RefreshResult {
        outcome,
        session,
        anomalies,
        revoked_here: false,
    };
    let mut cleared = false;
    // Only the first attempt may plan on the store's copy of the record;
    // every later one reads the record itself.
    let mut copy = store.recent(&presented.session_id);
    for _ in 0..MAX_CAS_ATTEMPTS {
        let mut from_copy = copy.is_some();
        let mut session = match copy.take() {
            Some(session) => session,
            None => match store.get(&presented.session_id).await? {
                Some(session) => session,
                None => return Ok(answer(RefreshOutcome::Expired, None, Vec::new())),
            },
        };
        // A sealed successor past its window is cleared at rest before the
        // plan sees the session. Asked only when the record just read holds
        // one that is due, so the common refresh makes no extra store call;
        // at most once, since the store decides by the deadline it stored.
        if !cleared && successor_due(&session, params.grace, now) {
            cleared = true;
            store
                .clear_expired_grace(&presented.session_id, now)
                .await?;
            let Some(read) = store.get(&presented.session_id).await? else {
                return Ok(answer(RefreshOutcome::Expired, None, Vec::new()));
            };
            session = read;
            from_copy = false;
        }
        let plan = plan_refresh(&session, presented, next, params, now);
        let issues = matches!(
            plan.outcome,
            RefreshOutcome::Rotated | RefreshOutcome::GraceReplay { .. }
        );
        let Some(new) = plan.write else {
            // An answer that writes nothing is not checked by a
            // compare-and-swap, so it must come from the record itself.
            if from_copy {
                continue;
            }
            if issues && session.epoch < store.user_epoch(&session.user_id).await? {
                return Ok(answer(RefreshOutcome::Revoked, Some(session), Vec::new()));
            }
            return Ok(answer(plan.outcome, Some(session), plan.anomalies));
        };
        let hints = WriteHints::refresh(&new, params.grace);
        if !issues {
            if store.replace(&new, session.version, hints).await? {
                return Ok(answer(plan.outcome, Some(new), plan.anomalies));
            }
            continue;
        }
        let (written, epoch) = store
            .replace_reading_epoch(&new, session.version, hints)
            .await?;
        if session.epoch < epoch {
            if !written {
                if from_copy {
                    continue;
                }
                return Ok(answer(RefreshOutcome::Revoked, Some(session), Vec::new()));
            }
            let revoked = store.revoke(&new.id, RevokeReason::RevokeAll, now).await?;
            return Ok(RefreshResult {
                outcome: RefreshOutcome::Revoked,
                revoked_here: revoked.is_some(),
                session: Some(revoked.unwrap_or(new)),
                anomalies: Vec::new(),
            });
        }
        if written {
            return Ok(answer(plan.outcome, Some(new), plan.anomalies));
        }
    }
    Err(StoreError::Contention)
}

/// Built-in password users.
#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    /// Adds a user; an existing username is [`StoreError::Conflict`].
    async fn create_user(&self, user: &User) -> Result<(), StoreError>;
    /// The user with this name.
    async fn get_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    /// Sets a new password hash; false when there is no such user. A store
    /// that also keeps sessions moves the user's session epoch on in the
    /// same atomic write (see [`SessionStore::user_epoch`]), so no login
    /// that read the old hash can open a session afterwards.
    async fn set_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError>;
    /// Removes a user; false when there is no such user.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Appends one event. Appending an id already stored is a no-op, so
    /// delivery may be retried.
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// Events matching `query`, newest first.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Whether the backend answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// What a revocation feed reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedEvent {
    /// The feed is (again) subscribed. Revocations published while it was
    /// down were missed, so a consumer must drop whatever it cached before.
    Connected,
    /// A session was revoked (on any instance).
    Revoked(SessionId),
    /// The feed dropped; until the next `Connected` a consumer must not
    /// trust its cache and must ask the store on every request.
    Disconnected,
}

/// A feed of revoked session ids shared by every server instance on one
/// store, so a revocation on one instance is felt by all at once.
/// Single-instance stores (SQLite) have none: the service tells its own
/// cache directly.
#[async_trait]
pub trait RevocationFeed: Send + Sync + std::fmt::Debug {
    /// Starts a subscription. The first event is `Connected` once the
    /// subscription is live; the feed reconnects by itself after a drop,
    /// reporting `Disconnected` then `Connected`.
    async fn subscribe(&self) -> Result<tokio::sync::mpsc::Receiver<FeedEvent>, StoreError>;
}
