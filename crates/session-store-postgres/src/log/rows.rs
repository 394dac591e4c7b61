//! Rows by hand (core types are not `FromRow`), and the event query.

use std::str::FromStr;

use session_core::{Actor, AuditEvent, AuditKind, AuditQuery, StoreError};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::verify::Checkpoint;
use crate::chain::Hash;
use crate::error::classify;

pub(super) async fn query_events(
    pool: &PgPool,
    query: &AuditQuery,
) -> Result<Vec<AuditEvent>, StoreError> {
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

pub(super) fn checkpoint_from_row(row: &PgRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        seq: row.try_get("seq").map_err(classify)?,
        head_hash: to_hash(row.try_get("head_hash").map_err(classify)?)?,
        signature: row.try_get("signature").map_err(classify)?,
        kid: row.try_get("kid").map_err(classify)?,
        at: row.try_get("at").map_err(classify)?,
    })
}

pub(super) fn to_hash(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    Hash::try_from(bytes.as_slice())
        .map_err(|_| StoreError::corrupt(format!("stored hash has {} bytes, not 32", bytes.len())))
}
