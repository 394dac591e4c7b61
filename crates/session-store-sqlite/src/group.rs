//! Group commit for the refresh path's compare-and-swap.
//!
//! With `synchronous=FULL` every commit is an fsync, so a store that gives
//! each `replace` its own commit does at most one rotation per fsync. One
//! task instead drains whatever replaces are waiting into one `BEGIN
//! IMMEDIATE` transaction, runs each one's `UPDATE … WHERE id = ? AND
//! version = ?` in arrival order and reads its own row count, commits
//! once, and only then answers each caller. Each compare-and-swap keeps
//! its meaning: it sees every write committed or batched before it, wins
//! or loses alone, and is durable before its caller hears it won. If the
//! batch cannot be committed, nothing in it is, and every caller gets the
//! error (fail closed).

use session_core::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::error::Failure;
use crate::sessions::{Encoded, REPLACE};

/// What this writer's errors call its batches.
const WHAT: &str = "session write";

/// Most compare-and-swaps one transaction commits.
const MAX_BATCH: usize = 128;

type Reply = oneshot::Sender<Result<bool, StoreError>>;

/// One waiting compare-and-swap: the new row, the version it expects, and
/// where its answer goes.
struct Job {
    /// Taken when its statement is bound.
    row: Option<Encoded>,
    expected: i64,
    reply: Reply,
}

/// The handle of the group-commit task; cloning it shares the task.
#[derive(Debug, Clone)]
pub(crate) struct Replacer {
    tx: mpsc::Sender<Job>,
}

impl Replacer {
    /// Starts the task on the current runtime. It ends when the store
    /// (and so every sender) is dropped.
    pub(crate) fn start(pool: sqlx::SqlitePool) -> Self {
        let (tx, mut rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                match commit(&pool, &mut batch).await {
                    Ok(won) => {
                        for (job, won) in batch.drain(..).zip(won) {
                            let _ = job.reply.send(Ok(won));
                        }
                    }
                    Err(failure) => {
                        for job in batch.drain(..) {
                            let _ = job.reply.send(Err(failure.again()));
                        }
                    }
                }
            }
        });
        Self { tx }
    }

    /// Replaces the row of `row`'s session if its version is still
    /// `expected`; `Ok(true)` once that is durable, `Ok(false)` if another
    /// write got there first.
    pub(crate) async fn replace(&self, row: Encoded, expected: i64) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                row: Some(row),
                expected,
                reply,
            })
            .await
            .map_err(|_| Failure::stopped(WHAT).again())?;
        answer.await.map_err(|_| Failure::stopped(WHAT).again())?
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

/// Runs the batch in one transaction; each job's row count, in order.
/// The rows are taken out of the jobs (bound into their statements); the
/// replies stay for the caller to answer.
async fn commit(pool: &sqlx::SqlitePool, batch: &mut [Job]) -> Result<Vec<bool>, Failure> {
    let fail = |e: sqlx::Error| Failure::of(WHAT, e);
    let mut conn = pool.acquire().await.map_err(fail)?;
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
        .await
        .map_err(fail)?;
    let mut won = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        let Some(row) = job.row.take() else {
            // Each job is bound once; a batch is never run twice.
            won.push(false);
            continue;
        };
        let done = row
            .bind(sqlx::query(REPLACE))
            .bind(job.expected)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        won.push(done.rows_affected() > 0);
    }
    // Dropping `tx` on an error above rolls the whole batch back.
    tx.commit().await.map_err(fail)?;
    Ok(won)
}
