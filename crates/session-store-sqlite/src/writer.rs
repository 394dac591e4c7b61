//! The writers' threads: a connection of its own (rusqlite) on a thread of
//! its own, fed by a channel, running whatever jobs are waiting as one
//! batch per wake-up.
//!
//! Why not tasks on sqlx's pool: sqlx runs every statement on a worker
//! thread of its connection and wakes the caller after it, so a batch of
//! writes cost two thread switches per statement (`finish_task_switch` was
//! the top symbol of the embedded store's profile, BENCHMARKS.md). Here a
//! batch costs one wake-up of the thread, every statement is prepared once
//! per connection, and the callers are woken once their batch is durable.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use session_core::StoreError;
use tokio::sync::{mpsc, oneshot};

use crate::error::Failure;

/// How long a busy writer lets jobs gather between the starts of two
/// batches (see [`Writer::start`]). At 4,000 audited refreshes a second
/// this cut the server's write syscalls per refresh by about 11 %, its
/// bytes written by 13 % and its CPU by 11 %, and the embedded store
/// creates 32 % more sessions a second (BENCHMARKS.md); a job waits at
/// most this long more, and only when others are writing too.
pub(crate) const BUSY_SPACING: Duration = Duration::from_millis(1);

/// A batch that takes this long is logged as a warning.
const SLOW_BATCH: Duration = Duration::from_millis(100);

/// What a writer's thread is asked to do.
enum Message<J> {
    Job(J),
    /// Finish the jobs already sent, close the connection and stop;
    /// answered once the connection is closed.
    Close(oneshot::Sender<()>),
}

/// The handle of a writer's thread; cloning it shares the thread. The
/// thread stops when every handle is dropped, or on [`Writer::close`].
pub(crate) struct Writer<J> {
    what: &'static str,
    tx: mpsc::Sender<Message<J>>,
}

impl<J> Clone for Writer<J> {
    fn clone(&self) -> Self {
        Self {
            what: self.what,
            tx: self.tx.clone(),
        }
    }
}

impl<J> std::fmt::Debug for Writer<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").field("what", &self.what).finish()
    }
}

impl<J: Send + 'static> Writer<J> {
    /// Opens a connection to the database at `path` (its schema already
    /// migrated), prepares `statements` (so a store without its tables
    /// fails to open, not on its first write) and starts the thread, which
    /// hands up to `max_batch` waiting jobs at a time to `run`. `run` must
    /// answer every job it is given.
    ///
    /// `spacing` is the least time between the starts of two batches while
    /// the writer is busy (the last batch held more than one job): a job
    /// that arrives sooner waits out the rest, and whatever joins it
    /// meanwhile shares its commit, as PostgreSQL's `commit_delay` does
    /// with `commit_siblings`. A lone caller never waits; a busy writer
    /// commits fewer, larger batches, which write fewer pages per job.
    pub(crate) fn start(
        what: &'static str,
        path: &Path,
        statements: &[&str],
        max_batch: usize,
        spacing: Duration,
        mut run: impl FnMut(&mut Connection, Vec<J>) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let conn = connect(path, statements).map_err(|e| Failure::of_sqlite(what, &e).again())?;
        let (tx, mut rx) = mpsc::channel::<Message<J>>(4 * max_batch);
        std::thread::Builder::new()
            .name(format!("sqlite {what}"))
            .spawn(move || {
                let mut conn = conn;
                let mut inbox = Vec::with_capacity(max_batch);
                // When the last batch began, if it had company: a lone
                // job (one caller writing at a time) never waits.
                let mut busy_since: Option<Instant> = None;
                while rx.blocking_recv_many(&mut inbox, max_batch) > 0 {
                    if let Some(wait) = busy_since
                        .and_then(|at| spacing.checked_sub(at.elapsed()))
                        .filter(|_| inbox.len() < max_batch)
                    {
                        std::thread::sleep(wait);
                        while inbox.len() < max_batch {
                            let Ok(message) = rx.try_recv() else { break };
                            inbox.push(message);
                        }
                    }
                    busy_since = (inbox.len() > 1).then(Instant::now);
                    let mut close = None;
                    let mut jobs = Vec::with_capacity(inbox.len());
                    for message in inbox.drain(..) {
                        match message {
                            Message::Job(job) if close.is_none() => jobs.push(job),
                            // Jobs sent after a close are dropped
                            // unanswered: their callers see the writer
                            // stopped.
                            Message::Job(_) => {}
                            Message::Close(done) => close = Some(done),
                        }
                    }
                    if !jobs.is_empty() {
                        let (count, started) = (jobs.len(), Instant::now());
                        run(&mut conn, jobs);
                        let took = started.elapsed();
                        if took >= SLOW_BATCH {
                            // Every caller in the batch waited this long:
                            // worth an operator's look (the disk, a
                            // checkpoint, another process holding the lock).
                            tracing::warn!(
                                writer = what,
                                writes = count,
                                ms = took.as_millis(),
                                "slow SQLite batch"
                            );
                        }
                    }
                    if let Some(done) = close {
                        rx.close();
                        drop(conn);
                        let _ = done.send(());
                        return;
                    }
                }
            })
            .map_err(StoreError::unavailable)?;
        Ok(Self { what, tx })
    }

    /// Queues `job`; `Unavailable` if the thread has stopped.
    pub(crate) async fn send(&self, job: J) -> Result<(), StoreError> {
        self.tx
            .send(Message::Job(job))
            .await
            .map_err(|_| self.stopped())
    }

    /// The error of a caller whose job went unanswered.
    pub(crate) fn stopped(&self) -> StoreError {
        Failure::stopped(self.what).again()
    }

    /// Closes the connection once the jobs already sent are done; later
    /// jobs fail as unavailable.
    pub(crate) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.tx.send(Message::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// A writer's connection: the durability the store's pool has
/// (`synchronous=FULL`, so a commit returns once fsynced), foreign keys
/// and the busy timeout. The journal mode is the file's own (WAL, set by
/// `SqliteStore::open`).
fn connect(path: &Path, statements: &[&str]) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(crate::BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(statements.len().max(16));
    for sql in statements {
        conn.prepare_cached(sql)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    /// A writer on a fresh database whose batches report their sizes; the
    /// first batch waits for `gate` when one is given.
    fn writer(
        dir: &tempfile::TempDir,
        spacing: Duration,
        gate: Option<std_mpsc::Receiver<()>>,
    ) -> (Writer<oneshot::Sender<()>>, std_mpsc::Receiver<usize>) {
        let path = dir.path().join("w.db");
        drop(Connection::open(&path).unwrap());
        let (sizes_tx, sizes) = std_mpsc::channel();
        let mut gate = gate;
        let w = Writer::start(
            "test",
            &path,
            &[],
            16,
            spacing,
            move |_, jobs: Vec<oneshot::Sender<()>>| {
                if let Some(gate) = gate.take() {
                    gate.recv().unwrap();
                }
                sizes_tx.send(jobs.len()).unwrap();
                for done in jobs {
                    let _ = done.send(());
                }
            },
        )
        .unwrap();
        (w, sizes)
    }

    async fn job(w: &Writer<oneshot::Sender<()>>) -> oneshot::Receiver<()> {
        let (done, answered) = oneshot::channel();
        w.send(done).await.unwrap();
        answered
    }

    #[tokio::test]
    async fn a_lone_caller_never_waits_out_the_spacing() {
        let dir = tempfile::tempdir().unwrap();
        // Ten lone writes in a row would take 10 minutes if they waited.
        let (w, sizes) = writer(&dir, Duration::from_secs(60), None);
        tokio::time::timeout(Duration::from_secs(20), async {
            for _ in 0..10 {
                job(&w).await.await.unwrap();
            }
        })
        .await
        .expect("lone writes waited for the spacing");
        assert_eq!(sizes.try_iter().collect::<Vec<_>>(), vec![1; 10]);
        w.close().await;
    }

    #[tokio::test]
    async fn a_busy_writer_lets_the_next_jobs_gather() {
        let dir = tempfile::tempdir().unwrap();
        let (open, gate) = std_mpsc::channel();
        let (w, sizes) = writer(&dir, Duration::from_millis(800), Some(gate));
        // The first batch holds the thread while two more jobs queue: they
        // join it or make the second batch, so a batch had company and the
        // writer counts as busy.
        let first = job(&w).await;
        let (second, third) = (job(&w).await, job(&w).await);
        open.send(()).unwrap();
        first.await.unwrap();
        second.await.unwrap();
        third.await.unwrap();
        // Two jobs 100 ms apart: within the spacing, so one batch.
        let fourth = job(&w).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let fifth = job(&w).await;
        fourth.await.unwrap();
        fifth.await.unwrap();
        let sizes: Vec<usize> = sizes.try_iter().collect();
        assert_eq!(sizes.iter().sum::<usize>(), 5, "{sizes:?}");
        assert_eq!(sizes.last(), Some(&2), "{sizes:?}");
        w.close().await;
    }
}
