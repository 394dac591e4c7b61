//! [`OutboxAuditLog`]: appends land in a local, fsync'd file first; a
//! background task delivers them to PostgreSQL in order, at least once,
//! deduplicated by event id. An outage of PostgreSQL delays the audit log;
//! it never blocks an append and never loses one.
//!
//! The outbox itself (group commit, recovery, compaction, delivery) is
//! [`session_core::outbox`], which the embedded SQLite log uses too; this
//! module is PostgreSQL's side of it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::outbox::{Outbox, OutboxFiles, OutboxSink};
use session_core::{AuditEvent, AuditLog, AuditQuery, StoreError};

use crate::log::{MigrateMode, PostgresAuditLog, connect_options, pool_options, prepare_schema};

/// The outbox file, in the data dir: one JSON event per line.
pub const OUTBOX_FILE: &str = "audit-outbox.jsonl";
/// Lines that could not be read back (a damaged file), kept for a human.
pub const REJECTED_FILE: &str = "audit-outbox.rejected";
/// Held locked while an outbox is open: one process per outbox.
pub const LOCK_FILE: &str = "audit-outbox.lock";

/// The PostgreSQL outbox's files.
pub const FILES: OutboxFiles = OutboxFiles {
    events: OUTBOX_FILE,
    lock: LOCK_FILE,
    rejected: REJECTED_FILE,
};

/// How the PostgreSQL outbox behaves.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Batching, lingering, retries and compaction: the outbox's own
    /// settings.
    pub outbox: session_core::outbox::OutboxConfig,
    /// What to do about the schema when PostgreSQL is first reached.
    pub migrate: MigrateMode,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            outbox: session_core::outbox::OutboxConfig::default(),
            migrate: MigrateMode::Check,
        }
    }
}

/// PostgreSQL behind the outbox: the schema is checked (or applied) when
/// first reached, and a batch is one transaction of the hash chain.
#[derive(Debug)]
struct Sink {
    log: PostgresAuditLog,
    migrate: MigrateMode,
}

#[async_trait]
impl OutboxSink for Sink {
    fn name(&self) -> &'static str {
        "PostgreSQL"
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        prepare_schema(self.log.pool(), self.migrate).await
    }

    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.log.append_batch(events).await.map(|_| ())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.log.query(query).await
    }
}

/// The audit log the server uses with `SESSION_AUDIT=postgres://…`: a
/// durable local outbox in front of [`PostgresAuditLog`].
#[derive(Debug)]
pub struct OutboxAuditLog(Outbox<Sink>);

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
        let sink = Sink {
            log: PostgresAuditLog::from_pool(pool_options().connect_lazy_with(options)),
            migrate: config.migrate,
        };
        Outbox::open(data_dir, FILES, Arc::new(sink), config.outbox)
            .await
            .map(Self)
    }

    /// Events appended but not yet delivered to PostgreSQL.
    pub fn backlog(&self) -> u64 {
        self.0.backlog()
    }

    /// Whether the last delivery attempt failed (PostgreSQL down or
    /// refusing).
    pub fn is_failing(&self) -> bool {
        self.0.is_failing()
    }

    /// Waits until everything appended before this call is delivered, or
    /// `timeout` passes; true when delivered.
    pub async fn flush(&self, timeout: Duration) -> bool {
        self.0.flush(timeout).await
    }

    /// The PostgreSQL log behind the outbox (for checkpoints, verification
    /// and a direct ping).
    pub fn postgres(&self) -> &PostgresAuditLog {
        &self.0.sink().log
    }
}

#[async_trait]
impl AuditLog for OutboxAuditLog {
    /// Returns once the event is synced to the local outbox.
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.0.append(event).await
    }

    /// Reads PostgreSQL, after giving events appended before the query a
    /// moment ([`session_core::outbox::OutboxConfig::query_wait`]) to
    /// arrive there.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.0.query(query).await
    }

    /// The outbox accepts appends (PostgreSQL may be down: see
    /// [`OutboxAuditLog::backlog`]).
    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }
}
