//! Group commit for the hot writes: the refresh path's compare-and-swap and
//! session creation.
//!
//! With `synchronous=FULL` every commit is an fsync, so a store that gives
//! each write its own commit does at most one write per fsync. One task
//! instead drains whatever writes are waiting into one `BEGIN IMMEDIATE`
//! transaction, runs them in arrival order, commits once, and only then
//! answers each caller:
//!
//! - a replace is its `UPDATE … WHERE id = ? AND version = ?`, won or lost
//!   by its own row count;
//! - a create runs in a savepoint of its own (epoch check, evictions down
//!   to the per-user limit, insert), rolled back alone if it is refused;
//!   without a per-user limit it is one `INSERT … SELECT … WHERE` the
//!   user's epoch has not moved on, which writes nothing when refused.
//!
//! Each write keeps its meaning: it sees every write committed or batched
//! before it, wins or loses alone, and is durable before its caller hears
//! it won. If the batch cannot be committed, nothing in it is, and every
//! caller gets the error (fail closed).

use std::collections::HashMap;

use session_core::StoreError;
use session_core::record::RecordCipher;
use session_core::session::Session;
use sqlx::{Acquire as _, QueryBuilder, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::error::Failure;
use crate::sessions::{Encoded, REPLACE, create_in, create_unlimited};

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
    Create(oneshot::Sender<Result<Vec<Session>, StoreError>>),
}

/// A write's own answer, sent once the batch has committed.
enum Done {
    /// Whether it won, and the epoch it asked for (0 if it asked none).
    Replace(bool, i64),
    Create(Result<Vec<Session>, StoreError>),
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

/// The handle of the group-commit task; cloning it shares the task.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<(Work, Reply)>,
}

impl Writer {
    /// Starts the task on the current runtime. It ends when the store
    /// (and so every sender) is dropped.
    pub(crate) fn start(pool: sqlx::SqlitePool) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Work, Reply)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let (work, replies): (Vec<Work>, Vec<Reply>) = batch.drain(..).unzip();
                match commit(&pool, work).await {
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
            }
        });
        Self { tx }
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
        self.send(work, Reply::Replace(reply)).await?;
        answer.await.map_err(|_| Failure::stopped(WHAT).again())?
    }

    /// Creates a session (see `create_in`); the sessions it evicted, once
    /// durable.
    pub(crate) async fn create(&self, create: Create) -> Result<Vec<Session>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Work::Create(create), Reply::Create(reply))
            .await?;
        answer.await.map_err(|_| Failure::stopped(WHAT).again())?
    }

    async fn send(&self, work: Work, reply: Reply) -> Result<(), StoreError> {
        self.tx
            .send((work, reply))
            .await
            .map_err(|_| Failure::stopped(WHAT).again())
    }
}

/// Runs the batch in one transaction; each write's answer, in order.
async fn commit(pool: &sqlx::SqlitePool, batch: Vec<Work>) -> Result<Vec<Done>, Failure> {
    let fail = |e: sqlx::Error| Failure::of(WHAT, e);
    let mut conn = pool.acquire().await.map_err(fail)?;
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
        .await
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
                let written = row
                    .bind(sqlx::query(REPLACE))
                    .bind(expected)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                if let Some(user) = epoch_of {
                    epochs_of.push((done.len(), user));
                }
                Done::Replace(written.rows_affected() > 0, 0)
            }
            // Without a per-user limit a create is one statement that
            // writes nothing when refused; with one, it runs in a savepoint.
            Work::Create(create) if create.max == 0 => {
                Done::Create(create_unlimited(&mut tx, create).await.map_err(fail)?)
            }
            Work::Create(create) => {
                Done::Create(in_savepoint(&mut tx, create).await.map_err(fail)?)
            }
        });
    }
    // The epochs asked for, in one statement after every write: what a
    // revoke-all committed before this transaction moved is seen; one
    // committed after it revokes what this batch wrote.
    if !epochs_of.is_empty() {
        let mut sql: QueryBuilder<Sqlite> =
            QueryBuilder::new("SELECT user_id, epoch FROM user_epochs WHERE user_id IN (");
        let mut users = sql.separated(", ");
        for (_, user) in &epochs_of {
            users.push_bind(user.as_str());
        }
        sql.push(")");
        let epochs: HashMap<String, i64> = sql
            .build_query_as::<(String, i64)>()
            .fetch_all(&mut *tx)
            .await
            .map_err(fail)?
            .into_iter()
            .collect();
        for (at, user) in &epochs_of {
            if let (Some(Done::Replace(_, epoch)), Some(stored)) =
                (done.get_mut(*at), epochs.get(user))
            {
                *epoch = *stored;
            }
        }
    }
    // Dropping `tx` on an error above rolls the whole batch back.
    tx.commit().await.map_err(fail)?;
    Ok(done)
}

/// One create in a savepoint of the batch's transaction: released if it
/// succeeds, rolled back alone if it is refused. `Err` only when the
/// savepoint itself fails (then the whole batch goes).
async fn in_savepoint(
    tx: &mut SqliteConnection,
    create: Create,
) -> Result<Result<Vec<Session>, StoreError>, sqlx::Error> {
    let mut savepoint = tx.begin().await?;
    let result = create_in(&mut savepoint, create).await;
    if result.is_ok() {
        savepoint.commit().await?;
    } else {
        savepoint.rollback().await?;
    }
    Ok(result)
}
