//! The composition root: the one place that names a backend. It reads the
//! `store` and `audit` settings and hands the server trait objects.

use std::path::PathBuf;
use std::sync::Arc;

use session_store_postgres::{ChainCheck, Checkpoint, MigrateMode, OutboxAuditLog, OutboxConfig};
use session_store_redis::{RedisOptions, RedisStore};
use session_store_sqlite::SqliteStore;

use session_core::keys::KeyRing;
use session_core::record::RecordCipher;
use session_core::{RevocationFeed, SessionStore, StoreError, UserStore};

use crate::config::Settings;
use crate::startup::StartupError;
use crate::state::{AuditChain, Backends};

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
    crate::files::prepare_private_file(path)?;
    SqliteStore::open(path)
        .await
        .map(Arc::new)
        .map_err(|source| StartupError::Store { what, source })
}

/// Opens the embedded audit log at `path` in its own file (created 0600:
/// it holds user ids, IPs and user agents). `sessions_db` is the SQLite
/// session store's file, if any: a deployment from before the audit log
/// had its own file kept its events there, and they are copied over once
/// (see [`SqliteStore::import_audit_once`]).
async fn sqlite_audit(
    path: &std::path::Path,
    sessions_db: Option<&std::path::Path>,
) -> Result<Arc<SqliteStore>, StartupError> {
    let audit = sqlite(path, "SQLite audit log").await?;
    if let Some(old) = sessions_db.filter(|old| old.exists()) {
        let copied = audit
            .import_audit_once(old)
            .await
            .map_err(|source| StartupError::Store {
                what: "SQLite audit log (copying the events kept in the session store)",
                source,
            })?;
        if copied > 0 {
            tracing::info!(
                events = copied, from = %old.display(), to = %path.display(),
                "audit events moved to the audit log's own file (the old copy stays, append-only)"
            );
        }
    }
    tracing::info!(path = %path.display(), "audit log: SQLite");
    Ok(audit)
}

/// The session store's half of [`Backends`].
struct SessionSide {
    sessions: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    feed: Option<Arc<dyn RevocationFeed>>,
    kind: &'static str,
    /// Values every instance shares (key ring, token secret), where the
    /// session store is shared.
    shared: Option<Arc<dyn session_core::shared::SharedValues>>,
}

/// Opens the stores the settings name.
pub async fn open_backends(settings: &Settings) -> Result<Backends, StartupError> {
    let store_url = settings.store.as_str();
    let unsupported = || StartupError::Unsupported {
        what: "store",
        url: redact(store_url),
    };
    let (scheme, rest) = store_url.split_once("://").ok_or_else(unsupported)?;
    // Every session store seals its records' private fields; the cipher
    // gets its key once the state has loaded the token secret.
    let records = RecordCipher::new();
    let (sessions, sqlite_store) = match scheme {
        "sqlite" => {
            let path = PathBuf::from(rest);
            crate::files::prepare_private_file(&path)?;
            let store = SqliteStore::open(&path)
                .await
                .map(|s| Arc::new(s.with_records(records.clone())))
                .map_err(|source| StartupError::Store {
                    what: "SQLite store",
                    source,
                })?;
            tracing::info!(path = %path.display(), "session store: SQLite");
            let sessions = SessionSide {
                sessions: store.clone(),
                users: store.clone(),
                feed: None,
                kind: "sqlite",
                shared: None,
            };
            (sessions, Some(store))
        }
        scheme if REDIS_SCHEMES.contains(&scheme) => {
            let options = RedisOptions {
                records: Some(records.clone()),
                ..redis_options(settings)
            };
            // Connect now where Redis answers, so an evicting policy stops
            // the start with one line. Where Redis is unreachable, start
            // anyway: the store connects on first use (checking the policy
            // then), answers 503 until Redis is back, then serves.
            let store = match RedisStore::connect_with(store_url, &settings.redis_prefix, &options)
                .await
            {
                Err(StoreError::Unavailable(e)) => {
                    tracing::warn!(error = %e, "Redis is unreachable; starting anyway, answering 503 until it is back");
                    RedisStore::open_with(store_url, &settings.redis_prefix, &options)
                }
                other => other,
            }
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
            let sessions = SessionSide {
                sessions: store.clone(),
                users: store.clone(),
                feed: Some(store.clone()),
                kind,
                shared: Some(store),
            };
            (sessions, None)
        }
        _ => return Err(unsupported()),
    };
    // The audit log: its own SQLite file (`<data dir>/audit.db` unless
    // `sqlite://PATH` names another), or PostgreSQL.
    let audit_url = settings.audit.as_deref().unwrap_or_default();
    if audit_url.is_empty() || audit_url.starts_with("sqlite://") {
        let path = audit_url
            .strip_prefix("sqlite://")
            .map_or_else(|| settings.data_dir.join("audit.db"), PathBuf::from);
        let audit = match &sqlite_store {
            Some(store) if store.path() == path => store.clone(),
            _ => sqlite_audit(&path, sqlite_store.as_ref().map(|s| s.path())).await?,
        };
        return Ok(Backends {
            sessions: sessions.sessions,
            users: sessions.users,
            audit,
            feed: sessions.feed,
            store_kind: sessions.kind,
            audit_kind: "sqlite",
            audit_backlog: None,
            audit_chain: None,
            shared: sessions.shared,
            records: Some(records),
        });
    }
    if !(audit_url.starts_with("postgres://") || audit_url.starts_with("postgresql://")) {
        return Err(StartupError::Unsupported {
            what: "audit",
            url: redact(audit_url),
        });
    }
    // The server runs as the least-privileged `session_service` role: it
    // checks the schema and refuses to start when it is behind; the owner
    // applies migrations with `session-server migrate`.
    let config = OutboxConfig {
        migrate: MigrateMode::Check,
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
    Ok(Backends {
        sessions: sessions.sessions,
        users: sessions.users,
        audit: outbox.clone(),
        feed: sessions.feed,
        store_kind: sessions.kind,
        audit_kind: "postgres",
        audit_backlog: Some(Arc::new(move || backlog.backlog())),
        audit_chain: Some(Arc::new(PostgresChain(outbox))),
        shared: sessions.shared,
        records: Some(records),
    })
}

/// The URL schemes of a Redis session store.
const REDIS_SCHEMES: [&str; 2] = ["redis", "redis+cluster"];

/// The Redis options the settings give.
fn redis_options(settings: &Settings) -> RedisOptions {
    RedisOptions {
        allow_eviction: settings.redis_allow_eviction,
        ..RedisOptions::default()
    }
}

/// The values a shared session store keeps for every instance (the key
/// ring and the token secret), where the store is shared (Redis); `None`
/// for the embedded store. Connects now: for `session-server rewrap`.
pub async fn shared_values(
    settings: &Settings,
) -> Result<Option<Arc<dyn session_core::shared::SharedValues>>, StartupError> {
    let url = settings.store.as_str();
    if !url
        .split_once("://")
        .is_some_and(|(scheme, _)| REDIS_SCHEMES.contains(&scheme))
    {
        return Ok(None);
    }
    let store = RedisStore::connect_with(url, &settings.redis_prefix, &redis_options(settings))
        .await
        .map_err(|source| StartupError::Store {
            what: "Redis store",
            source,
        })?;
    Ok(Some(Arc::new(store)))
}

struct PostgresChain(Arc<OutboxAuditLog>);

#[async_trait::async_trait]
impl AuditChain for PostgresChain {
    async fn verify(
        &self,
        keys: &KeyRing,
        exported: &[Checkpoint],
    ) -> Result<serde_json::Value, StoreError> {
        let signatures = |c: &Checkpoint| crate::checkpoint::verify_signature(keys, c);
        let report = self
            .0
            .postgres()
            .verify_chain_with(ChainCheck {
                signatures: Some(&signatures),
                exported,
            })
            .await?;
        Ok(serde_json::json!({
            "intact": report.is_intact(),
            "events": report.events,
            "checkpoints": report.checkpoints,
            "exported_checkpoints": report.exported_checkpoints,
            "head": report.head.map(|(seq, hash)| serde_json::json!({
                "seq": seq,
                "hash": session_core::TokenDigest::from_bytes(hash).to_hex(),
            })),
            "broken": report.broken.map(|b| serde_json::json!({
                "seq": b.seq,
                "id": b.id.map(|id| id.to_string()),
                "problem": b.problem.as_str(),
                "kid": b.kid,
                "exported": b.exported,
            })),
        }))
    }

    async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.0.postgres().checkpoints().await
    }

    async fn checkpoint(
        &self,
        keys: &KeyRing,
        now: time::OffsetDateTime,
    ) -> Result<Option<Checkpoint>, StoreError> {
        // Sign with the key that is active now; a signing failure leaves no
        // checkpoint rather than a bad one. What the outbox holds goes to
        // PostgreSQL first, so the checkpoint covers every event already
        // answered for (if PostgreSQL is down, signing fails below anyway).
        self.0.flush(std::time::Duration::from_secs(2)).await;
        // Both calls sign as of `now`, so with the same key even across an
        // activation.
        let (kid, _) = keys
            .sign_detached_at(b"probe", now)
            .map_err(StoreError::backend)?;
        let signer = |msg: &[u8]| {
            keys.sign_detached_at(msg, now)
                .map(|(_, sig)| sig.into_bytes())
                .unwrap_or_default()
        };
        self.0.postgres().checkpoint(&signer, &kid).await
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
