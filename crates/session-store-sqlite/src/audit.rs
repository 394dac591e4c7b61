//! [`AuditLog`] over the `audit_events` table: append-only, newest first,
//! keyset pagination on the insertion sequence.

use async_trait::async_trait;
use session_core::audit::{AuditEvent, AuditQuery};
use session_core::{AuditLog, StoreError};
use sqlx::{QueryBuilder, Sqlite};

use crate::SqliteStore;
use crate::codec::{audit_from_row, instant, json_text};
use crate::error::classify;

const APPEND: &str = concat!(
    "INSERT INTO audit_events (",
    audit_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING"
);

#[async_trait]
impl AuditLog for SqliteStore {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(APPEND)
            .bind(event.id.to_string())
            .bind(instant(event.at)?)
            .bind(event.kind.as_str())
            .bind(&event.session_id)
            .bind(&event.user_id)
            .bind(event.actor.as_str())
            .bind(&event.ip)
            .bind(&event.user_agent)
            .bind(&event.reason)
            .bind(json_text(&event.details)?)
            .execute(&self.pool)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        // Only the filters asked for appear in the statement, so SQLite can
        // pick the matching index.
        let mut sql: QueryBuilder<'_, Sqlite> = QueryBuilder::new(concat!(
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
