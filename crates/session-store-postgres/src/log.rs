//! [`PostgresAuditLog`]: the audit log in PostgreSQL, with its batching
//! writer, queries, checkpoints and chain verification.

use std::collections::{HashSet, VecDeque};
use std::fmt;
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
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

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

/// Why a checkpoint's signature was not accepted, as the caller's verifier
/// (which holds the signing keys) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureFault {
    /// No key the verifier knows, live or archived, has the checkpoint's
    /// key id.
    UnknownKey,
    /// The key is known and the signature does not verify under it.
    BadSignature,
}

/// Checks a checkpoint's signature over [`Checkpoint::message`].
pub type CheckpointVerifier<'a> = &'a (dyn Fn(&Checkpoint) -> Result<(), SignatureFault> + Sync);

/// What [`PostgresAuditLog::verify_chain_with`] checks beyond the links.
#[derive(Clone, Copy, Default)]
pub struct ChainCheck<'a> {
    /// Checks every checkpoint's signature; `None`: signatures unchecked.
    pub signatures: Option<CheckpointVerifier<'a>>,
    /// Checkpoints kept outside the database (exported earlier): each must
    /// agree with the chain as a stored one does, and one ahead of the
    /// newest event means the log lost its tail.
    pub exported: &'a [Checkpoint],
}

impl fmt::Debug for ChainCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainCheck")
            .field("signatures", &self.signatures.is_some())
            .field("exported", &self.exported.len())
            .finish()
    }
}

/// What [`PostgresAuditLog::verify_chain`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Events verified, in `seq` order, before the end or the first break.
    pub events: u64,
    /// Stored checkpoints found to agree with the chain (and, when checked,
    /// signed by a known key).
    pub checkpoints: u64,
    /// Exported checkpoints found to agree with the chain.
    pub exported_checkpoints: u64,
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
    /// The key id of the checkpoint concerned, if the break is at one.
    pub kid: Option<String>,
    /// Whether that checkpoint is an exported one (not read from the
    /// database).
    pub exported: bool,
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
    /// A checkpoint names an event that is no longer there, and later
    /// events are.
    CheckpointedEventMissing,
    /// A checkpoint (stored or exported) is ahead of the newest event: the
    /// log lost its tail.
    TruncatedTail,
    /// A checkpoint's signature does not verify under its key.
    CheckpointSignatureInvalid,
    /// A checkpoint names a key the verifier does not know.
    CheckpointKeyUnknown,
}

impl LinkProblem {
    /// The problem's name in reports (`snake_case`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrevHashMismatch => "prev_hash_mismatch",
            Self::HashMismatch => "hash_mismatch",
            Self::CheckpointMismatch => "checkpoint_mismatch",
            Self::CheckpointedEventMissing => "checkpointed_event_missing",
            Self::TruncatedTail => "truncated_tail",
            Self::CheckpointSignatureInvalid => "checkpoint_signature_invalid",
            Self::CheckpointKeyUnknown => "checkpoint_key_unknown",
        }
    }
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
    /// grow with the log), and checks every link and every stored
    /// checkpoint's head hash. Signatures are not checked: see
    /// [`PostgresAuditLog::verify_chain_with`].
    pub async fn verify_chain(&self) -> Result<ChainReport, StoreError> {
        self.verify_chain_with(ChainCheck::default()).await
    }

    /// [`PostgresAuditLog::verify_chain`], and also every checkpoint's
    /// signature (with `check.signatures`) and the exported checkpoints in
    /// `check.exported`. A checkpoint whose signature fails is reported as
    /// such before anything else about it.
    pub async fn verify_chain_with(
        &self,
        check: ChainCheck<'_>,
    ) -> Result<ChainReport, StoreError> {
        let mut checkpoints: Vec<(Checkpoint, bool)> = self
            .checkpoints()
            .await?
            .into_iter()
            .map(|c| (c, false))
            .chain(check.exported.iter().map(|c| (c.clone(), true)))
            .collect();
        checkpoints.sort_by_key(|(c, _)| c.seq);
        let mut checkpoints = VecDeque::from(checkpoints);
        let signature_problem = |c: &Checkpoint| {
            check.signatures.and_then(|verify| match verify(c) {
                Ok(()) => None,
                Err(SignatureFault::UnknownKey) => Some(LinkProblem::CheckpointKeyUnknown),
                Err(SignatureFault::BadSignature) => Some(LinkProblem::CheckpointSignatureInvalid),
            })
        };
        let at_checkpoint = |(c, exported): &(Checkpoint, bool), id, problem| BrokenLink {
            seq: c.seq,
            id,
            problem,
            kid: Some(c.kid.clone()),
            exported: *exported,
        };
        let mut report = ChainReport {
            events: 0,
            checkpoints: 0,
            exported_checkpoints: 0,
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
                    kid: None,
                    exported: false,
                })
            };
            if let Some(front) = checkpoints.front()
                && front.0.seq < seq
            {
                let problem =
                    signature_problem(&front.0).unwrap_or(LinkProblem::CheckpointedEventMissing);
                report.broken = Some(at_checkpoint(front, None, problem));
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
            while let Some(front) = checkpoints.front()
                && front.0.seq == seq
            {
                let problem = signature_problem(&front.0).or_else(|| {
                    (front.0.head_hash != hash).then_some(LinkProblem::CheckpointMismatch)
                });
                if let Some(problem) = problem {
                    report.broken = Some(at_checkpoint(front, Some(id), problem));
                    return Ok(report);
                }
                if front.1 {
                    report.exported_checkpoints += 1;
                } else {
                    report.checkpoints += 1;
                }
                checkpoints.pop_front();
            }
            prev = hash;
            report.events += 1;
            report.head = Some((seq, hash));
        }
        if let Some(front) = checkpoints.front() {
            let problem = signature_problem(&front.0).unwrap_or(LinkProblem::TruncatedTail);
            report.broken = Some(at_checkpoint(front, None, problem));
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
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
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
        let sql = include_str!("../migrations/20261126000001_audit_log.sql");
        assert!(sql.contains(&format!("pg_advisory_xact_lock({})", super::CHAIN_LOCK)));
    }
}
