//! The composition root: the one place that names a backend. It reads the
//! `store` and `audit` settings and hands the server trait objects.

use std::path::PathBuf;
use std::sync::Arc;

use session_store_postgres::{MigrateMode, OutboxAuditLog, OutboxConfig};
use session_store_redis::RedisStore;
use session_store_sqlite::SqliteStore;

use session_core::StoreError;
use session_core::keys::KeyRing;

use crate::config::Settings;
use crate::state::{AuditChain, Backends, StartupError};

/// A URL with any credentials cut out, for logs and errors.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_owned(),
        },
        None => "<not a URL>".to_owned(),
    }
}

async fn sqlite(
    path: &std::path::Path,
    what: &'static str,
) -> Result<Arc<SqliteStore>, StartupError> {
    SqliteStore::open(path)
        .await
        .map(Arc::new)
        .map_err(|source| StartupError::Store { what, source })
}

/// Opens the stores the settings name.
pub async fn open_backends(settings: &Settings) -> Result<Backends, StartupError> {
    let store_url = settings.store.as_str();
    let unsupported = || StartupError::Unsupported {
        what: "store",
        url: redact(store_url),
    };
    let (scheme, rest) = store_url.split_once("://").ok_or_else(unsupported)?;
    let mut backends = match scheme {
        "sqlite" => {
            let path = PathBuf::from(rest);
            let store = sqlite(&path, "SQLite store").await?;
            tracing::info!(path = %path.display(), "session store: SQLite");
            Backends {
                sessions: store.clone(),
                users: store.clone(),
                audit: store,
                feed: None,
                store_kind: "sqlite",
                audit_kind: "sqlite",
                audit_backlog: None,
                audit_chain: None,
                shared: None,
            }
        }
        "redis" | "redis+cluster" => {
            let store = RedisStore::connect(store_url, &settings.redis_prefix)
                .await
                .map(Arc::new)
                .map_err(|source| StartupError::Store {
                    what: "Redis store",
                    source,
                })?;
            let kind = if store.is_cluster() {
                "redis-cluster"
            } else {
                "redis"
            };
            tracing::info!(url = %redact(store_url), kind, "session store: Redis");
            // Sessions live in Redis; without a PostgreSQL audit log the
            // audit trail is an embedded SQLite file in the data dir.
            let audit = sqlite(&settings.data_dir.join("audit.db"), "SQLite audit log").await?;
            Backends {
                sessions: store.clone(),
                users: store.clone(),
                audit,
                feed: Some(store.clone()),
                store_kind: kind,
                audit_kind: "sqlite",
                audit_backlog: None,
                audit_chain: None,
                shared: Some(store),
            }
        }
        _ => return Err(unsupported()),
    };
    if let Some(audit_url) = &settings.audit {
        if !(audit_url.starts_with("postgres://") || audit_url.starts_with("postgresql://")) {
            return Err(StartupError::Unsupported {
                what: "audit",
                url: redact(audit_url),
            });
        }
        let config = OutboxConfig {
            migrate: MigrateMode::Apply,
            ..OutboxConfig::default()
        };
        let outbox = OutboxAuditLog::open(&settings.data_dir, audit_url, config)
            .await
            .map(Arc::new)
            .map_err(|source| StartupError::Store {
                what: "PostgreSQL audit log",
                source,
            })?;
        tracing::info!(url = %redact(audit_url), "audit log: PostgreSQL through the local outbox");
        let backlog = outbox.clone();
        backends.audit = outbox.clone();
        backends.audit_kind = "postgres";
        backends.audit_backlog = Some(Arc::new(move || backlog.backlog()));
        backends.audit_chain = Some(Arc::new(PostgresChain(outbox)));
    }
    Ok(backends)
}

struct PostgresChain(Arc<OutboxAuditLog>);

#[async_trait::async_trait]
impl AuditChain for PostgresChain {
    async fn verify(&self) -> Result<serde_json::Value, StoreError> {
        let report = self.0.postgres().verify_chain().await?;
        let hex = |h: &[u8]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Ok(serde_json::json!({
            "intact": report.is_intact(),
            "events": report.events,
            "checkpoints": report.checkpoints,
            "head": report.head.map(|(seq, hash)| serde_json::json!({ "seq": seq, "hash": hex(&hash) })),
            "broken": report.broken.map(|b| serde_json::json!({
                "seq": b.seq,
                "id": b.id.map(|id| id.to_string()),
                "problem": format!("{:?}", b.problem),
            })),
        }))
    }

    async fn checkpoint(&self, keys: &KeyRing) -> Result<(), StoreError> {
        // Sign with the key that is active now; a signing failure leaves no
        // checkpoint rather than a bad one.
        let (kid, _) = keys.sign_detached(b"probe").map_err(StoreError::backend)?;
        let signer = |msg: &[u8]| {
            keys.sign_detached(msg)
                .map(|(_, sig)| sig.into_bytes())
                .unwrap_or_default()
        };
        self.0
            .postgres()
            .checkpoint(&signer, &kid)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(
            redact("postgres://svc:hunter2@db:5432/audit"),
            "postgres://…@db:5432/audit"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("nonsense"), "<not a URL>");
    }
}
