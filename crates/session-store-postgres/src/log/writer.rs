//! The writer: one task that takes waiting appends in batches and writes
//! each batch in one transaction, extending the hash chain.

use std::collections::HashSet;
use std::sync::{Arc, PoisonError};

use session_core::{AuditEvent, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Postgres};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::rows::to_hash;
use super::schema::CHAIN_LOCK;
use crate::chain::{self, GENESIS, Hash};
use crate::error::{self, classify};

/// The most events the writer puts in one transaction.
pub(super) const MAX_BATCH: usize = 1000;
/// The chain head this process last saw: a guess that saves a round trip
/// when right and costs one retry when another writer moved the head.
pub(super) type HeadHint = Arc<std::sync::Mutex<Option<Option<Hash>>>>;

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) event: AuditEvent,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}
/// The writer task stopped (its runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the audit writer has stopped")]
pub(super) struct WriterGone;

/// Takes whatever appends are waiting (up to [`MAX_BATCH`]), writes them in
/// one transaction on a connection it keeps, and answers each.
pub(super) async fn run_writer(pool: PgPool, head: HeadHint, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut conn: Option<PoolConnection<Postgres>> = None;
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (events, waiters): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|p| (p.event, p.done)).unzip();
        let mut result = write_on(&pool, &mut conn, &head, &events).await;
        if matches!(result, Err(StoreError::Unavailable(_))) {
            // The kept connection may have died with a server restart: once
            // more on a fresh one. Safe even if the first try committed, as
            // stored ids are skipped.
            result = write_on(&pool, &mut conn, &head, &events).await;
        }
        match result {
            Ok(_) => {
                for w in waiters {
                    let _ = w.send(Ok(()));
                }
            }
            Err(e) => {
                let shared = Arc::new(e);
                for w in waiters {
                    let _ = w.send(Err(error::share(&shared)));
                }
            }
        }
    }
}

/// Appends on the kept connection (acquiring one if needed); drops it when
/// it fails for want of the server.
async fn write_on(
    pool: &PgPool,
    conn: &mut Option<PoolConnection<Postgres>>,
    head: &HeadHint,
    events: &[AuditEvent],
) -> Result<u64, StoreError> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(pool.acquire().await.map_err(classify)?),
    };
    let result = append_batch(c, head, events).await;
    if matches!(result, Err(StoreError::Unavailable(_)))
        && let Some(c) = conn.take()
    {
        drop(c.detach());
    }
    result
}

/// Optimistic attempts through `audit_append` before falling back to an
/// explicit transaction that holds the chain lock throughout.
const OPTIMISTIC_ATTEMPTS: usize = 3;

pub(super) async fn append_batch(
    conn: &mut PgConnection,
    hint: &HeadHint,
    events: &[AuditEvent],
) -> Result<u64, StoreError> {
    let mut seen = HashSet::with_capacity(events.len());
    let mut events: Vec<AuditEvent> = events
        .iter()
        .filter(|e| seen.insert(e.id))
        .map(chain::normalize)
        .collect();
    let guess = *hint.lock().unwrap_or_else(PoisonError::into_inner);
    let mut expected = match guess {
        Some(head) => head,
        None => sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)?
        .map(to_hash)
        .transpose()?,
    };
    for _ in 0..OPTIMISTIC_ATTEMPTS {
        if events.is_empty() {
            return Ok(0);
        }
        let cols = Columns::chained(expected.unwrap_or(GENESIS), &events);
        let (appended, head, stored): (i64, Option<Vec<u8>>, Vec<Uuid>) = sqlx::query_as(
            "SELECT appended, head, duplicates FROM audit_append(\
             $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(expected.as_ref().map(|h| h.as_slice()))
        .bind(cols.id)
        .bind(cols.at)
        .bind(cols.kind)
        .bind(cols.session_id)
        .bind(cols.user_id)
        .bind(cols.actor)
        .bind(cols.ip)
        .bind(cols.user_agent)
        .bind(cols.reason)
        .bind(cols.details)
        .bind(cols.prev_hash)
        .bind(cols.hash)
        .fetch_one(&mut *conn)
        .await
        .map_err(classify)?;
        let head = head.map(to_hash).transpose()?;
        *hint.lock().unwrap_or_else(PoisonError::into_inner) = Some(head);
        if appended > 0 {
            return u64::try_from(appended).map_err(StoreError::backend);
        }
        let stored: HashSet<Uuid> = stored.into_iter().collect();
        events.retain(|e| !stored.contains(&e.id));
        expected = head;
    }
    let result = append_locked(conn, &events).await;
    *hint.lock().unwrap_or_else(PoisonError::into_inner) = None;
    result
}

/// The fallback: one transaction that takes the chain lock, reads the head
/// and the stored ids, and inserts what is new.
async fn append_locked(conn: &mut PgConnection, events: &[AuditEvent]) -> Result<u64, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let mut tx = conn.begin().await.map_err(classify)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(classify)?;
    // A statement of its own, after the lock: its snapshot sees every
    // append committed by the previous holder.
    let (head, existing): (Option<Vec<u8>>, Vec<Uuid>) = sqlx::query_as(
        "SELECT (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1), \
                ARRAY(SELECT id FROM audit_events WHERE id = ANY($1))",
    )
    .bind(&ids)
    .fetch_one(&mut *tx)
    .await
    .map_err(classify)?;
    let existing: HashSet<Uuid> = existing.into_iter().collect();
    let fresh: Vec<AuditEvent> = events
        .iter()
        .filter(|e| !existing.contains(&e.id))
        .cloned()
        .collect();
    if fresh.is_empty() {
        tx.rollback().await.map_err(classify)?;
        return Ok(0);
    }
    let prev = head.map(to_hash).transpose()?.unwrap_or(GENESIS);
    let n = fresh.len();
    let cols = Columns::chained(prev, &fresh);
    let inserted = sqlx::query(
        "INSERT INTO audit_events \
           (id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details, prev_hash, hash) \
         SELECT id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details, prev_hash, hash \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::bytea[], $12::bytea[]) \
              WITH ORDINALITY AS t(id, at, kind, session_id, user_id, actor, ip, user_agent, reason, \
                                   details, prev_hash, hash, ord) \
         ORDER BY ord",
    )
    .bind(cols.id)
    .bind(cols.at)
    .bind(cols.kind)
    .bind(cols.session_id)
    .bind(cols.user_id)
    .bind(cols.actor)
    .bind(cols.ip)
    .bind(cols.user_agent)
    .bind(cols.reason)
    .bind(cols.details)
    .bind(cols.prev_hash)
    .bind(cols.hash)
    .execute(&mut *tx)
    .await
    .map_err(classify)?
    .rows_affected();
    if usize::try_from(inserted).ok() != Some(n) {
        return Err(StoreError::backend(format!(
            "audit insert wrote {inserted} of {n} rows; rolled back"
        )));
    }
    tx.commit().await.map_err(classify)?;
    Ok(inserted)
}

/// A batch in column form, for `UNNEST`.
#[derive(Default)]
struct Columns {
    id: Vec<Uuid>,
    at: Vec<OffsetDateTime>,
    kind: Vec<&'static str>,
    session_id: Vec<Option<String>>,
    user_id: Vec<Option<String>>,
    actor: Vec<&'static str>,
    ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    details: Vec<serde_json::Value>,
    prev_hash: Vec<Vec<u8>>,
    hash: Vec<Vec<u8>>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Self {
            id: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            session_id: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            actor: Vec::with_capacity(n),
            ip: Vec::with_capacity(n),
            user_agent: Vec::with_capacity(n),
            reason: Vec::with_capacity(n),
            details: Vec::with_capacity(n),
            prev_hash: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
        }
    }

    /// The events' columns, chained from `prev`.
    fn chained(mut prev: Hash, events: &[AuditEvent]) -> Self {
        let mut cols = Self::with_capacity(events.len());
        for e in events {
            let hash = chain::link_event(&prev, e);
            cols.push(e, prev, hash);
            prev = hash;
        }
        cols
    }

    fn push(&mut self, e: &AuditEvent, prev: Hash, hash: Hash) {
        self.id.push(e.id);
        self.at.push(e.at);
        self.kind.push(e.kind.as_str());
        self.session_id.push(e.session_id.clone());
        self.user_id.push(e.user_id.clone());
        self.actor.push(e.actor.as_str());
        self.ip.push(e.ip.clone());
        self.user_agent.push(e.user_agent.clone());
        self.reason.push(e.reason.clone());
        self.details.push(e.details.clone());
        self.prev_hash.push(prev.to_vec());
        self.hash.push(hash.to_vec());
    }
}
