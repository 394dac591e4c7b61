//! [`PostgresAuditLog`]: the audit log in PostgreSQL. Split by job:
//! [`schema`] (migrations, pool settings, the schema check), [`writer`]
//! (the batching writer task and the append transactions), [`verify`]
//! (checkpoints and the walk over the chain), [`rows`] (hand-written row
//! mapping and the event query).

use std::sync::Arc;

use async_trait::async_trait;
use session_core::{AuditEvent, AuditLog, AuditQuery, StoreError};
use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::chain::Hash;
use crate::error::classify;

mod rows;
mod schema;
mod verify;
mod writer;

pub use schema::{
    CHAIN_LOCK, MIGRATOR, MigrateMode, check_schema, connect_options, migrate, pool_options,
    prepare_schema,
};
pub use verify::{
    BrokenLink, ChainCheck, ChainReport, Checkpoint, CheckpointVerifier, LinkProblem,
    SignatureFault,
};

use rows::{query_events, to_hash};
use writer::{HeadHint, MAX_BATCH, Pending, WriterGone, append_batch, run_writer};

/// The audit log in PostgreSQL. Cheap to clone; clones share one pool and
/// one writer.
#[derive(Debug, Clone)]
pub struct PostgresAuditLog {
    pool: PgPool,
    writer: mpsc::Sender<Pending>,
    head: HeadHint,
}

impl PostgresAuditLog {
    /// Connects to `url`, applies or checks the schema, and starts the
    /// writer. Must run inside a Tokio runtime.
    pub async fn connect(url: &str, mode: MigrateMode) -> Result<Self, StoreError> {
        let pool = pool_options()
            .connect_with(connect_options(url)?)
            .await
            .map_err(classify)?;
        prepare_schema(&pool, mode).await?;
        Ok(Self::from_pool(pool))
    }

    /// Uses an existing pool, leaving the schema alone. Starts the writer,
    /// so it must be called inside a Tokio runtime.
    pub fn from_pool(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let head = HeadHint::default();
        tokio::spawn(run_writer(pool.clone(), Arc::clone(&head), rx));
        Self {
            pool,
            writer: tx,
            head,
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends events in one transaction, in order, skipping ids already
    /// stored (and repeats within `events`): a skipped event never extends
    /// the chain. Returns how many were new.
    pub async fn append_batch(&self, events: &[AuditEvent]) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(classify)?;
        append_batch(&mut conn, &self.head, events).await
    }

    /// The last event's `seq` and hash, if any.
    pub async fn head(&self) -> Result<Option<(i64, Hash)>, StoreError> {
        let row: Option<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        row.map(|(seq, hash)| Ok((seq, to_hash(hash)?))).transpose()
    }
}

#[async_trait]
impl AuditLog for PostgresAuditLog {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let (done, result) = oneshot::channel();
        let pending = Pending {
            event: event.clone(),
            done,
        };
        if self.writer.send(pending).await.is_err() {
            return Err(StoreError::unavailable(WriterGone));
        }
        result
            .await
            .unwrap_or_else(|_| Err(StoreError::unavailable(WriterGone)))
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        query_events(&self.pool, query).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(classify)
    }
}
