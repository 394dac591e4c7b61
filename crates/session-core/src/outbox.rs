//! A durable local outbox in front of an audit log.
//!
//! An append is answered once its event is written and synced to a local
//! file, one JSON event per line; appends that arrive together share one
//! write and one sync (group commit, on a thread of its own). A background
//! task then delivers the file to the log behind it (an [`OutboxSink`]: the
//! PostgreSQL log, or the embedded SQLite one) in order, in batches, at
//! least once: the sink skips an event whose id it holds already. So the
//! request pays for one appended line and a shared sync, not for the
//! sink's indexes and transactions; an outage of the sink delays the audit
//! log and never blocks or loses an append.
//!
//! The file is written ahead of itself: the writer keeps zeros past the
//! last event ([`PREALLOCATE`]) and writes each group over them, so a sync
//! flushes data only, not the file's size (BENCHMARKS.md, "An outbox
//! written over zeros"). A line is an event only if it ends in a newline
//! and holds no zero byte (JSON text never does); reopening keeps the
//! lines up to the first that is not, and cuts the rest.
//!
//! Queries go to the sink after giving the events appended before them a
//! moment ([`OutboxConfig::query_wait`]) to arrive there (read-your-writes).
//! One process holds an outbox at a time (a lock file beside it).
//!
//! This module reads the wall clock only to pace batches (group commit,
//! lingering, backoff); no decision about a session depends on it.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt as _, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc as std_mpsc};
use std::thread;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Notify, oneshot, watch};

use crate::audit::{AuditEvent, AuditQuery};
use crate::store::{AuditLog, StoreError};

/// The outbox's files hold user ids, IPs and user agents: owner only.
const PRIVATE: u32 = 0o600;

/// How far past the last event the writer keeps the file written with
/// zeros. A group written over them leaves the file's size alone, so its
/// `fdatasync` writes the data alone, not the inode as well: a third less
/// CPU and wall time per sync on ext4 here (BENCHMARKS.md, "An outbox
/// written over zeros"). About a hundred events' worth: the zeros are
/// written (and the size synced) once per that many events, in the same
/// write and sync as the group that needed them, and small enough that
/// this group's sync is not much slower than the others.
pub const PREALLOCATE: u64 = 64 << 10;

/// The log behind an outbox.
#[async_trait]
pub trait OutboxSink: std::fmt::Debug + Send + Sync + 'static {
    /// What the log is, for messages ("PostgreSQL", "SQLite").
    fn name(&self) -> &'static str;

    /// Makes the log ready to take events (checks or applies its schema).
    /// [`StoreError::Unavailable`] at open lets the outbox start anyway and
    /// retry; any other error stops the open.
    async fn prepare(&self) -> Result<(), StoreError>;

    /// Stores `events` in this order, all or none, skipping any whose id it
    /// holds already (a delivery retried after a crash).
    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), StoreError>;

    /// Answers a query from what was delivered.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
}

/// The names of an outbox's files in its directory, from one stem:
/// `<stem>.jsonl` (the events), `<stem>.lock` (held while open) and
/// `<stem>.rejected` (lines that could not be read back, kept for a human).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxFiles {
    /// The events, one JSON object per line.
    pub events: &'static str,
    /// Held locked while an outbox is open: one process per outbox.
    pub lock: &'static str,
    /// Lines that could not be read back (a damaged file).
    pub rejected: &'static str,
}

/// How the outbox behaves.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// At most this many events per delivery.
    pub batch_size: usize,
    /// After delivering a batch smaller than `batch_size`, how long to let
    /// events gather (durable in the outbox already) before the next: fewer,
    /// larger deliveries cost the sink less per event (BENCHMARKS.md, "Larger
    /// deliveries"). A query or a flush waiting for undelivered events cuts
    /// the pause short, so read-your-writes does not pay for it.
    pub linger: Duration,
    /// The first pause after a failed delivery; it doubles on each failure.
    pub min_backoff: Duration,
    /// The longest pause between delivery attempts.
    pub max_backoff: Duration,
    /// How long a query waits for events appended before it to be
    /// delivered (read-your-writes) before it answers from the sink as is.
    pub query_wait: Duration,
    /// Rewrite the file without its delivered prefix once that prefix is
    /// this large and at least as large as the undelivered rest (an empty
    /// backlog truncates the file at once).
    pub compact_bytes: u64,
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
            linger: Duration::from_millis(50),
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            query_wait: Duration::from_secs(2),
            compact_bytes: 4 << 20,
            busy_spacing: Duration::from_millis(1),
        }
    }
}

/// An audit log whose appends are durable in a local file first and reach
/// the sink `S` behind it shortly after.
#[derive(Debug)]
pub struct Outbox<S> {
    sink: Arc<S>,
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
    /// Cuts the delivery task's linger short: someone waits for events
    /// (`State::wanted`).
    hurry: Notify,
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
    /// The highest `delivered_count` a query or flush waits for: while it
    /// is ahead, the delivery does not linger.
    wanted: u64,
}

impl Shared {
    fn new(state: State) -> Self {
        Self {
            delivered: watch::Sender::new(state.delivered_count),
            state: Mutex::new(state),
            appended: Notify::new(),
            hurry: Notify::new(),
        }
    }

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
pub struct OutboxLocked(pub PathBuf);

/// Whether `e` is an open that failed because another process holds the
/// outbox.
pub fn is_locked(e: &StoreError) -> bool {
    matches!(e, StoreError::Backend(source) if source.is::<OutboxLocked>())
}

impl<S: OutboxSink> Outbox<S> {
    /// Opens (or creates) the outbox `files` in `dir` and starts delivering
    /// to `sink`. The sink need not be up: it is prepared when first
    /// reached. A sink that answers and refuses ([`OutboxSink::prepare`]
    /// failing other than unavailable) fails here. Must run inside a Tokio
    /// runtime.
    pub async fn open(
        dir: &Path,
        files: OutboxFiles,
        sink: Arc<S>,
        config: OutboxConfig,
    ) -> Result<Self, StoreError> {
        let owned = dir.to_owned();
        let (lock, file, recovered) =
            tokio::task::spawn_blocking(move || open_files(&owned, files))
                .await
                .map_err(StoreError::backend)?
                .map_err(|e| match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        StoreError::backend(OutboxLocked(dir.join(files.events)))
                    }
                    _ => StoreError::unavailable(e),
                })?;
        if recovered.count > 0 {
            tracing::info!(
                events = recovered.count,
                sink = sink.name(),
                "audit outbox holds events to deliver"
            );
        }

        let sink_ready = match sink.prepare().await {
            Ok(()) => true,
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, sink = sink.name(), "audit log unreachable; events wait in the outbox");
                false
            }
            Err(e) => return Err(e),
        };

        let shared = Arc::new(Shared::new(State {
            durable_len: recovered.len,
            durable_count: recovered.count,
            ..State::default()
        }));
        let path = dir.join(files.events);
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
            Arc::clone(&sink),
            Arc::clone(&shared),
            Files::new(dir, files),
            tx.clone(),
            config.clone(),
            sink_ready,
        ));
        shared.appended.notify_one();
        Ok(Self {
            sink,
            shared,
            writer: tx,
            writer_thread,
            delivery,
            config,
            _lock: lock,
        })
    }

    /// Events appended but not yet delivered to the sink.
    pub fn backlog(&self) -> u64 {
        let st = self.shared.state();
        st.durable_count - st.delivered_count
    }

    /// Whether the last delivery attempt failed (the sink down or
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

    /// The log behind the outbox.
    pub fn sink(&self) -> &Arc<S> {
        &self.sink
    }

    async fn wait_delivered(&self, target: u64, timeout: Duration) -> bool {
        {
            let mut st = self.shared.state();
            st.wanted = st.wanted.max(target);
        }
        self.shared.hurry.notify_waiters();
        let mut rx = self.shared.delivered.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&d| d >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl<S> Drop for Outbox<S> {
    fn drop(&mut self) {
        // The file keeps whatever is undelivered; the next open delivers it.
        self.delivery.abort();
    }
}

#[async_trait]
impl<S: OutboxSink> AuditLog for Outbox<S> {
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

    /// Reads the sink, after giving events appended before the query a
    /// moment ([`OutboxConfig::query_wait`]) to arrive there.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        let (target, failing) = {
            let st = self.shared.state();
            (st.durable_count, st.failing)
        };
        if !failing {
            self.wait_delivered(target, self.config.query_wait).await;
        }
        self.sink.query(query).await
    }

    /// The outbox accepts appends (the sink may be down: see
    /// [`Outbox::backlog`]).
    async fn ping(&self) -> Result<(), StoreError> {
        if self.writer_thread.is_finished() {
            return Err(StoreError::unavailable(OutboxClosed));
        }
        Ok(())
    }
}

/// The paths of an open outbox's files.
#[derive(Debug, Clone)]
struct Files {
    events: PathBuf,
    rejected: PathBuf,
}

impl Files {
    fn new(dir: &Path, files: OutboxFiles) -> Self {
        Self {
            events: dir.join(files.events),
            rejected: dir.join(files.rejected),
        }
    }
}

/// What an existing outbox file held.
#[derive(Debug)]
struct Recovered {
    len: u64,
    count: u64,
}

/// Locks the outbox, opens its file, and keeps its events: the lines up to
/// the first that does not end in a newline or holds a zero byte. What
/// follows is cut: zeros written ahead of the events (see [`PREALLOCATE`]),
/// or a group torn by a crash before its sync, so never acknowledged.
fn open_files(dir: &Path, files: OutboxFiles) -> io::Result<(File, File, Recovered)> {
    // A directory it creates is the owner's alone, as the server's are.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let lock = OpenOptions::new()
        .mode(PRIVATE)
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(files.lock))?;
    lock.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => io::Error::from(io::ErrorKind::WouldBlock),
        std::fs::TryLockError::Error(e) => e,
    })?;
    let path = dir.join(files.events);
    let existed = path.exists();
    // Not `append`: the writer writes at offsets, over zeros it wrote
    // ahead, and Linux would put every `pwrite` of an `O_APPEND` handle at
    // the end of the file instead.
    let file = OpenOptions::new()
        .mode(PRIVATE)
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .open(&path)?;
    if !existed {
        File::open(dir)?.sync_all()?;
    }
    let mut reader = BufReader::new(File::open(&path)?);
    let (mut len, mut count) = (0_u64, 0_u64);
    let mut line = Vec::new();
    let torn = loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break false;
        }
        if line.last() != Some(&b'\n') || line.contains(&0) {
            // The zeros written ahead, or a torn group: anything but zeros
            // from here on was never acknowledged.
            let mut rest = Vec::new();
            reader.read_to_end(&mut rest)?;
            break line.iter().chain(&rest).any(|&b| b != 0);
        }
        len += u64::try_from(n).unwrap_or(u64::MAX);
        count += 1;
    };
    if file.metadata()?.len() != len {
        if torn {
            tracing::warn!(kept = len, "audit outbox ended in a torn write; cutting it");
        }
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
    // How far the file is written (events, then zeros): its size.
    let mut allocated = file.metadata().map_or(0, |m| m.len());
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
            let at = shared.state().durable_len;
            let written = u64::try_from(buf.len()).unwrap_or(u64::MAX);
            let end = at + written;
            // Past the zeros: write the next stretch of them in the same
            // write and sync as the group. Always a whole stretch beyond the
            // group, so its last line is followed by a zero.
            let grown = (end > allocated).then(|| end + PREALLOCATE);
            if let Some(grown) = grown {
                buf.resize(usize::try_from(grown - at).unwrap_or(usize::MAX), 0);
            }
            match file.write_all_at(&buf, at).and_then(|()| file.sync_data()) {
                Ok(()) => {
                    if let Some(grown) = grown {
                        allocated = grown;
                    }
                    {
                        let mut st = shared.state();
                        st.durable_len += written;
                        st.durable_count += u64::try_from(appends.len()).unwrap_or(u64::MAX);
                    }
                    shared.appended.notify_one();
                    for (_, done) in appends {
                        let _ = done.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit outbox write failed");
                    // Drop whatever part of the group reached the file. Even
                    // if that fails, the next group is written with zeros
                    // after it, so a reopening stops before what is left of
                    // this one.
                    let durable = shared.state().durable_len;
                    if let Err(e) = file.set_len(durable) {
                        tracing::error!(error = %e, "audit outbox could not cut a failed write");
                    }
                    allocated = durable;
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
            // A compaction leaves the events alone in the file (or none):
            // the next group writes zeros ahead again.
            allocated = file.metadata().map_or(0, |m| m.len());
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
    let next = OpenOptions::new().write(true).read(true).open(&tmp)?;
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

fn read_batch(files: &Files, offset: u64, end: u64, max: usize) -> io::Result<Batch> {
    let mut file = File::open(&files.events)?;
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
                tracing::error!(error = %e, file = %files.rejected.display(), "unreadable audit outbox line set aside");
                let mut rejected = OpenOptions::new()
                    .mode(PRIVATE)
                    .create(true)
                    .append(true)
                    .open(&files.rejected)?;
                rejected.write_all(&line)?;
                rejected.sync_data()?;
            }
        }
    }
    Ok(batch)
}

async fn run_delivery<S: OutboxSink>(
    sink: Arc<S>,
    shared: Arc<Shared>,
    files: Files,
    writer: std_mpsc::Sender<Cmd>,
    config: OutboxConfig,
    sink_ready: bool,
) {
    let mut backoff = config.min_backoff;
    let name = sink.name();
    if !sink_ready {
        while let Err(e) = sink.prepare().await {
            let pause = failed(&shared, &config, name, "preparing", &e, &mut backoff);
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
            let files = files.clone();
            let max = config.batch_size.max(1);
            tokio::task::spawn_blocking(move || read_batch(&files, offset, end, max))
                .await
                .unwrap_or_else(|joined| Err(io::Error::other(joined)))
        };
        let batch = match read {
            Ok(batch) => batch,
            Err(e) => {
                let pause = failed(
                    &shared,
                    &config,
                    name,
                    "reading the outbox",
                    &e,
                    &mut backoff,
                );
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if let Err(e) = sink.deliver(&batch.events).await {
            let pause = failed(&shared, &config, name, "delivering", &e, &mut backoff);
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
            linger(&shared, config.linger).await;
        }
    }
}

/// Lets events gather for `linger`, unless (or until) someone waits for
/// undelivered ones.
async fn linger(shared: &Shared, linger: Duration) {
    let hurry = shared.hurry.notified();
    tokio::pin!(hurry);
    // Registered before the check, so a waiter arriving after it still
    // wakes this pause.
    hurry.as_mut().enable();
    let wanted = {
        let st = shared.state();
        st.wanted > st.delivered_count
    };
    if wanted {
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(linger) => {}
        () = hurry => {}
    }
}

/// Notes a failed attempt (a warning on the first of a run) and returns the
/// pause before the next, doubling `backoff` up to the configured cap.
fn failed(
    shared: &Shared,
    config: &OutboxConfig,
    sink: &str,
    what: &str,
    e: &dyn std::error::Error,
    backoff: &mut Duration,
) -> Duration {
    let first = !std::mem::replace(&mut shared.state().failing, true);
    if first {
        tracing::warn!(error = %e, sink, "audit delivery failed ({what}); retrying with backoff");
    } else {
        tracing::debug!(error = %e, sink, "audit delivery failed again ({what})");
    }
    let pause = *backoff;
    *backoff = (*backoff * 2).min(config.max_backoff);
    pause
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use uuid::Uuid;

    use super::*;

    fn outbox_with(dir: &Path, lines: &[&str]) -> (File, Shared) {
        let path = dir.join("audit-outbox.jsonl");
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
        let shared = Shared::new(State {
            durable_len: len as u64,
            durable_count: lines.len() as u64,
            // The first line is delivered.
            delivered_offset: lines[0].len() as u64,
            delivered_count: 1,
            failing: false,
            wanted: 0,
        });
        (file, shared)
    }

    #[test]
    fn a_compaction_failing_after_its_rename_never_leaves_appends_in_an_unlinked_file() {
        for step in [CompactStep::Copied, CompactStep::Renamed] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit-outbox.jsonl");
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
            let at = shared.state().durable_len;
            file.write_all_at(b"appended\n", at).unwrap();
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
        let path = dir.path().join("audit-outbox.jsonl");
        let (mut file, shared) = outbox_with(dir.path(), &["delivered\n", "pending\n"]);
        compact(&mut file, &path, &shared, 1, &|_| Ok(())).unwrap();
        let at = shared.state().durable_len;
        file.write_all_at(b"appended\n", at).unwrap();
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
        let path = dir.path().join("audit-outbox.jsonl");
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

    const FILES: OutboxFiles = OutboxFiles {
        events: "audit-outbox.jsonl",
        lock: "audit-outbox.lock",
        rejected: "audit-outbox.rejected",
    };

    /// Runs the writer on the outbox in `dir` for `groups`, one group after
    /// the other (each answered before the next is sent).
    fn write_groups(dir: &Path, groups: &[&[&str]]) -> Arc<Shared> {
        let (_lock, file, recovered) = open_files(dir, FILES).unwrap();
        let shared = Arc::new(Shared::new(State {
            durable_len: recovered.len,
            durable_count: recovered.count,
            ..State::default()
        }));
        let (tx, rx) = std_mpsc::channel();
        let writer = {
            let (shared, path) = (Arc::clone(&shared), dir.join(FILES.events));
            thread::spawn(move || {
                run_file_writer(file, &path, &shared, &rx, 1 << 20, Duration::ZERO)
            })
        };
        for group in groups {
            let answers: Vec<_> = group
                .iter()
                .map(|line| {
                    let (done, answer) = oneshot::channel();
                    let line = line.as_bytes().to_vec();
                    tx.send(Cmd::Append { line, done }).unwrap();
                    answer
                })
                .collect();
            for answer in answers {
                answer.blocking_recv().unwrap().unwrap();
            }
        }
        drop(tx);
        writer.join().unwrap();
        shared
    }

    #[test]
    fn appends_are_written_over_zeros_ahead_and_reopening_keeps_exactly_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILES.events);
        // Two groups, the second written while the first's zeros lie
        // ahead: it must land right after the first, not past the zeros.
        let shared = write_groups(
            dir.path(),
            &[&["{\"a\":1}\n", "{\"b\":2}\n"], &["{\"c\":3}\n"]],
        );
        let events = "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n";
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(&on_disk[..events.len()], events.as_bytes());
        // The first group wrote the zeros ahead of it; the second, over
        // them, left the size alone.
        assert_eq!(on_disk.len() as u64, 16 + PREALLOCATE);
        assert!(on_disk[events.len()..].iter().all(|&b| b == 0));
        assert_eq!(shared.state().durable_len, events.len() as u64);

        // Reopening keeps the three events and cuts the zeros; the next
        // group follows them.
        let (_, _, recovered) = open_files(dir.path(), FILES).unwrap();
        assert_eq!((recovered.len, recovered.count), (events.len() as u64, 3));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), events);
        write_groups(dir.path(), &[&["{\"d\":4}\n"]]);
        let (_, _, recovered) = open_files(dir.path(), FILES).unwrap();
        assert_eq!(recovered.count, 4);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{events}{{\"d\":4}}\n")
        );
    }

    #[test]
    fn reopening_cuts_at_the_first_line_that_is_not_a_whole_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILES.events);
        // A crash mid-group can leave any of its pages on disk: zeros, then
        // a later part of the group that was never acknowledged.
        let mut torn = b"{\"a\":1}\n{\"b\":2}\n{\"c\"".to_vec();
        torn.extend_from_slice(&[0; 100]);
        torn.extend_from_slice(b":3}\n{\"d\":4}\n");
        torn.extend_from_slice(&[0; 100]);
        for (content, kept) in [
            (torn.clone(), "{\"a\":1}\n{\"b\":2}\n"),
            (b"{\"a\":1}\n{\"b\"".to_vec(), "{\"a\":1}\n"),
            (
                [b"{\"a\":1}\n".as_slice(), &[0; 4096]].concat(),
                "{\"a\":1}\n",
            ),
            ([&[0_u8; 10][..], b"{\"a\":1}\n"].concat(), ""),
        ] {
            std::fs::write(&path, &content).unwrap();
            let (lock, _, recovered) = open_files(dir.path(), FILES).unwrap();
            drop(lock);
            assert_eq!(
                (recovered.len, recovered.count),
                (kept.len() as u64, kept.matches('\n').count() as u64)
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
        }
    }

    #[test]
    fn an_append_the_file_refuses_is_answered_with_its_error_and_never_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit-outbox.jsonl");
        std::fs::write(&path, b"").unwrap();
        // A handle that cannot write, as a dead volume would answer.
        let read_only = File::open(&path).unwrap();
        let shared = Arc::new(Shared::new(State::default()));
        let (tx, rx) = std_mpsc::channel();
        let writer = {
            let (shared, path) = (Arc::clone(&shared), path.clone());
            thread::spawn(move || {
                run_file_writer(read_only, &path, &shared, &rx, 1 << 20, Duration::ZERO);
            })
        };
        let (done, mut answer) = oneshot::channel();
        tx.send(Cmd::Append {
            line: b"{}\n".to_vec(),
            done,
        })
        .unwrap();
        drop(tx);
        writer.join().unwrap();
        assert!(matches!(answer.try_recv(), Ok(Err(_))), "fail closed");
        let st = shared.state();
        assert_eq!((st.durable_len, st.durable_count), (0, 0));
    }

    /// A sink in memory that refuses deliveries while `down` is set.
    #[derive(Debug, Default)]
    struct Flaky {
        down: std::sync::atomic::AtomicBool,
        events: Mutex<Vec<AuditEvent>>,
    }

    #[async_trait]
    impl OutboxSink for Flaky {
        fn name(&self) -> &'static str {
            "memory"
        }

        async fn prepare(&self) -> Result<(), StoreError> {
            Ok(())
        }

        async fn deliver(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::unavailable(io::Error::other("down")));
            }
            let mut held = self.events.lock().unwrap();
            for e in events {
                if !held.iter().any(|h| h.id == e.id) {
                    held.push(e.clone());
                }
            }
            Ok(())
        }

        async fn query(&self, _: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
            Ok(self.events.lock().unwrap().iter().rev().cloned().collect())
        }
    }

    #[tokio::test]
    async fn a_sink_that_is_down_delays_the_log_and_loses_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // A data dir that does not exist yet is created private.
        let dir = tmp.path().join("data");
        let files = OutboxFiles {
            events: "o.jsonl",
            lock: "o.lock",
            rejected: "o.rejected",
        };
        let sink = Arc::new(Flaky::default());
        sink.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let config = OutboxConfig {
            min_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
            query_wait: Duration::from_millis(50),
            ..OutboxConfig::default()
        };
        let outbox = Outbox::open(&dir, files, Arc::clone(&sink), config)
            .await
            .unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let appended: Vec<AuditEvent> = (0..20)
            .map(|n| {
                crate::audit::AuditEvent::new(
                    crate::audit::AuditKind::LoginFailed,
                    crate::audit::Actor::User,
                    at + time::Duration::milliseconds(n),
                )
            })
            .collect();
        for e in &appended {
            outbox.append(e).await.unwrap();
        }
        assert!(!outbox.flush(Duration::from_millis(100)).await);
        assert!(outbox.is_failing());
        assert_eq!(outbox.backlog(), 20);
        assert!(
            outbox
                .query(&AuditQuery::default())
                .await
                .unwrap()
                .is_empty()
        );

        sink.down.store(false, std::sync::atomic::Ordering::SeqCst);
        assert!(outbox.flush(Duration::from_secs(10)).await);
        assert_eq!(outbox.backlog(), 0);
        let held: Vec<Uuid> = sink.events.lock().unwrap().iter().map(|e| e.id).collect();
        let ids: Vec<Uuid> = appended.iter().map(|e| e.id).collect();
        assert_eq!(held, ids, "every event, once, in order");
    }

    #[tokio::test]
    async fn a_query_or_flush_cuts_the_lingering_short_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let files = OutboxFiles {
            events: "o.jsonl",
            lock: "o.lock",
            rejected: "o.rejected",
        };
        let sink = Arc::new(Flaky::default());
        // After each delivery the task would wait an hour for company.
        let config = OutboxConfig {
            linger: Duration::from_secs(3600),
            query_wait: Duration::from_secs(10),
            ..OutboxConfig::default()
        };
        let outbox = Outbox::open(dir.path(), files, Arc::clone(&sink), config)
            .await
            .unwrap();
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let event = |n| {
            crate::audit::AuditEvent::new(
                crate::audit::AuditKind::LoginFailed,
                crate::audit::Actor::User,
                at + time::Duration::milliseconds(n),
            )
        };
        outbox.append(&event(0)).await.unwrap();
        assert!(outbox.flush(Duration::from_secs(10)).await);
        // The delivery now lingers; an append alone does not end that.
        outbox.append(&event(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(outbox.backlog(), 1, "lingering, as configured");
        // A query waiting for it does, well inside its own wait.
        let started = Instant::now();
        let seen = outbox.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(seen.len(), 2, "read-your-writes");
        assert!(started.elapsed() < Duration::from_secs(5));
        // And so does a flush.
        outbox.append(&event(2)).await.unwrap();
        assert!(outbox.flush(Duration::from_secs(5)).await);
        assert_eq!(sink.events.lock().unwrap().len(), 3);
    }
}
