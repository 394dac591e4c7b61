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
    pub(crate) fn start(
        what: &'static str,
        path: &Path,
        statements: &[&str],
        max_batch: usize,
        mut run: impl FnMut(&mut Connection, Vec<J>) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let conn = connect(path, statements).map_err(|e| Failure::of_sqlite(what, &e).again())?;
        let (tx, mut rx) = mpsc::channel::<Message<J>>(4 * max_batch);
        std::thread::Builder::new()
            .name(format!("sqlite {what}"))
            .spawn(move || {
                let mut conn = conn;
                let mut inbox = Vec::with_capacity(max_batch);
                while rx.blocking_recv_many(&mut inbox, max_batch) > 0 {
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
