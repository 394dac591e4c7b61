//! Group commit for the hot writes: the refresh path's compare-and-swap and
//! session creation.
//!
//! With `synchronous=FULL` every commit is an fsync, so a store that gives
//! each write its own commit does at most one write per fsync. One writer
//! thread with a connection of its own (`writer.rs`) instead drains
//! whatever writes are waiting into one `BEGIN IMMEDIATE` transaction, runs
//! them in arrival order, commits once, and only then answers each caller:
//!
//! - a replace is its `UPDATE … WHERE id = ? AND version = ?`, won or lost
//!   by its own row count;
//! - a create runs in a savepoint of its own (epoch check, evictions down
//!   to the per-user limit, insert), rolled back alone if it is refused;
//!   without a per-user limit it is one `INSERT … SELECT … WHERE` the
//!   user's epoch has not moved on (or, for a create at a guessed epoch,
//!   equals the guess), which writes nothing when refused.
//!
//! Each write keeps its meaning: it sees every write committed or batched
//! before it, wins or loses alone, and is durable before its caller hears
//! it won. If the batch cannot be committed, nothing in it is, and every
//! caller gets the error (fail closed).

use rusqlite::{Connection, OptionalExtension as _, ToSql, TransactionBehavior, params};
use session_core::StoreError;
use session_core::record::RecordCipher;
use session_core::session::RevokeReason;
use session_core::store::GuessedCreate;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::codec::{counter, instant, session_from_row, stored_counter};
use crate::error::{Failure, classify_sqlite};
use crate::sessions::{
    Encoded, INSERT, INSERT_AT_EPOCH, INSERT_UNLESS_SUPERSEDED, LIST_USER, REPLACE, REVOKE_ONE,
    USER_EPOCH,
};
use crate::writer;

/// What this writer's errors call its batches.
const WHAT: &str = "session write";

/// Most writes one transaction commits.
const MAX_BATCH: usize = 128;

/// A create as `create_in` runs it.
pub(crate) struct Create {
    pub(crate) row: Encoded,
    pub(crate) user_id: String,
    /// The session's epoch (refused if the user's has moved past it).
    pub(crate) epoch: u64,
    /// `epoch` is a guess (`SessionStore::create_at_guessed_epoch`): the
    /// session is written only if the user's epoch equals it, and
    /// otherwise the user's epoch is the answer.
    pub(crate) exact: bool,
    /// The per-user limit (0: none).
    pub(crate) max: u32,
    pub(crate) now: OffsetDateTime,
    pub(crate) records: Option<RecordCipher>,
}

/// One waiting write.
enum Work {
    /// A compare-and-swap; with `epoch_of`, also that user's epoch, read
    /// in the batch's transaction after every write in it.
    Replace {
        row: Encoded,
        expected: i64,
        epoch_of: Option<String>,
    },
    Create(Create),
}

/// Where a write's answer goes.
enum Reply {
    Replace(oneshot::Sender<Result<(bool, i64), StoreError>>),
    Create(oneshot::Sender<Result<GuessedCreate, StoreError>>),
}

/// A write's own answer, sent once the batch has committed.
enum Done {
    /// Whether it won, and the epoch it asked for (0 if it asked none).
    Replace(bool, i64),
    Create(Result<GuessedCreate, StoreError>),
}

impl Reply {
    /// Sends `done`, or the batch's failure. A caller that has gone away
    /// is not waiting for anything.
    fn send(self, done: Result<Done, &Failure>) {
        match (self, done) {
            (Self::Replace(reply), Ok(Done::Replace(won, epoch))) => {
                let _ = reply.send(Ok((won, epoch)));
            }
            (Self::Create(reply), Ok(Done::Create(result))) => {
                let _ = reply.send(result);
            }
            // `commit` answers each write with its own kind; a mismatch
            // cannot happen, and would be a failure, never a success.
            (Self::Replace(reply), done) => {
                let _ = reply.send(Err(failed(done.err())));
            }
            (Self::Create(reply), done) => {
                let _ = reply.send(Err(failed(done.err())));
            }
        }
    }
}

fn failed(failure: Option<&Failure>) -> StoreError {
    failure.map_or_else(|| Failure::stopped(WHAT).again(), Failure::again)
}

/// The handle of the group-commit writer; cloning it shares the thread.
#[derive(Debug, Clone)]
pub(crate) struct Writer(writer::Writer<(Work, Reply)>);

impl Writer {
    /// Starts the writer on the database at `path`.
    pub(crate) fn start(path: &std::path::Path) -> Result<Self, StoreError> {
        let statements = [
            REPLACE,
            INSERT,
            INSERT_UNLESS_SUPERSEDED,
            INSERT_AT_EPOCH,
            USER_EPOCH,
            LIST_USER,
            REVOKE_ONE,
        ];
        writer::Writer::start(
            WHAT,
            path,
            &statements,
            MAX_BATCH,
            writer::BUSY_SPACING,
            |conn, batch| {
                let (work, replies): (Vec<Work>, Vec<Reply>) = batch.into_iter().unzip();
                match commit(conn, work) {
                    Ok(done) => {
                        for (reply, done) in replies.into_iter().zip(done) {
                            reply.send(Ok(done));
                        }
                    }
                    Err(failure) => {
                        for reply in replies {
                            reply.send(Err(&failure));
                        }
                    }
                }
            },
        )
        .map(Self)
    }

    /// Replaces the row of `row`'s session if its version is still
    /// `expected`: `true` once that is durable, `false` if another write
    /// got there first; with `epoch_of`, also that user's epoch as the
    /// batch's transaction sees it after its writes (else 0).
    pub(crate) async fn replace(
        &self,
        row: Encoded,
        expected: i64,
        epoch_of: Option<String>,
    ) -> Result<(bool, i64), StoreError> {
        let (reply, answer) = oneshot::channel();
        let work = Work::Replace {
            row,
            expected,
            epoch_of,
        };
        self.0.send((work, Reply::Replace(reply))).await?;
        answer.await.map_err(|_| self.0.stopped())?
    }

    /// Creates a session (see `create_in`); the sessions it evicted, once
    /// durable, or (a create at a guessed epoch) the user's epoch when the
    /// guess was wrong.
    pub(crate) async fn create(&self, create: Create) -> Result<GuessedCreate, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.0
            .send((Work::Create(create), Reply::Create(reply)))
            .await?;
        answer.await.map_err(|_| self.0.stopped())?
    }

    /// Stops the writer once the writes already sent are committed.
    pub(crate) async fn close(&self) {
        self.0.close().await;
    }
}

/// Runs the batch in one transaction; each write's answer, in order.
fn commit(conn: &mut Connection, batch: Vec<Work>) -> Result<Vec<Done>, Failure> {
    let fail = |e: rusqlite::Error| Failure::of_sqlite(WHAT, &e);
    let mut tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let mut done = Vec::with_capacity(batch.len());
    let mut epochs_of = Vec::new();
    for work in batch {
        done.push(match work {
            Work::Replace {
                row,
                expected,
                epoch_of,
            } => {
                let written = tx
                    .prepare_cached(REPLACE)
                    .and_then(|mut replace| replace.execute(&with(&row, &expected)[..]))
                    .map_err(fail)?;
                if let Some(user) = epoch_of {
                    epochs_of.push((done.len(), user));
                }
                Done::Replace(written > 0, 0)
            }
            // Without a per-user limit a create is one statement that
            // writes nothing when refused; with one, it runs in a savepoint.
            Work::Create(create) if create.max == 0 => {
                Done::Create(create_unlimited(&tx, &create).map_err(fail)?)
            }
            Work::Create(create) => Done::Create(in_savepoint(&mut tx, &create).map_err(fail)?),
        });
    }
    // The epochs asked for, after every write: what a revoke-all committed
    // before this transaction moved is seen; one committed after it
    // revokes what this batch wrote.
    for (at, user) in &epochs_of {
        if let (Some(Done::Replace(_, epoch)), Some(stored)) =
            (done.get_mut(*at), stored_epoch(&tx, user).map_err(fail)?)
        {
            *epoch = stored;
        }
    }
    // Dropping `tx` on an error above rolls the whole batch back.
    tx.commit().map_err(fail)?;
    Ok(done)
}

/// `row`'s `?1`..`?23` and `extra` as `?24`.
fn with<'a>(row: &'a Encoded, extra: &'a i64) -> [&'a dyn ToSql; 24] {
    let [
        p1,
        p2,
        p3,
        p4,
        p5,
        p6,
        p7,
        p8,
        p9,
        p10,
        p11,
        p12,
        p13,
        p14,
        p15,
        p16,
        p17,
        p18,
        p19,
        p20,
        p21,
        p22,
        p23,
    ] = row.params();
    [
        p1, p2, p3, p4, p5, p6, p7, p8, p9, p10, p11, p12, p13, p14, p15, p16, p17, p18, p19, p20,
        p21, p22, p23, extra,
    ]
}

/// The user's epoch as stored (none for a user never revoked).
fn stored_epoch(conn: &Connection, user_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached(USER_EPOCH)?
        .query_row(params![user_id], |r| r.get(0))
        .optional()
}

/// A create without a per-user limit (`max` 0): one statement,
/// [`INSERT_UNLESS_SUPERSEDED`] (or [`INSERT_AT_EPOCH`] for a guessed
/// epoch), so it needs no savepoint: refused, it has written nothing. Only
/// when it inserts nothing is the epoch read again, to tell a superseded
/// login (or a wrong guess) from an id already stored. `Err` when a
/// statement fails (the whole batch then fails: a failed statement may have
/// ended the transaction).
fn create_unlimited(
    conn: &Connection,
    create: &Create,
) -> rusqlite::Result<Result<GuessedCreate, StoreError>> {
    let epoch = match counter(create.epoch, "epoch") {
        Ok(epoch) => epoch,
        Err(e) => return Ok(Err(e)),
    };
    let insert = if create.exact {
        INSERT_AT_EPOCH
    } else {
        INSERT_UNLESS_SUPERSEDED
    };
    let inserted = conn
        .prepare_cached(insert)?
        .execute(&with(&create.row, &epoch)[..])?;
    if inserted > 0 {
        return Ok(Ok(GuessedCreate::Created(Vec::new())));
    }
    let stored = stored_epoch(conn, &create.user_id)?.unwrap_or(0);
    Ok(match epoch_refusal(create, stored) {
        Some(refused) => refused,
        None => Err(StoreError::Conflict),
    })
}

/// Whether the user's epoch as stored (`stored`) refuses `create`: a guess
/// that is not exact is answered with the user's epoch; a session's own
/// epoch is refused once the user's has moved past it.
fn epoch_refusal(create: &Create, stored: i64) -> Option<Result<GuessedCreate, StoreError>> {
    let stored = match stored_counter(stored, "epoch") {
        Ok(stored) => stored,
        Err(e) => return Some(Err(e)),
    };
    if create.exact {
        (stored != create.epoch).then_some(Ok(GuessedCreate::EpochIs(stored)))
    } else {
        (stored > create.epoch).then_some(Err(StoreError::Superseded))
    }
}

/// One create in a savepoint of the batch's transaction: released if it
/// succeeds, rolled back alone if it is refused. `Err` only when the
/// savepoint itself fails (then the whole batch goes).
fn in_savepoint(
    tx: &mut rusqlite::Transaction<'_>,
    create: &Create,
) -> rusqlite::Result<Result<GuessedCreate, StoreError>> {
    let mut savepoint = tx.savepoint()?;
    let result = create_in(&savepoint, create);
    if result.is_err() {
        savepoint.rollback()?;
    }
    // Releases the savepoint: with its writes, or with none after the
    // rollback above.
    savepoint.commit()?;
    Ok(result)
}

/// A create inside the batch's write transaction (`BEGIN IMMEDIATE`):
/// refused if the user's epoch moved past the session's (for a guessed
/// epoch: answered with the user's epoch unless it equals the guess,
/// before anything is written), the user's oldest active sessions revoked
/// down to `max - 1`, then the insert; an id already stored is a conflict.
/// On an error the caller rolls this create back whole.
fn create_in(conn: &Connection, create: &Create) -> Result<GuessedCreate, StoreError> {
    let Create {
        row,
        user_id,
        max,
        now,
        records,
        epoch: _,
        exact: _,
    } = create;
    let stored = stored_epoch(conn, user_id)
        .map_err(classify_sqlite)?
        .unwrap_or(0);
    if let Some(refused) = epoch_refusal(create, stored) {
        return refused;
    }
    let records = records.as_ref();
    let now = instant(*now)?;
    let mut evicted = Vec::new();
    if *max > 0 {
        let active = {
            let mut list = conn.prepare_cached(LIST_USER).map_err(classify_sqlite)?;
            let mut rows = list.query(params![user_id, now]).map_err(classify_sqlite)?;
            let mut active = Vec::new();
            while let Some(r) = rows.next().map_err(classify_sqlite)? {
                active.push(session_from_row(r, records)?);
            }
            active
        };
        let keep = usize::try_from(*max - 1).unwrap_or(usize::MAX);
        let excess = active.len().saturating_sub(keep);
        let mut revoke = conn.prepare_cached(REVOKE_ONE).map_err(classify_sqlite)?;
        for old in active.iter().take(excess) {
            let reason = RevokeReason::SessionLimit.as_str();
            let mut rows = revoke
                .query(params![now, reason, old.id.to_string()])
                .map_err(classify_sqlite)?;
            if let Some(r) = rows.next().map_err(classify_sqlite)? {
                evicted.push(session_from_row(r, records)?);
            }
        }
    }
    let inserted = conn
        .prepare_cached(INSERT)
        .and_then(|mut insert| insert.execute(&row.params()[..]))
        .map_err(classify_sqlite)?;
    if inserted == 0 {
        return Err(StoreError::Conflict);
    }
    Ok(GuessedCreate::Created(evicted))
}
