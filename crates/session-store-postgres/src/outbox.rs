//! [`OutboxAuditLog`]: appends land in a local, fsync'd file first; a
//! background task delivers them to PostgreSQL in order, at least once,
//! deduplicated by event id. An outage of PostgreSQL delays the audit log;
//! it never blocks an append and never loses one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use session_core::{AuditEvent, AuditLog, AuditQuery, StoreError};
use tokio::sync::{Notify, oneshot, watch};

use crate::log::{MigrateMode, PostgresAuditLog, connect_options, pool_options, prepare_schema};

/// The outbox file, in the data dir: one JSON event per line.
pub const OUTBOX_FILE: &str = "audit-outbox.jsonl";
/// Lines that could not be read back (a damaged file), kept for a human.
pub const REJECTED_FILE: &str = "audit-outbox.rejected";
/// Held locked while an outbox is open: one process per outbox.
pub const LOCK_FILE: &str = "audit-outbox.lock";

/// The outbox's files hold user ids, IPs and user agents: owner only.
const PRIVATE: u32 = 0o600;

/// How the outbox behaves.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// At most this many events per delivery transaction.
    pub batch_size: usize,
    /// After delivering a batch smaller than `batch_size`, how long to let
    /// events gather (durable in the outbox already) before the next: fewer,
    /// larger transactions cost PostgreSQL less per event. Queries still
    /// wait for what was appended before them (`query_wait`).
    pub linger: Duration,
    /// The first pause after a failed delivery; it doubles on each failure.
    pub min_backoff: Duration,
    /// The longest pause between delivery attempts.
    pub max_backoff: Duration,
    /// How long a query waits for events appended before it to be
    /// delivered (read-your-writes) before it answers from PostgreSQL as is.
    pub query_wait: Duration,
    /// Rewrite the file without its delivered prefix once that prefix is
    /// this large and at least as large as the undelivered rest (an empty
    /// backlog truncates the file at once).
    pub compact_bytes: u64,
    /// What to do about the schema when PostgreSQL is first reached.
    pub migrate: MigrateMode,
    /// How long the file writer, when busy, lets appends gather between the
    /// starts of two groups: fewer, larger groups cost fewer syncs per
    /// event. As PostgreSQL's `commit_delay` waits only with
    /// `commit_siblings`, the writer waits only after a group that had
    /// company: a lone append is written at once.
    pub busy_spacing: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            batch_size: 500,
            linger: Duration::from_millis(10),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            query_wait: Duration::from_secs(2),
            compact_bytes: 4 << 20,
            migrate: MigrateMode::Check,
            busy_spacing: Duration::from_millis(1),
        }
    }
}

/// The audit log the server uses with `SESSION_AUDIT=postgres://…`: a
/// durable local outbox in front of [`PostgresAuditLog`].
#[derive(Debug)]
pub struct OutboxAuditLog {
    log: PostgresAuditLog,
    shared: Arc<Shared>,
    writer: std_mpsc::Sender<Cmd>,
    writer_thread: thread::JoinHandle<()>,
    delivery: tokio::task::JoinHandle<()>,
    config: OutboxConfig,
    _lock: File,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the delivery task after appends became durable.
    appended: Notify,
    /// Events delivered (or set aside), counting since open.
    delivered: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of the file written and synced.
    durable_len: u64,
    /// Events durable in the file, counting since open.
    durable_count: u64,
    /// Bytes of the file already delivered.
    delivered_offset: u64,
    /// Events delivered, counting since open.
    delivered_count: u64,
    /// Whether the last delivery attempt failed.
    failing: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
enum Cmd {
    Append {
        line: Vec<u8>,
        done: oneshot::Sender<Result<(), Arc<io::Error>>>,
    },
    Compact {
        done: oneshot::Sender<()>,
    },
}

/// Writing the outbox failed.
#[derive(Debug, thiserror::Error)]
#[error("could not write the audit outbox")]
struct OutboxWriteFailed(#[source] Arc<io::Error>);

/// The outbox's writer thread has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the audit outbox writer has stopped")]
struct OutboxClosed;

/// Another process has this outbox open.
#[derive(Debug, thiserror::Error)]
#[error("the audit outbox {0} is in use by another process")]
struct OutboxLocked(PathBuf);

impl OutboxAuditLog {
    /// Opens (or creates) the outbox in `data_dir` and starts delivering to
    /// the PostgreSQL at `url`. PostgreSQL need not be up: the schema is
    /// applied or checked when it is first reached. A schema that is
    /// reachable and wrong fails here. Must run inside a Tokio runtime.
    pub async fn open(
        data_dir: &Path,
        url: &str,
        config: OutboxConfig,
    ) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let dir = data_dir.to_owned();
        let (lock, file, recovered) = tokio::task::spawn_blocking(move || open_files(&dir))
            .await
            .map_err(StoreError::backend)?
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock => {
                    StoreError::backend(OutboxLocked(data_dir.join(OUTBOX_FILE)))
                }
                _ => StoreError::unavailable(e),
            })?;
        if recovered.count > 0 {
            tracing::info!(
                events = recovered.count,
                "audit outbox holds events to deliver"
            );
        }

        let log = PostgresAuditLog::from_pool(pool_options().connect_lazy_with(options));
        let schema_ready = match prepare_schema(log.pool(), config.migrate).await {
            Ok(()) => true,
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "audit database unreachable; events wait in the outbox");
                false
            }
            Err(e) => return Err(e),
        };

        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                durable_len: recovered.len,
                durable_count: recovered.count,
                ..State::default()
            }),
            appended: Notify::new(),
            delivered: watch::Sender::new(0),
        });
        let path = data_dir.join(OUTBOX_FILE);
        let (tx, rx) = std_mpsc::channel();
        let writer_thread = {
            let shared = Arc::clone(&shared);
            let path = path.clone();
            let (compact_bytes, spacing) = (config.compact_bytes, config.busy_spacing);
            thread::Builder::new()
                .name("audit-outbox".into())
                .spawn(move || run_file_writer(file, &path, &shared, &rx, compact_bytes, spacing))
                .map_err(StoreError::backend)?
        };
        let delivery = tokio::spawn(run_delivery(
            log.clone(),
            Arc::clone(&shared),
            data_dir.to_owned(),
            tx.clone(),
            config.clone(),
            schema_ready,
        ));
        shared.appended.notify_one();
        Ok(Self {
            log,
            shared,
            writer: tx,
            writer_thread,
            delivery,
            config,
            _lock: lock,
        })
    }

    /// Events appended but not yet delivered to PostgreSQL.
    pub fn backlog(&self) -> u64 {
        let st = self.shared.state();
        st.durable_count - st.delivered_count
    }

    /// Whether the last delivery attempt failed (PostgreSQL down or
    /// refusing).
    pub fn is_failing(&self) -> bool {
        self.shared.state().failing
    }

    /// Waits until everything appended before this call is delivered, or
    /// `timeout` passes; true when delivered.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.state().durable_count;
        self.wait_delivered(target, timeout).await
    }

    /// The PostgreSQL log behind the outbox (for checkpoints, verification
    /// and a direct ping).
    pub fn postgres(&self) -> &PostgresAuditLog {
        &self.log
    }

    async fn wait_delivered(&self, target: u64, timeout: Duration) -> bool {
        let mut rx = self.shared.delivered.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&d| d >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Drop for OutboxAuditLog {
    fn drop(&mut self) {
        // The file keeps whatever is undelivered; the next open delivers it.
        self.delivery.abort();
    }
}

#[async_trait]
impl AuditLog for OutboxAuditLog {
    /// Returns once the event is synced to the local outbox.
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut line = serde_json::to_vec(event).map_err(StoreError::backend)?;
        line.push(b'\n');
        let (done, result) = oneshot::channel();
        self.writer
            .send(Cmd::Append { line, done })
            .map_err(|_| StoreError::unavailable(OutboxClosed))?;
        match result.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::unavailable(OutboxWriteFailed(e))),
            Err(_) => Err(StoreError::unavailable(OutboxClosed)),
        }
    }

    /// Reads PostgreSQL, after giving events appended before the query a
    /// moment ([`OutboxConfig::query_wait`]) to arrive there.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let (target, failing) = {
            let st = self.shared.state();
            (st.durable_count, st.failing)
        };
        if !failing {
            self.wait_delivered(target, self.config.query_wait).await;
        }
        self.log.query(query).await
    }

    /// The outbox accepts appends (PostgreSQL may be down: see
    /// [`OutboxAuditLog::backlog`]).
    async fn ping(&self) -> Result<(), StoreError> {
        if self.writer_thread.is_finished() {
            return Err(StoreError::unavailable(OutboxClosed));
        }
        Ok(())
    }
}

/// What an existing outbox file held.
#[derive(Debug)]
struct Recovered {
    len: u64,
    count: u64,
}

/// Locks the outbox, opens its file, and cuts a torn last line (an append
/// that crashed before its sync, so was never acknowledged).
fn open_files(dir: &Path) -> io::Result<(File, File, Recovered)> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .mode(PRIVATE)
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
        std::fs::TryLockError::Error(e) => e,
    })?;
    let path = dir.join(OUTBOX_FILE);
    let existed = path.exists();
    let file = OpenOptions::new()
        .mode(PRIVATE)
        .create(true)
        .append(true)
        .read(true)
        .open(&path)?;
    if !existed {
        File::open(dir)?.sync_all()?;
    }
    let mut reader = BufReader::new(File::open(&path)?);
    let (mut len, mut count) = (0_u64, 0_u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        len += u64::try_from(n).unwrap_or(u64::MAX);
        count += 1;
    }
    if file.metadata()?.len() != len {
        tracing::warn!(kept = len, "audit outbox ended in a torn line; cutting it");
        file.set_len(len)?;
        file.sync_all()?;
    }
    Ok((lock, file, Recovered { len, count }))
}

/// The writer thread: group commit (every append waiting is written, then
/// one sync answers them all; see [`OutboxConfig::busy_spacing`]) and
/// compaction.
fn run_file_writer(
    mut file: File,
    path: &Path,
    shared: &Shared,
    rx: &std_mpsc::Receiver<Cmd>,
    compact_bytes: u64,
    busy_spacing: Duration,
) {
    const MAX_GROUP: usize = 4096;
    let mut buf = Vec::new();
    // When the last group began, if it had company: a lone append (one
    // caller at a time) never waits.
    let mut busy_since: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        let mut appends = Vec::new();
        let mut compacts = Vec::new();
        let gather_until = busy_since.map(|at| at + busy_spacing);
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Cmd::Append { line, done } => appends.push((line, done)),
                Cmd::Compact { done } => compacts.push(done),
            }
            if appends.len() < MAX_GROUP {
                // Busy: let appends gather until the spacing is out; then
                // (or when idle) take only what is already waiting.
                next = match gather_until.and_then(|t| t.checked_duration_since(Instant::now())) {
                    Some(left) => rx.recv_timeout(left).ok(),
                    None => rx.try_recv().ok(),
                };
            }
        }
        busy_since = (appends.len() > 1).then(Instant::now);
        if !appends.is_empty() {
            buf.clear();
            for (line, _) in &appends {
                buf.extend_from_slice(line);
            }
            match file.write_all(&buf).and_then(|()| file.sync_data()) {
                Ok(()) => {
                    {
                        let mut st = shared.state();
                        st.durable_len += u64::try_from(buf.len()).unwrap_or(u64::MAX);
                        st.durable_count += u64::try_from(appends.len()).unwrap_or(u64::MAX);
                    }
                    shared.appended.notify_one();
                    for (_, done) in appends {
                        let _ = done.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit outbox write failed");
                    // Drop whatever part of the group reached the file.
                    let durable = shared.state().durable_len;
                    if let Err(e) = file.set_len(durable) {
                        tracing::error!(error = %e, "audit outbox could not cut a failed write");
                    }
                    let e = Arc::new(e);
                    for (_, done) in appends {
                        let _ = done.send(Err(Arc::clone(&e)));
                    }
                }
            }
        }
        for done in compacts {
            if let Err(e) = compact(&mut file, path, shared, compact_bytes, &|_| Ok(())) {
                tracing::warn!(error = %e, "audit outbox compaction failed; will retry");
            }
            let _ = done.send(());
        }
    }
}

/// Drops the delivered prefix: truncates an all-delivered file, or rewrites
/// the undelivered rest once the prefix is large (`worth_rewriting`). Runs on the writer thread
/// while the delivery task waits, so neither offset moves meanwhile.
/// The points of a compaction where a fault can be injected (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CompactStep {
    /// The undelivered rest is copied and synced into the temp file.
    Copied,
    /// The temp file has replaced the outbox.
    Renamed,
}

fn compact(
    file: &mut File,
    path: &Path,
    shared: &Shared,
    compact_bytes: u64,
    fault: &dyn Fn(CompactStep) -> io::Result<()>,
) -> io::Result<()> {
    let (delivered, durable) = {
        let st = shared.state();
        (st.delivered_offset, st.durable_len)
    };
    if delivered == 0 {
        return Ok(());
    }
    let forget_delivered = || {
        let mut st = shared.state();
        st.durable_len -= delivered;
        st.delivered_offset = 0;
    };
    if delivered == durable {
        file.set_len(0)?;
        // The offsets follow the file at once, whatever the sync says.
        forget_delivered();
        return file.sync_all();
    }
    if !worth_rewriting(delivered, durable, compact_bytes) {
        return Ok(());
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut src = File::open(path)?;
    src.seek(SeekFrom::Start(delivered))?;
    let mut dst = OpenOptions::new()
        .mode(PRIVATE)
        .create(true)
        .write(true)
        .truncate(true)
        .open(&tmp)?;
    io::copy(&mut src.take(durable - delivered), &mut dst)?;
    dst.sync_all()?;
    // The writer's next handle is opened before the rename, so that once
    // the rename is done nothing can fail before the handle and the offsets
    // are swapped together: a failure after the rename never leaves the
    // writer appending to the unlinked old file.
    let next = OpenOptions::new().append(true).read(true).open(&tmp)?;
    fault(CompactStep::Copied)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    *file = next;
    forget_delivered();
    fault(CompactStep::Renamed)?;
    // Makes the rename durable; until then a crash brings back the old
    // file, whose delivered prefix is redelivered and skipped by id.
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether to rewrite the file without its delivered prefix: once the
/// prefix is `compact_bytes` or more, and only while it is at least as
/// large as the undelivered rest, so a rewrite never copies more than it
/// frees. Copying the rest every `compact_bytes` whatever its size made
/// each compaction cost the whole backlog while PostgreSQL fell behind
/// (quadratic, and every append waited on it: BENCHMARKS.md, "The
/// outbox's compaction"); now the file stays under twice the backlog plus
/// `compact_bytes`, and each byte is copied a bounded number of times.
fn worth_rewriting(delivered: u64, durable: u64, compact_bytes: u64) -> bool {
    delivered >= compact_bytes && delivered >= durable.saturating_sub(delivered)
}

/// A batch read back from the file.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<AuditEvent>,
    /// Lines consumed, delivered or set aside.
    lines: u64,
    bytes: u64,
}

fn read_batch(dir: &Path, offset: u64, end: u64, max: usize) -> io::Result<Batch> {
    let mut file = File::open(dir.join(OUTBOX_FILE))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file.take(end - offset));
    let mut batch = Batch::default();
    let mut line = Vec::new();
    while batch.events.len() < max {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        batch.bytes += u64::try_from(n).unwrap_or(u64::MAX);
        batch.lines += 1;
        match serde_json::from_slice::<AuditEvent>(&line) {
            Ok(event) => batch.events.push(event),
            Err(e) => {
                tracing::error!(error = %e, file = REJECTED_FILE, "unreadable audit outbox line set aside");
                let mut rejected = OpenOptions::new()
                    .mode(PRIVATE)
                    .create(true)
                    .append(true)
                    .open(dir.join(REJECTED_FILE))?;
                rejected.write_all(&line)?;
                rejected.sync_data()?;
            }
        }
    }
    Ok(batch)
}

async fn run_delivery(
    log: PostgresAuditLog,
    shared: Arc<Shared>,
    dir: PathBuf,
    writer: std_mpsc::Sender<Cmd>,
    config: OutboxConfig,
    schema_ready: bool,
) {
    let mut backoff = config.min_backoff;
    if !schema_ready {
        while let Err(e) = prepare_schema(log.pool(), config.migrate).await {
            let pause = failed(&shared, &config, "schema", &e, &mut backoff);
            tokio::time::sleep(pause).await;
        }
    }

    loop {
        let (offset, end) = {
            let st = shared.state();
            (st.delivered_offset, st.durable_len)
        };
        if offset >= end {
            shared.appended.notified().await;
            continue;
        }
        let read = {
            let dir = dir.clone();
            let max = config.batch_size.max(1);
            tokio::task::spawn_blocking(move || read_batch(&dir, offset, end, max)).await
        };
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                let pause = failed(&shared, &config, "reading the outbox", &e, &mut backoff);
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(e) => {
                let pause = failed(&shared, &config, "reading the outbox", &e, &mut backoff);
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if let Err(e) = log.append_batch(&batch.events).await {
            let pause = failed(&shared, &config, "writing PostgreSQL", &e, &mut backoff);
            tokio::time::sleep(pause).await;
            continue;
        }
        backoff = config.min_backoff;
        let (compact_now, delivered) = {
            let mut st = shared.state();
            if st.failing {
                tracing::info!("audit delivery resumed");
            }
            st.failing = false;
            st.delivered_offset += batch.bytes;
            st.delivered_count += batch.lines;
            let compact_now = st.delivered_offset == st.durable_len
                || worth_rewriting(st.delivered_offset, st.durable_len, config.compact_bytes);
            (compact_now, st.delivered_count)
        };
        shared.delivered.send_replace(delivered);
        if compact_now {
            let (done, wait) = oneshot::channel();
            if writer.send(Cmd::Compact { done }).is_ok() {
                let _ = wait.await;
            }
        }
        if batch.events.len() < config.batch_size && !config.linger.is_zero() {
            tokio::time::sleep(config.linger).await;
        }
    }
}

/// Notes a failed attempt (a warning on the first of a run) and returns the
/// pause before the next, doubling `backoff` up to the configured cap.
fn failed(
    shared: &Shared,
    config: &OutboxConfig,
    what: &str,
    e: &dyn std::error::Error,
    backoff: &mut Duration,
) -> Duration {
    let first = !std::mem::replace(&mut shared.state().failing, true);
    if first {
        tracing::warn!(error = %e, "audit delivery failed ({what}); retrying with backoff");
    } else {
        tracing::debug!(error = %e, "audit delivery failed again ({what})");
    }
    let pause = *backoff;
    *backoff = (*backoff * 2).min(config.max_backoff);
    pause
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn outbox_with(dir: &Path, lines: &[&str]) -> (File, Shared) {
        let path = dir.join(OUTBOX_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .unwrap();
        for l in lines {
            file.write_all(l.as_bytes()).unwrap();
        }
        let len: usize = lines.iter().map(|l| l.len()).sum();
        let shared = Shared {
            state: Mutex::new(State {
                durable_len: len as u64,
                durable_count: lines.len() as u64,
                // The first line is delivered.
                delivered_offset: lines[0].len() as u64,
                delivered_count: 1,
                failing: false,
            }),
            appended: Notify::new(),
            delivered: watch::Sender::new(1),
        };
        (file, shared)
    }

    #[test]
    fn a_compaction_failing_after_its_rename_never_leaves_appends_in_an_unlinked_file() {
        for step in [CompactStep::Copied, CompactStep::Renamed] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(OUTBOX_FILE);
            let (mut file, shared) = outbox_with(dir.path(), &["delivered\n", "pending\n"]);
            let fault = |at: CompactStep| {
                if at == step {
                    Err(io::Error::other("injected fault"))
                } else {
                    Ok(())
                }
            };
            assert!(compact(&mut file, &path, &shared, 1, &fault).is_err());
            // What the writer appends next must be in the file the delivery
            // task reads, at the offsets the shared state names.
            file.write_all(b"appended\n").unwrap();
            file.sync_data().unwrap();
            let on_disk = std::fs::read_to_string(&path).unwrap();
            let st = shared.state();
            let offset = usize::try_from(st.delivered_offset).unwrap();
            assert_eq!(
                &on_disk[offset..],
                "pending\nappended\n",
                "fault at {step:?}: the writer and the file parted ways"
            );
            assert_eq!(
                st.durable_len + 9,
                on_disk.len() as u64,
                "fault at {step:?}"
            );
        }
    }

    #[test]
    fn a_compaction_drops_the_delivered_prefix_and_keeps_appending_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTBOX_FILE);
        let (mut file, shared) = outbox_with(dir.path(), &["delivered\n", "pending\n"]);
        compact(&mut file, &path, &shared, 1, &|_| Ok(())).unwrap();
        file.write_all(b"appended\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "pending\nappended\n"
        );
        let st = shared.state();
        assert_eq!((st.delivered_offset, st.durable_len), (0, 8));
    }

    #[test]
    fn a_compaction_waits_until_the_delivered_prefix_is_as_large_as_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTBOX_FILE);
        let lines = ["delivered\n", "pending-1\n", "pending-2\n"];
        let (mut file, shared) = outbox_with(dir.path(), &lines);
        // 10 bytes delivered, 20 pending: a rewrite would copy more than
        // it frees.
        compact(&mut file, &path, &shared, 1, &|_| Ok(())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), lines.concat());
        assert_eq!(shared.state().delivered_offset, 10);
        // Once the prefix has caught up with the rest, it goes.
        shared.state().delivered_offset = 20;
        compact(&mut file, &path, &shared, 1, &|_| Ok(())).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "pending-2\n");
        let st = shared.state();
        assert_eq!((st.delivered_offset, st.durable_len), (0, 10));
    }

    #[test]
    fn rewriting_never_copies_more_than_it_frees() {
        assert!(!worth_rewriting(4 << 20, 100 << 20, 4 << 20));
        assert!(worth_rewriting(50 << 20, 100 << 20, 4 << 20));
        assert!(
            !worth_rewriting(1 << 20, 2 << 20, 4 << 20),
            "below compact_bytes"
        );
    }
}
