//! The composition root: the one place that names a backend. It reads the
//! `store` and `audit` settings and hands the server trait objects.
//!
//! Each backend is a cargo feature of this crate, all on by default:
//! `sqlite` (the embedded store: sessions, users, audit log), `redis`
//! (sessions on Redis / Redis Cluster), `postgres` (the PostgreSQL audit
//! log). A build without one refuses its URLs at start, naming the feature.

#[cfg(feature = "sqlite")]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "sqlite")]
use session_core::outbox::Outbox;
#[cfg(feature = "postgres")]
use session_store_postgres::{
    ChainCheck, Checkpoint, MigrateMode, OutboxAuditLog, OutboxConfig, SignatureFault,
};
#[cfg(feature = "redis")]
use session_store_redis::{RedisOptions, RedisStore};
#[cfg(feature = "sqlite")]
use session_store_sqlite::SqliteStore;

#[cfg(any(feature = "redis", feature = "postgres"))]
use session_core::StoreError;
#[cfg(feature = "postgres")]
use session_core::keys::{DetachedError, KeyRing};
use session_core::record::RecordCipher;
use session_core::{AuditLog, RevocationFeed, SessionStore, UserStore};

use crate::config::Settings;
use crate::startup::StartupError;
#[cfg(feature = "postgres")]
use crate::state::{AuditChain, SignedHead};
use crate::state::{AuditOutbox, Backends};

#[cfg(not(any(feature = "sqlite", feature = "redis")))]
compile_error!("session-server needs a session store: enable its `sqlite` or `redis` feature");
#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!("session-server needs an audit log: enable its `sqlite` or `postgres` feature");

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

/// The session store's half of [`Backends`].
struct SessionSide {
    sessions: Arc<dyn SessionStore>,
    users: Arc<dyn UserStore>,
    feed: Option<Arc<dyn RevocationFeed>>,
    kind: &'static str,
    /// Values every instance shares (key ring, token secret), where the
    /// session store is shared.
    shared: Option<Arc<dyn session_core::shared::SharedValues>>,
    /// The embedded store, which may hold the audit log too.
    #[cfg(feature = "sqlite")]
    sqlite: Option<Arc<SqliteStore>>,
}

/// The audit log's half of [`Backends`].
struct AuditSide {
    audit: Arc<dyn AuditLog>,
    kind: &'static str,
    outbox: Option<Arc<dyn AuditOutbox>>,
    chain: Option<Arc<dyn crate::state::AuditChain>>,
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
    let sessions = match scheme {
        "sqlite" => sqlite_sessions(rest, &records).await?,
        scheme if REDIS_SCHEMES.contains(&scheme) => redis_sessions(settings, &records).await?,
        _ => return Err(unsupported()),
    };
    // The audit log: its own SQLite file (`<data dir>/audit.db` unless
    // `sqlite://PATH` names another), or PostgreSQL.
    let audit_url = settings.audit.as_deref().unwrap_or_default();
    let audit = if audit_url.is_empty() || audit_url.starts_with("sqlite://") {
        let path = audit_url
            .strip_prefix("sqlite://")
            .map_or_else(|| settings.data_dir.join("audit.db"), PathBuf::from);
        sqlite_audit(&path, &settings.data_dir, &sessions).await?
    } else if audit_url.starts_with("postgres://") || audit_url.starts_with("postgresql://") {
        postgres_audit(settings, audit_url).await?
    } else {
        return Err(StartupError::Unsupported {
            what: "audit",
            url: redact(audit_url),
        });
    };
    Ok(Backends {
        sessions: sessions.sessions,
        users: sessions.users,
        audit: audit.audit,
        feed: sessions.feed,
        store_kind: sessions.kind,
        audit_kind: audit.kind,
        audit_outbox: audit.outbox,
        audit_chain: audit.chain,
        shared: sessions.shared,
        records: Some(records),
    })
}

#[cfg(feature = "sqlite")]
async fn sqlite(path: &Path, what: &'static str) -> Result<Arc<SqliteStore>, StartupError> {
    crate::files::prepare_private_file(path)?;
    SqliteStore::open(path)
        .await
        .map(Arc::new)
        .map_err(|source| StartupError::Store { what, source })
}

/// The embedded session store at `path`.
#[cfg(feature = "sqlite")]
async fn sqlite_sessions(path: &str, records: &RecordCipher) -> Result<SessionSide, StartupError> {
    let path = PathBuf::from(path);
    crate::files::prepare_private_file(&path)?;
    let store = SqliteStore::open(&path)
        .await
        .map(|s| Arc::new(s.with_records(records.clone())))
        .map_err(|source| StartupError::Store {
            what: "SQLite store",
            source,
        })?;
    tracing::info!(path = %path.display(), "session store: SQLite");
    Ok(SessionSide {
        sessions: store.clone(),
        users: store.clone(),
        feed: None,
        kind: "sqlite",
        shared: None,
        sqlite: Some(store),
    })
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite_sessions(_: &str, _: &RecordCipher) -> Result<SessionSide, StartupError> {
    Err(StartupError::NotBuilt {
        what: "the SQLite session store",
        feature: "sqlite",
    })
}

/// Opens the embedded audit log at `path` in its own file (created 0600:
/// it holds user ids, IPs and user agents), or uses the session store's
/// file when it is the same. A deployment from before the audit log had its
/// own file kept its events in the session store's, and they are copied
/// over once (see [`SqliteStore::import_audit_once`]).
///
/// Appends go through a durable outbox in `data_dir` (one synced line per
/// event, shared syncs), delivered to the file in batches: an event costs
/// the request a line instead of a transaction that rewrites a page of the
/// table and of each of its indexes. Where another process holds that
/// outbox (two servers on one data dir), this one appends to the file
/// directly, as before the outbox.
#[cfg(feature = "sqlite")]
async fn sqlite_audit(
    path: &Path,
    data_dir: &Path,
    sessions: &SessionSide,
) -> Result<AuditSide, StartupError> {
    let audit = match &sessions.sqlite {
        Some(store) if store.path() == path => store.clone(),
        _ => {
            let audit = sqlite(path, "SQLite audit log").await?;
            if let Some(old) = sessions
                .sqlite
                .as_ref()
                .map(|s| s.path())
                .filter(|old| old.exists())
            {
                let copied =
                    audit
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
            audit
        }
    };
    let config = session_core::outbox::OutboxConfig::default();
    let opened = Outbox::open(
        data_dir,
        session_store_sqlite::AUDIT_OUTBOX,
        audit.clone(),
        config,
    )
    .await;
    let (audit, outbox): (Arc<dyn AuditLog>, Option<Arc<dyn AuditOutbox>>) = match opened {
        Ok(outbox) => {
            let outbox = Arc::new(outbox);
            (outbox.clone(), Some(outbox))
        }
        Err(e) if session_core::outbox::is_locked(&e) => {
            tracing::warn!(error = %e, "another process holds the audit outbox; appending to the SQLite audit log directly");
            (audit, None)
        }
        Err(source) => {
            return Err(StartupError::Store {
                what: "SQLite audit log (its outbox)",
                source,
            });
        }
    };
    Ok(AuditSide {
        audit,
        kind: "sqlite",
        outbox,
        chain: None,
    })
}

#[cfg(not(feature = "sqlite"))]
async fn sqlite_audit(
    _: &std::path::Path,
    _: &std::path::Path,
    _: &SessionSide,
) -> Result<AuditSide, StartupError> {
    Err(StartupError::NotBuilt {
        what: "the SQLite audit log (the default; SESSION_AUDIT=postgres://… names the other)",
        feature: "sqlite",
    })
}

/// Sessions on Redis or a Redis Cluster.
#[cfg(feature = "redis")]
async fn redis_sessions(
    settings: &Settings,
    records: &RecordCipher,
) -> Result<SessionSide, StartupError> {
    let store_url = settings.store.as_str();
    let options = RedisOptions {
        records: Some(records.clone()),
        ..redis_options(settings)
    };
    // Connect now where Redis answers, so an evicting policy stops the
    // start with one line. Where Redis is unreachable, start anyway: the
    // store connects on first use (checking the policy then), answers 503
    // until Redis is back, then serves.
    let store = match RedisStore::connect_with(store_url, &settings.redis_prefix, &options).await {
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
    Ok(SessionSide {
        sessions: store.clone(),
        users: store.clone(),
        feed: Some(store.clone()),
        kind,
        shared: Some(store),
        #[cfg(feature = "sqlite")]
        sqlite: None,
    })
}

#[cfg(not(feature = "redis"))]
async fn redis_sessions(_: &Settings, _: &RecordCipher) -> Result<SessionSide, StartupError> {
    Err(StartupError::NotBuilt {
        what: "the Redis session store",
        feature: "redis",
    })
}

/// The PostgreSQL audit log, through its local outbox. The server runs as
/// the least-privileged `session_service` role: it checks the schema and
/// refuses to start when it is behind; the owner applies migrations with
/// `session-server migrate`.
#[cfg(feature = "postgres")]
async fn postgres_audit(settings: &Settings, audit_url: &str) -> Result<AuditSide, StartupError> {
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
    Ok(AuditSide {
        audit: outbox.clone(),
        kind: "postgres",
        outbox: Some(outbox.clone()),
        chain: Some(Arc::new(PostgresChain(outbox))),
    })
}

#[cfg(not(feature = "postgres"))]
async fn postgres_audit(_: &Settings, _: &str) -> Result<AuditSide, StartupError> {
    Err(StartupError::NotBuilt {
        what: "the PostgreSQL audit log",
        feature: "postgres",
    })
}

/// The URL schemes of a Redis session store.
const REDIS_SCHEMES: [&str; 2] = ["redis", "redis+cluster"];

/// The Redis options the settings give.
#[cfg(feature = "redis")]
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
    #[cfg(feature = "redis")]
    {
        let store = RedisStore::connect_with(url, &settings.redis_prefix, &redis_options(settings))
            .await
            .map_err(|source| StartupError::Store {
                what: "Redis store",
                source,
            })?;
        Ok(Some(Arc::new(store)))
    }
    #[cfg(not(feature = "redis"))]
    Err(StartupError::NotBuilt {
        what: "the Redis session store",
        feature: "redis",
    })
}

/// Applies every pending migration of the PostgreSQL audit log at `url`
/// (`session-server migrate`, as the schema's owner).
pub async fn migrate_audit(url: &str) -> Result<(), StartupError> {
    #[cfg(feature = "postgres")]
    {
        session_store_postgres::migrate(url)
            .await
            .map_err(|source| StartupError::Store {
                what: "PostgreSQL audit log",
                source,
            })
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = url;
        Err(StartupError::NotBuilt {
            what: "the PostgreSQL audit log",
            feature: "postgres",
        })
    }
}

/// Checks a checkpoint's signature against the ring: its live keys and its
/// archive of dropped ones.
#[cfg(feature = "postgres")]
pub fn verify_signature(keys: &KeyRing, c: &Checkpoint) -> Result<(), SignatureFault> {
    let signature = std::str::from_utf8(&c.signature).map_err(|_| SignatureFault::BadSignature)?;
    keys.verify_detached(&c.kid, &c.message(), signature)
        .map_err(|e| match e {
            DetachedError::UnknownKey => SignatureFault::UnknownKey,
            // BadSignature, and any refusal added later.
            _ => SignatureFault::BadSignature,
        })
}

#[cfg(feature = "postgres")]
fn checkpoint(h: &SignedHead) -> Checkpoint {
    Checkpoint {
        seq: h.seq,
        head_hash: h.head_hash,
        signature: h.signature.clone(),
        kid: h.kid.clone(),
        at: h.at,
    }
}

#[cfg(feature = "postgres")]
fn signed_head(c: Checkpoint) -> SignedHead {
    SignedHead {
        seq: c.seq,
        head_hash: c.head_hash,
        signature: c.signature,
        kid: c.kid,
        at: c.at,
    }
}

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl AuditOutbox for OutboxAuditLog {
    fn backlog(&self) -> u64 {
        OutboxAuditLog::backlog(self)
    }

    async fn flush(&self, timeout: std::time::Duration) -> bool {
        OutboxAuditLog::flush(self, timeout).await
    }
}

#[cfg(feature = "sqlite")]
#[async_trait::async_trait]
impl AuditOutbox for Outbox<SqliteStore> {
    fn backlog(&self) -> u64 {
        Outbox::backlog(self)
    }

    async fn flush(&self, timeout: std::time::Duration) -> bool {
        Outbox::flush(self, timeout).await
    }
}

#[cfg(feature = "postgres")]
struct PostgresChain(Arc<OutboxAuditLog>);

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl AuditChain for PostgresChain {
    async fn verify(
        &self,
        keys: &KeyRing,
        exported: &[SignedHead],
    ) -> Result<serde_json::Value, StoreError> {
        let signatures = |c: &Checkpoint| verify_signature(keys, c);
        let exported: Vec<Checkpoint> = exported.iter().map(checkpoint).collect();
        let report = self
            .0
            .postgres()
            .verify_chain_with(ChainCheck {
                signatures: Some(&signatures),
                exported: &exported,
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

    async fn checkpoints(&self) -> Result<Vec<SignedHead>, StoreError> {
        let stored = self.0.postgres().checkpoints().await?;
        Ok(stored.into_iter().map(signed_head).collect())
    }

    async fn checkpoint(
        &self,
        keys: &KeyRing,
        now: time::OffsetDateTime,
    ) -> Result<Option<SignedHead>, StoreError> {
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
        let stored = self.0.postgres().checkpoint(&signer, &kid).await?;
        Ok(stored.map(signed_head))
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
