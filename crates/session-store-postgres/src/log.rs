//! [`PostgresAuditLog`]: the audit log in PostgreSQL, with its batching
//! writer, queries, checkpoints and chain verification.

use std::collections::{HashSet, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use session_core::{Actor, AuditEvent, AuditKind, AuditLog, AuditQuery, StoreError};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::chain::{self, Fields, GENESIS, Hash};
use crate::error::{self, SchemaError, classify};

/// The schema's migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The transaction-scoped advisory lock that serializes appends, so the
/// chain stays linear across writers and processes ("audit_lg" in ASCII).
pub const CHAIN_LOCK: i64 = 0x6175_6469_745f_6c67;

/// The most events the writer puts in one transaction.
const MAX_BATCH: usize = 1000;

/// What [`PostgresAuditLog::connect`] does about the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrateMode {
    /// Applies pending migrations (the database user must own the schema).
    Apply,
    /// Only checks that every migration is applied, unchanged; fails with a
    /// [`SchemaError`] otherwise. For a service running as `session_service`.
    Check,
}

/// The pool settings the log uses: a short acquire timeout, so an outage
/// is reported as [`StoreError::Unavailable`] in seconds, not minutes.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(3))
}

/// Parses a `postgres://` URL.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(StoreError::backend)
}

/// Applies every pending migration to the database at `url` (what
/// `session-server migrate` runs).
pub async fn migrate(url: &str) -> Result<(), StoreError> {
    let pool = pool_options()
        .max_connections(1)
        .connect_with(connect_options(url)?)
        .await
        .map_err(classify)?;
    let result = MIGRATOR.run(&pool).await.map_err(error::migrate);
    pool.close().await;
    result
}

/// Applies or checks the schema on `pool`.
pub async fn prepare_schema(pool: &PgPool, mode: MigrateMode) -> Result<(), StoreError> {
    match mode {
        MigrateMode::Apply => MIGRATOR.run(pool).await.map_err(error::migrate),
        MigrateMode::Check => check_schema(pool).await,
    }
}

/// Checks, reading only, that every migration of this build is applied
/// unchanged and that the database knows none this build does not.
pub async fn check_schema(pool: &PgPool) -> Result<(), StoreError> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .map_err(classify)?;
    let applied: Vec<(i64, Vec<u8>)> = if exists.is_some() {
        sqlx::query_as(
            "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(pool)
        .await
        .map_err(classify)?
    } else {
        Vec::new()
    };
    for m in MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
    {
        match applied.iter().find(|(v, _)| *v == m.version) {
            None => {
                return Err(StoreError::backend(SchemaError::Pending {
                    version: m.version,
                    description: m.description.to_string(),
                }));
            }
            Some((_, sum)) if sum.as_slice() != &*m.checksum => {
                return Err(StoreError::backend(SchemaError::Modified {
                    version: m.version,
                }));
            }
            Some(_) => {}
        }
    }
    if let Some((version, _)) = applied
        .iter()
        .find(|(v, _)| !MIGRATOR.iter().any(|m| m.version == *v))
    {
        return Err(StoreError::backend(SchemaError::Unknown {
            version: *version,
        }));
    }
    Ok(())
}

/// The audit log in PostgreSQL. Cheap to clone; clones share one pool and
/// one writer.
#[derive(Debug, Clone)]
pub struct PostgresAuditLog {
    pool: PgPool,
    writer: mpsc::Sender<Pending>,
    head: HeadHint,
}

/// The chain head this process last saw: a guess that saves a round trip
/// when right and costs one retry when another writer moved the head.
type HeadHint = Arc<std::sync::Mutex<Option<Option<Hash>>>>;

#[derive(Debug)]
struct Pending {
    event: AuditEvent,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// A signed head of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The `seq` of the last event it covers.
    pub seq: i64,
    /// That event's hash.
    pub head_hash: Hash,
    /// The signer's signature over [`Checkpoint::message`].
    pub signature: Vec<u8>,
    /// The signing key's id.
    pub kid: String,
    /// When it was written (the database's clock).
    pub at: OffsetDateTime,
}

impl Checkpoint {
    /// The bytes the signature covers (see the README).
    pub fn message(&self) -> Vec<u8> {
        chain::checkpoint_message(self.seq, &self.head_hash)
    }
}

/// What [`PostgresAuditLog::verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events verified, in `seq` order, before the end or the first break.
    pub events: u64,
    /// Checkpoints found to agree with the chain.
    pub checkpoints: u64,
    /// The last verified event's `seq` and hash.
    pub head: Option<(i64, Hash)>,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

impl ChainReport {
    /// Whether every link and checkpoint held.
    pub fn is_intact(&self) -> bool {
        self.broken.is_none()
    }
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The `seq` of the event (or checkpoint) concerned.
    pub seq: i64,
    /// The event's id; `None` when a checkpoint names an event that is gone.
    pub id: Option<Uuid>,
    /// What is wrong.
    pub problem: LinkProblem,
}

/// Ways a link can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    /// The event's `prev_hash` is not the previous event's hash: an event
    /// before it was removed or inserted, or this `prev_hash` was edited.
    PrevHashMismatch,
    /// The event's hash is not the hash of its own columns: it was edited.
    HashMismatch,
    /// A checkpoint's hash differs from the event's at that `seq`: the chain
    /// was rewritten after the checkpoint was signed.
    CheckpointMismatch,
    /// A checkpoint names an event that is no longer there.
    CheckpointedEventMissing,
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

    /// Signs the current head of the chain with `signer` and stores the
    /// checkpoint (see [`Checkpoint::message`]). `None` when the log is
    /// empty; signing the same head twice stores it once.
    pub async fn checkpoint(
        &self,
        signer: &(dyn Fn(&[u8]) -> Vec<u8> + Sync),
        kid: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let Some((seq, head_hash)) = self.head().await? else {
            return Ok(None);
        };
        let signature = signer(&chain::checkpoint_message(seq, &head_hash));
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, head_hash, signature, kid) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (seq) DO NOTHING",
        )
        .bind(seq)
        .bind(head_hash.as_slice())
        .bind(&signature)
        .bind(kid)
        .execute(&self.pool)
        .await
        .map_err(classify)?;
        let row = sqlx::query(
            "SELECT seq, head_hash, signature, kid, at FROM audit_checkpoints WHERE seq = $1",
        )
        .bind(seq)
        .fetch_one(&self.pool)
        .await
        .map_err(classify)?;
        checkpoint_from_row(&row).map(Some)
    }

    /// Every checkpoint, oldest first.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        sqlx::query("SELECT seq, head_hash, signature, kid, at FROM audit_checkpoints ORDER BY seq")
            .fetch_all(&self.pool)
            .await
            .map_err(classify)?
            .iter()
            .map(checkpoint_from_row)
            .collect()
    }

    /// Walks the whole chain in `seq` order, streaming rows (memory does not
    /// grow with the log), and checks every link and every checkpoint's head
    /// hash. Signatures are the caller's to check ([`Checkpoint::message`]).
    pub async fn verify_chain(&self) -> Result<ChainReport, StoreError> {
        let mut checkpoints: VecDeque<(i64, Hash)> = self
            .checkpoints()
            .await?
            .into_iter()
            .map(|c| (c.seq, c.head_hash))
            .collect();
        let mut report = ChainReport {
            events: 0,
            checkpoints: 0,
            head: None,
            broken: None,
        };
        let mut prev = GENESIS;
        let mut rows = sqlx::query(
            "SELECT seq, id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details, prev_hash, hash \
             FROM audit_events ORDER BY seq",
        )
        .fetch(&self.pool);
        while let Some(row) = rows.try_next().await.map_err(classify)? {
            let seq: i64 = row.try_get("seq").map_err(classify)?;
            let id: Uuid = row.try_get("id").map_err(classify)?;
            let broken = |problem| {
                Some(BrokenLink {
                    seq,
                    id: Some(id),
                    problem,
                })
            };
            if let Some(&(cp_seq, _)) = checkpoints.front()
                && cp_seq < seq
            {
                report.broken = Some(BrokenLink {
                    seq: cp_seq,
                    id: None,
                    problem: LinkProblem::CheckpointedEventMissing,
                });
                return Ok(report);
            }
            let at: OffsetDateTime = row.try_get("at").map_err(classify)?;
            let details: serde_json::Value = row.try_get("details").map_err(classify)?;
            let stored_prev: Vec<u8> = row.try_get("prev_hash").map_err(classify)?;
            let stored_hash: Vec<u8> = row.try_get("hash").map_err(classify)?;
            let fields = Fields {
                id: &id,
                at_micros: chain::unix_micros(at),
                kind: row.try_get("kind").map_err(classify)?,
                session_id: row.try_get("session_id").map_err(classify)?,
                user_id: row.try_get("user_id").map_err(classify)?,
                actor: row.try_get("actor").map_err(classify)?,
                ip: row.try_get("ip").map_err(classify)?,
                user_agent: row.try_get("user_agent").map_err(classify)?,
                reason: row.try_get("reason").map_err(classify)?,
                details: &details,
            };
            if stored_prev.as_slice() != prev.as_slice() {
                report.broken = broken(LinkProblem::PrevHashMismatch);
                return Ok(report);
            }
            let hash = chain::link(&prev, &fields);
            if stored_hash.as_slice() != hash.as_slice() {
                report.broken = broken(LinkProblem::HashMismatch);
                return Ok(report);
            }
            if let Some(&(cp_seq, cp_hash)) = checkpoints.front()
                && cp_seq == seq
            {
                if cp_hash != hash {
                    report.broken = broken(LinkProblem::CheckpointMismatch);
                    return Ok(report);
                }
                checkpoints.pop_front();
                report.checkpoints += 1;
            }
            prev = hash;
            report.events += 1;
            report.head = Some((seq, hash));
        }
        if let Some(&(cp_seq, _)) = checkpoints.front() {
            report.broken = Some(BrokenLink {
                seq: cp_seq,
                id: None,
                problem: LinkProblem::CheckpointedEventMissing,
            });
        }
        Ok(report)
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

/// The writer task stopped (its runtime is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the audit writer has stopped")]
struct WriterGone;

/// Takes whatever appends are waiting (up to [`MAX_BATCH`]), writes them in
/// one transaction on a connection it keeps, and answers each.
async fn run_writer(pool: PgPool, head: HeadHint, mut rx: mpsc::Receiver<Pending>) {
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

async fn append_batch(
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

async fn query_events(pool: &PgPool, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
    // The cursor: events appended before the event `before`; an id this
    // log never held falls back to id order (UUID v7 ids follow time).
    let cursor_seq: Option<i64> = match query.before {
        None => None,
        Some(before) => sqlx::query_scalar("SELECT seq FROM audit_events WHERE id = $1")
            .bind(before)
            .fetch_optional(pool)
            .await
            .map_err(classify)?,
    };
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(
        "SELECT id, at, kind, session_id, user_id, actor, ip, user_agent, reason, details \
         FROM audit_events WHERE TRUE",
    );
    if let Some(user) = &query.user_id {
        q.push(" AND user_id = ").push_bind(user);
    }
    if let Some(session) = &query.session_id {
        q.push(" AND session_id = ").push_bind(session);
    }
    if let Some(kind) = query.kind {
        q.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(since) = query.since {
        q.push(" AND at >= ").push_bind(since);
    }
    match (cursor_seq, query.before) {
        (Some(seq), _) => {
            q.push(" AND seq < ").push_bind(seq);
        }
        (None, Some(before)) => {
            q.push(" AND id < ").push_bind(before);
        }
        (None, None) => {}
    }
    q.push(" ORDER BY seq DESC LIMIT ")
        .push_bind(i64::from(query.effective_limit()));
    q.build()
        .fetch_all(pool)
        .await
        .map_err(classify)?
        .iter()
        .map(event_from_row)
        .collect()
}

/// Maps a row to an event by hand (core types are not `FromRow`).
pub(crate) fn event_from_row(row: &PgRow) -> Result<AuditEvent, StoreError> {
    let kind: String = row.try_get("kind").map_err(classify)?;
    let actor: String = row.try_get("actor").map_err(classify)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(classify)?,
        at: row.try_get("at").map_err(classify)?,
        kind: AuditKind::from_str(&kind).map_err(StoreError::corrupt)?,
        session_id: row.try_get("session_id").map_err(classify)?,
        user_id: row.try_get("user_id").map_err(classify)?,
        actor: Actor::parse(&actor)
            .ok_or_else(|| StoreError::corrupt(format!("unknown audit actor {actor:?}")))?,
        ip: row.try_get("ip").map_err(classify)?,
        user_agent: row.try_get("user_agent").map_err(classify)?,
        reason: row.try_get("reason").map_err(classify)?,
        details: row.try_get("details").map_err(classify)?,
    })
}

fn checkpoint_from_row(row: &PgRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: row.try_get("seq").map_err(classify)?,
        head_hash: to_hash(row.try_get("head_hash").map_err(classify)?)?,
        signature: row.try_get("signature").map_err(classify)?,
        kid: row.try_get("kid").map_err(classify)?,
        at: row.try_get("at").map_err(classify)?,
    })
}

fn to_hash(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    Hash::try_from(bytes.as_slice())
        .map_err(|_| StoreError::corrupt(format!("stored hash has {} bytes, not 32", bytes.len())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_migration_takes_the_same_chain_lock() {
        let sql = include_str!("../../../migrations/postgres/20261126000001_audit_log.sql");
        assert!(sql.contains(&format!("pg_advisory_xact_lock({})", super::CHAIN_LOCK)));
    }
}
