//! [`SessionStore`] over the `sessions` table. Every write is one atomic
//! statement checked by its row count, or one `BEGIN IMMEDIATE` transaction;
//! the refresh path's compare-and-swap shares its commit with the others
//! waiting (`group.rs`).

use async_trait::async_trait;
use session_core::session::{RevokeReason, Session};
use session_core::store::GuessedCreate;
use session_core::{SessionId, SessionStore, StoreError, WriteHints};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use session_core::record::{ClearFields, RecordCipher};

use crate::codec::{counter, instant, instants_json, json_text, session_from_row, stored_counter};
use crate::error::classify;
use crate::{SqliteStore, group};

/// A session's column values as bound, in `session_columns!()` order.
pub(crate) struct Encoded {
    id: String,
    user_id: String,
    created_at: i64,
    last_seen_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    ip: Option<String>,
    user_agent: Option<String>,
    metadata: String,
    generation: i64,
    current_digest: Vec<u8>,
    previous_digest: Option<Vec<u8>>,
    rotated_at: Option<i64>,
    grace_successor: Option<Vec<u8>>,
    recent_refreshes: String,
    revoked_at: Option<i64>,
    revoked_reason: Option<&'static str>,
    version: i64,
    dpop_jkt: Option<String>,
    epoch: i64,
    location: Option<String>,
    sealed: Option<Vec<u8>>,
    grace_until: Option<i64>,
}

/// Until when a session's sealed successor may be kept: the end of the
/// grace window after its rotation where the window is known, else the
/// session's deadline; none without a successor.
fn grace_until(s: &Session, hints: WriteHints) -> Result<Option<i64>, StoreError> {
    if s.refresh.grace_successor.is_none() {
        return Ok(None);
    }
    let until = hints
        .grace_until
        .map_or(s.expires_at(), |until| until.min(s.expires_at()));
    instant(until).map(Some)
}

impl Encoded {
    fn new(
        s: &Session,
        hints: WriteHints,
        records: Option<&RecordCipher>,
    ) -> Result<Self, StoreError> {
        let sealed = records
            .map(|r| r.seal(s))
            .transpose()
            .map_err(StoreError::unavailable)?;
        let clear = ClearFields::of(s, sealed.is_some());
        Ok(Self {
            id: s.id.to_string(),
            user_id: s.user_id.clone(),
            created_at: instant(s.created_at)?,
            last_seen_at: instant(s.last_seen_at)?,
            idle_expires_at: instant(s.idle_expires_at)?,
            absolute_expires_at: instant(s.absolute_expires_at)?,
            ip: clear.ip.map(str::to_owned),
            user_agent: clear.user_agent.map(str::to_owned),
            metadata: json_text(clear.metadata)?,
            generation: counter(s.refresh.generation, "generation")?,
            current_digest: s.refresh.current.as_bytes().to_vec(),
            previous_digest: s.refresh.previous.map(|d| d.as_bytes().to_vec()),
            rotated_at: s.refresh.rotated_at.map(instant).transpose()?,
            grace_successor: s.refresh.grace_successor.clone(),
            recent_refreshes: instants_json(&s.refresh.recent_refreshes)?,
            revoked_at: s.revoked.map(|r| instant(r.at)).transpose()?,
            revoked_reason: s.revoked.map(|r| r.reason.as_str()),
            version: counter(s.version, "version")?,
            dpop_jkt: clear.dpop_jkt.map(|j| j.as_str().to_owned()),
            epoch: counter(s.epoch, "epoch")?,
            location: clear
                .location
                .map(|l| serde_json::to_string(l).map_err(StoreError::backend))
                .transpose()?,
            sealed,
            grace_until: grace_until(s, hints)?,
        })
    }

    /// `?1`..`?23`, for the writer's (rusqlite) statements.
    pub(crate) fn params(&self) -> [&dyn rusqlite::ToSql; 23] {
        [
            &self.id,
            &self.user_id,
            &self.created_at,
            &self.last_seen_at,
            &self.idle_expires_at,
            &self.absolute_expires_at,
            &self.ip,
            &self.user_agent,
            &self.metadata,
            &self.generation,
            &self.current_digest,
            &self.previous_digest,
            &self.rotated_at,
            &self.grace_successor,
            &self.recent_refreshes,
            &self.revoked_at,
            &self.revoked_reason,
            &self.version,
            &self.dpop_jkt,
            &self.epoch,
            &self.location,
            &self.sealed,
            &self.grace_until,
        ]
    }
}

pub(crate) const INSERT: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ", grace_until) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23) \
     ON CONFLICT (id) DO NOTHING"
);

// A write never un-revokes: a revoked row is only ever rewritten revoked.
pub(crate) const REPLACE: &str = "UPDATE sessions SET user_id = ?2, created_at = ?3, last_seen_at = ?4, \
     idle_expires_at = ?5, absolute_expires_at = ?6, ip = ?7, user_agent = ?8, metadata = ?9, \
     generation = ?10, current_digest = ?11, previous_digest = ?12, rotated_at = ?13, \
     grace_successor = ?14, recent_refreshes = ?15, revoked_at = ?16, revoked_reason = ?17, \
     version = ?18, dpop_jkt = ?19, epoch = ?20, location = ?21, sealed = ?22, grace_until = ?23 \
     WHERE id = ?1 AND version = ?24 AND (revoked_at IS NULL OR ?16 IS NOT NULL)";

const GET: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE id = ?1"
);

// "Active" below is the model's `Session::is_active`: not revoked, and now
// strictly before both deadlines.

pub(crate) const LIST_USER: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE user_id = ?1 AND revoked_at IS NULL \
     AND idle_expires_at > ?2 AND absolute_expires_at > ?2 ORDER BY created_at, id"
);

// Revocation mirrors `Session::revoke`: record when and why, drop the
// sealed grace successor, bump the version.
pub(crate) const REVOKE_ONE: &str = concat!(
    "UPDATE sessions SET revoked_at = ?1, revoked_reason = ?2, grace_successor = NULL, \
     version = version + 1 \
     WHERE id = ?3 AND revoked_at IS NULL AND idle_expires_at > ?1 AND absolute_expires_at > ?1 \
     RETURNING ",
    session_columns!()
);

const REVOKE_USER: &str = concat!(
    "UPDATE sessions SET revoked_at = ?1, revoked_reason = ?2, grace_successor = NULL, \
     version = version + 1 \
     WHERE user_id = ?3 AND revoked_at IS NULL AND idle_expires_at > ?1 \
     AND absolute_expires_at > ?1 \
     RETURNING ",
    session_columns!()
);

pub(crate) const USER_EPOCH: &str = "SELECT epoch FROM user_epochs WHERE user_id = ?1";

/// Moves a user's epoch on (from 0, the epoch of a user never revoked).
pub(crate) const BUMP_EPOCH: &str = "INSERT INTO user_epochs (user_id, epoch) VALUES (?1, 1) \
     ON CONFLICT (user_id) DO UPDATE SET epoch = epoch + 1";

/// Clears every sealed successor whose grace window has passed.
const CLEAR_GRACE: &str = "UPDATE sessions SET grace_successor = NULL, grace_until = NULL \
     WHERE grace_until <= ?1";

/// Clears one session's sealed successor if its grace window has passed.
const CLEAR_GRACE_ONE: &str = "UPDATE sessions SET grace_successor = NULL, grace_until = NULL \
     WHERE id = ?2 AND grace_until <= ?1";

const PURGE: &str = "DELETE FROM sessions WHERE min(idle_expires_at, absolute_expires_at) <= ?1";

/// The replay set: insert unless a live row holds the key (an expired row
/// is taken over). One statement, so concurrent inserts of one key leave
/// exactly one winner.
const REMEMBER_PROOF: &str = "INSERT INTO dpop_proofs (key, expires_at) VALUES (?1, ?2) \
     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
     WHERE dpop_proofs.expires_at <= ?3";

const PURGE_PROOFS: &str = "DELETE FROM dpop_proofs WHERE expires_at <= ?1";

fn sessions_from_rows(
    rows: &[SqliteRow],
    records: Option<&RecordCipher>,
) -> Result<Vec<Session>, StoreError> {
    rows.iter().map(|r| session_from_row(r, records)).collect()
}

/// Oldest first, as `list_user` promises (`RETURNING` has no order).
fn oldest_first(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.to_string().cmp(&b.id.to_string()))
    });
    sessions
}

async fn revoke_one(
    conn: &mut SqliteConnection,
    records: Option<&RecordCipher>,
    id: &SessionId,
    reason: RevokeReason,
    now: OffsetDateTime,
) -> Result<Option<Session>, StoreError> {
    let row = sqlx::query(REVOKE_ONE)
        .bind(instant(now)?)
        .bind(reason.as_str())
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(classify)?;
    row.as_ref()
        .map(|r| session_from_row(r, records))
        .transpose()
}

/// The user's epoch as the connection sees it (0 for a user never revoked).
async fn user_epoch(conn: &mut SqliteConnection, user_id: &str) -> Result<u64, StoreError> {
    let epoch: Option<i64> = sqlx::query_scalar(USER_EPOCH)
        .bind(user_id)
        .fetch_optional(conn)
        .await
        .map_err(classify)?;
    epoch.map_or(Ok(0), |e| stored_counter(e, "epoch"))
}

/// [`INSERT`] of a session whose epoch is `?24` only while the user's
/// epoch (`?2` is the user id) stands in relation `$op` to it: one
/// statement, which writes nothing when it is refused.
macro_rules! insert_if_epoch {
    ($op:literal) => {
        concat!(
            "INSERT INTO sessions (",
            session_columns!(),
            ", grace_until) \
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19, ?20, ?21, ?22, ?23 \
             WHERE coalesce((SELECT epoch FROM user_epochs WHERE user_id = ?2), 0) ",
            $op,
            " ?24 ON CONFLICT (id) DO NOTHING"
        )
    };
}

/// A create without a per-user limit: only while the user's epoch has not
/// moved past the session's.
pub(crate) const INSERT_UNLESS_SUPERSEDED: &str = insert_if_epoch!("<=");

/// A create at a guessed epoch (`SessionStore::create_at_guessed_epoch`):
/// only while the user's epoch equals the guess.
pub(crate) const INSERT_AT_EPOCH: &str = insert_if_epoch!("=");

impl SqliteStore {
    /// A create through the group writer (`group.rs`): at the session's
    /// epoch, or with `exact`, at a guess of the user's epoch.
    async fn create_in_group(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
        exact: bool,
    ) -> Result<GuessedCreate, StoreError> {
        let encoded = Encoded::new(session, WriteHints::NONE, self.records.as_ref())?;
        let created = self
            .group
            .create(group::Create {
                row: encoded,
                user_id: session.user_id.clone(),
                epoch: session.epoch,
                exact,
                max,
                now,
                records: self.records.clone(),
            })
            .await?;
        if let GuessedCreate::Created(evicted) = &created {
            self.recent.wrote(session);
            for old in evicted {
                self.recent.forget(&old.id);
            }
        }
        Ok(created)
    }

    /// The compare-and-swap behind `replace`, group-committed with the
    /// others waiting (`group.rs`).
    async fn write(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
        epoch: bool,
    ) -> Result<(bool, u64), StoreError> {
        let expected = counter(expected_version, "version")?;
        let row = Encoded::new(session, hints, self.records.as_ref())?;
        let epoch_of = epoch.then(|| session.user_id.clone());
        // The copy follows what is stored: the written session, or none
        // when this write lost or its outcome is unknown.
        let replaced = self.group.replace(row, expected, epoch_of).await;
        match replaced {
            Ok((true, _)) => self.recent.wrote(session),
            _ => self.recent.forget(&session.id),
        }
        let (written, epoch) = replaced?;
        Ok((written, stored_counter(epoch, "epoch")?))
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, session: &Session) -> Result<(), StoreError> {
        self.create_limited(session, 0, session.created_at)
            .await
            .map(drop)
    }

    /// Inside a `BEGIN IMMEDIATE` transaction (shared with the other writes
    /// waiting, each create in its own savepoint: `group.rs`): it holds the
    /// write lock while checking the user's epoch and counting, so a
    /// revoke-all or password change (their own transactions) lands wholly
    /// before (this create is refused) or after (it revokes this session),
    /// and concurrent logins of one user are serialised and can never leave
    /// more than `max` active sessions.
    async fn create_limited(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        match self.create_in_group(session, max, now, false).await? {
            GuessedCreate::Created(evicted) => Ok(evicted),
            // Not a guess: another epoch than the session's refuses it
            // only when it has moved past it.
            GuessedCreate::EpochIs(_) => Err(StoreError::Superseded),
        }
    }

    /// One trip through the group writer: the guess is checked in the
    /// batch's transaction, in the insert itself when there is no limit.
    async fn create_at_guessed_epoch(
        &self,
        session: &Session,
        max: u32,
        now: OffsetDateTime,
    ) -> Result<GuessedCreate, StoreError> {
        self.create_in_group(session, max, now, true).await
    }

    async fn get(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(GET)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        row.as_ref()
            .map(|r| session_from_row(r, self.records.as_ref()))
            .transpose()
    }

    /// Kept by the compare-and-swap and create: every write that changes
    /// a session moves its version (clearing a grace successor whose window
    /// has passed does not, and refresh reads the row itself before
    /// planning on a record holding one), so a compare-and-swap planned on
    /// a stale copy loses.
    fn recent(&self, id: &SessionId) -> Option<Session> {
        self.recent.get(id)
    }

    async fn replace(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<bool, StoreError> {
        Ok(self.write(session, expected_version, hints, false).await?.0)
    }

    /// One trip through the group writer: the user's epoch is read in the
    /// batch's `BEGIN IMMEDIATE` transaction, after its writes.
    async fn replace_reading_epoch(
        &self,
        session: &Session,
        expected_version: u64,
        hints: WriteHints,
    ) -> Result<(bool, u64), StoreError> {
        self.write(session, expected_version, hints, true).await
    }

    /// One `UPDATE`: the successor and its deadline go once it has passed.
    async fn clear_expired_grace(
        &self,
        id: &SessionId,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(CLEAR_GRACE_ONE)
            .bind(instant(now)?)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn revoke(
        &self,
        id: &SessionId,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Option<Session>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        revoke_one(&mut conn, self.records.as_ref(), id, reason, now).await
    }

    async fn user_epoch(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        user_epoch(&mut conn, user_id).await
    }

    /// One `BEGIN IMMEDIATE` transaction: move the user's epoch on, then
    /// one `UPDATE … RETURNING` revokes every active session.
    async fn revoke_user(
        &self,
        user_id: &str,
        reason: RevokeReason,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let at = instant(now)?;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(classify)?;
        sqlx::query(BUMP_EPOCH)
            .bind(user_id)
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        let rows = sqlx::query(REVOKE_USER)
            .bind(at)
            .bind(reason.as_str())
            .bind(user_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(oldest_first(sessions_from_rows(
            &rows,
            self.records.as_ref(),
        )?))
    }

    async fn list_user(
        &self,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(LIST_USER)
            .bind(user_id)
            .bind(instant(now)?)
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?;
        sessions_from_rows(&rows, self.records.as_ref())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.ping_db().await
    }

    async fn remember_dpop_proof(
        &self,
        key: &[u8; 32],
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(REMEMBER_PROOF)
            .bind(key.as_slice())
            .bind(instant(expires_at)?)
            .bind(instant(now)?)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every session, revoked or not, whose record has outlived the
    /// earlier of its deadlines, and every DPoP proof past its window; also
    /// clears every sealed successor whose grace window has passed.
    async fn purge_expired(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let at = instant(now)?;
        sqlx::query(PURGE_PROOFS)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        sqlx::query(CLEAR_GRACE)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        let done = sqlx::query(PURGE)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(done.rows_affected())
    }
}
