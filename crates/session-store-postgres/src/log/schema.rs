//! The schema: the embedded migrations, applying or only checking them,
//! and the pool settings every connection of the log uses.

use std::str::FromStr;
use std::time::Duration;

use session_core::StoreError;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::{self, SchemaError, classify};

/// The schema's migrations, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The transaction-scoped advisory lock that serializes appends, so the
/// chain stays linear across writers and processes ("audit_lg" in ASCII).
pub const CHAIN_LOCK: i64 = 0x6175_6469_745f_6c67;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_migration_takes_the_same_chain_lock() {
        let sql = include_str!("../../migrations/20261126000001_audit_log.sql");
        assert!(sql.contains(&format!("pg_advisory_xact_lock({})", super::CHAIN_LOCK)));
    }
}
