//! Checkpoints (signed heads of the chain) and the walk that verifies the
//! chain, its checkpoints and any exported ones.

use std::collections::VecDeque;
use std::fmt;

use futures::TryStreamExt;
use session_core::StoreError;
use sqlx::Row;
use time::OffsetDateTime;
use uuid::Uuid;

use super::PostgresAuditLog;
use super::rows::checkpoint_from_row;
use crate::chain::{self, Fields, GENESIS, Hash};
use crate::error::classify;

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
