//! [`AuditLog`] over the `audit_events` table: append-only, newest first,
//! keyset pagination on the insertion sequence.

use std::path::Path;

use async_trait::async_trait;
use session_core::audit::{AuditEvent, AuditQuery};
use session_core::outbox::OutboxSink;
use session_core::{AuditLog, StoreError};
use sqlx::{QueryBuilder, Sqlite};
use tokio::sync::oneshot;

use crate::codec::{audit_from_row, instant, json_text};
use crate::error::{Failure, classify};
use crate::{SqliteStore, writer};

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.audit.append(vec![Row::of(event)?]).await
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        // Only the filters asked for appear in the statement, so SQLite can
        // pick the matching index.
        let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
            "SELECT ",
            audit_columns!(),
            " FROM audit_events WHERE 1 = 1"
        ));
        if let Some(user_id) = &query.user_id {
            sql.push(" AND user_id = ").push_bind(user_id.as_str());
        }
        if let Some(session_id) = &query.session_id {
            sql.push(" AND session_id = ")
                .push_bind(session_id.as_str());
        }
        if let Some(kind) = query.kind {
            sql.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(since) = query.since {
            sql.push(" AND at >= ").push_bind(instant(since)?);
        }
        if let Some(before) = query.before {
            // An unknown cursor matches nothing: `seq < NULL` is never true.
            sql.push(" AND seq < (SELECT seq FROM audit_events WHERE id = ")
                .push_bind(before.to_string())
                .push(")");
        }
        sql.push(" ORDER BY seq DESC LIMIT ")
            .push_bind(i64::from(query.effective_limit()));
        let rows = sql.build().fetch_all(&self.pool).await.map_err(classify)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.ping_db().await
    }
}

/// An event's column values, converted before it joins a batch so that a
/// bad value fails its own append only.
#[derive(Debug)]
struct Row {
    id: String,
    at: i64,
    kind: &'static str,
    session_id: Option<String>,
    user_id: Option<String>,
    actor: &'static str,
    ip: Option<String>,
    user_agent: Option<String>,
    reason: Option<String>,
    details: String,
}

impl Row {
    fn of(e: &AuditEvent) -> Result<Self, StoreError> {
        Ok(Self {
            id: e.id.to_string(),
            at: instant(e.at)?,
            kind: e.kind.as_str(),
            session_id: e.session_id.clone(),
            user_id: e.user_id.clone(),
            actor: e.actor.as_str(),
            ip: e.ip.clone(),
            user_agent: e.user_agent.clone(),
            reason: e.reason.clone(),
            details: json_text(&e.details)?,
        })
    }
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The embedded log behind an outbox ([`session_core::outbox`]): a
/// delivered batch is one job of the audit writer, so one transaction.
#[async_trait]
impl OutboxSink for SqliteStore {
    fn name(&self) -> &'static str {
        "SQLite"
    }

    /// The schema was migrated when the store opened.
    async fn prepare(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn deliver(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let rows = events.iter().map(Row::of).collect::<Result<Vec<_>, _>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.audit.append(rows).await
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        AuditLog::query(self, query).await
    }
}

/// What the audit writer's errors call its batches.
const WHAT: &str = "audit";

/// Most jobs (an append, or a batch an outbox delivers) one transaction
/// commits.
const MAX_BATCH: usize = 256;

/// The insert each event of a batch runs, prepared once per connection.
const INSERT: &str = concat!(
    "INSERT INTO audit_events (",
    audit_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING"
);

/// Group commit for appends, on a writer thread of its own (`writer.rs`):
/// whatever appends are waiting go into one transaction (one fsync for the
/// batch instead of one per event), and each caller hears back once its
/// event is durable.
#[derive(Debug, Clone)]
pub(crate) struct Writer(writer::Writer<(Vec<Row>, Waiter)>);

impl Writer {
    /// Starts the writer on the database at `path`.
    pub(crate) fn start(path: &Path) -> Result<Self, StoreError> {
        writer::Writer::start(
            WHAT,
            path,
            &[INSERT],
            MAX_BATCH,
            writer::BUSY_SPACING,
            |conn, batch| {
                let result = commit(conn, &batch);
                for (_, waiter) in batch {
                    let _ = waiter.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(e.again()),
                    });
                }
            },
        )
        .map(Self)
    }

    /// Appends `rows` in one transaction (perhaps with other callers').
    async fn append(&self, rows: Vec<Row>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.0.send((rows, done)).await?;
        wait.await.map_err(|_| self.0.stopped())?
    }

    /// Stops the writer once the appends already sent are committed.
    pub(crate) async fn close(&self) {
        self.0.close().await;
    }
}

/// One transaction for the batch; if any insert fails, none is kept and
/// every caller gets the error (fail closed).
fn commit(conn: &mut rusqlite::Connection, batch: &[(Vec<Row>, Waiter)]) -> Result<(), Failure> {
    let fail = |e: rusqlite::Error| Failure::of_sqlite(WHAT, &e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(fail)?;
    {
        let mut insert = tx.prepare_cached(INSERT).map_err(fail)?;
        for r in batch.iter().flat_map(|(rows, _)| rows) {
            insert
                .execute(rusqlite::params![
                    r.id,
                    r.at,
                    r.kind,
                    r.session_id,
                    r.user_id,
                    r.actor,
                    r.ip,
                    r.user_agent,
                    r.reason,
                    r.details,
                ])
                .map_err(fail)?;
        }
    }
    // Dropping `tx` on an error above rolls the batch back.
    tx.commit().map_err(fail)
}

impl SqliteStore {
    /// Copies the audit events of the SQLite database at `old` (a
    /// `sessions.db` from before the audit log had its own file) into this
    /// store's log, in their original order, once: only while this log is
    /// still empty, in one transaction, so a crash leaves either nothing or
    /// everything copied. The old file keeps its copy (its triggers refuse
    /// deletion). Returns how many events were copied.
    pub async fn import_audit_once(&self, old: &Path) -> Result<u64, StoreError> {
        let old = old.to_str().ok_or_else(|| {
            StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a UTF-8 path", old.display()),
            ))
        })?;
        // ATTACH is per connection: use one taken out of the pool, so that
        // no pooled connection is left with the old file attached.
        let mut conn = self.pool.acquire().await.map_err(classify)?.detach();
        sqlx::query("ATTACH DATABASE ?1 AS old")
            .bind(old)
            .execute(&mut conn)
            .await
            .map_err(classify)?;
        let mut tx = sqlx::Connection::begin(&mut conn).await.map_err(classify)?;
        let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM main.audit_events")
            .fetch_one(&mut *tx)
            .await
            .map_err(classify)?;
        if ours > 0 {
            return Ok(0);
        }
        let copied = sqlx::query(concat!(
            "INSERT INTO main.audit_events (",
            audit_columns!(),
            ") SELECT ",
            audit_columns!(),
            " FROM old.audit_events ORDER BY seq ON CONFLICT (id) DO NOTHING"
        ))
        .execute(&mut *tx)
        .await
        .map_err(classify)?
        .rows_affected();
        tx.commit().await.map_err(classify)?;
        Ok(copied)
    }
}
