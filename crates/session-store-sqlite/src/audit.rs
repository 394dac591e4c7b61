//! [`AuditLog`] over the `audit_events` table: append-only, newest first,
//! keyset pagination on the insertion sequence.

use std::path::Path;

use async_trait::async_trait;
use session_core::audit::{AuditEvent, AuditQuery};
use session_core::{AuditLog, StoreError};
use sqlx::{QueryBuilder, Sqlite};

use tokio::sync::{mpsc, oneshot};

use crate::SqliteStore;
use crate::codec::{audit_from_row, instant, json_text};
use crate::error::{Failure, classify};

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.audit.append(Row::of(event)?).await
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

/// What the audit writer's errors call its batches.
const WHAT: &str = "audit";

/// Most events one transaction commits.
const MAX_BATCH: usize = 256;

/// Group commit for appends: one task drains whatever appends are waiting
/// into one transaction — one fsync for the batch instead of one per
/// event — and answers each caller once its event is durable.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<(Row, Waiter)>,
}

impl Writer {
    /// Starts the writer task on the current runtime. It ends when the
    /// store (and so the sender) is dropped.
    pub(crate) fn start(pool: sqlx::SqlitePool) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Row, Waiter)>(4 * MAX_BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let result = commit(&pool, &batch).await;
                for (_, waiter) in batch.drain(..) {
                    let _ = waiter.send(match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(e.again()),
                    });
                }
            }
        });
        Self { tx }
    }

    async fn append(&self, row: Row) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send((row, done))
            .await
            .map_err(|_| Failure::stopped(WHAT).again())?;
        wait.await.map_err(|_| Failure::stopped(WHAT).again())?
    }
}

async fn commit(pool: &sqlx::SqlitePool, batch: &[(Row, Waiter)]) -> Result<(), Failure> {
    let fail = |e: sqlx::Error| Failure::of(WHAT, e);
    // One multi-row statement: atomic by itself, so a batch costs one trip
    // to sqlx's worker thread and one commit (one fsync), not one trip per
    // event plus BEGIN and COMMIT.
    let mut sql: QueryBuilder<Sqlite> = QueryBuilder::new(concat!(
        "INSERT INTO audit_events (",
        audit_columns!(),
        ") "
    ));
    sql.push_values(batch, |mut values, (r, _)| {
        values
            .push_bind(r.id.as_str())
            .push_bind(r.at)
            .push_bind(r.kind)
            .push_bind(r.session_id.as_deref())
            .push_bind(r.user_id.as_deref())
            .push_bind(r.actor)
            .push_bind(r.ip.as_deref())
            .push_bind(r.user_agent.as_deref())
            .push_bind(r.reason.as_deref())
            .push_bind(r.details.as_str());
    });
    sql.push(" ON CONFLICT (id) DO NOTHING");
    sql.build().execute(pool).await.map_err(fail)?;
    Ok(())
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
