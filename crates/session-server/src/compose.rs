//! The composition root: the one place that names a backend. It reads the
//! `store` and `audit` settings and hands the server trait objects.

use std::path::PathBuf;
use std::sync::Arc;

use session_store_sqlite::SqliteStore;

use crate::config::Settings;
use crate::state::{Backends, StartupError};

fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_owned(),
        },
        None => "<not a URL>".to_owned(),
    }
}

/// Opens the stores the settings name.
pub async fn open_backends(settings: &Settings) -> Result<Backends, StartupError> {
    let store_url = settings.store.as_str();
    let (scheme, rest) = store_url
        .split_once("://")
        .ok_or_else(|| StartupError::Unsupported {
            what: "store",
            url: redact(store_url),
        })?;
    let mut backends =
        match scheme {
            "sqlite" => {
                let path = PathBuf::from(rest);
                let store = Arc::new(SqliteStore::open(&path).await.map_err(|source| {
                    StartupError::Store {
                        what: "SQLite store",
                        source,
                    }
                })?);
                tracing::info!(path = %path.display(), "session store: SQLite");
                Backends {
                    sessions: store.clone(),
                    users: store.clone(),
                    audit: store,
                    feed: None,
                    store_kind: "sqlite",
                    audit_kind: "sqlite",
                    audit_backlog: None,
                }
            }
            _ => {
                return Err(StartupError::Unsupported {
                    what: "store",
                    url: redact(store_url),
                });
            }
        };
    if let Some(audit) = &settings.audit {
        return Err(StartupError::Unsupported {
            what: "audit",
            url: redact(audit),
        });
    }
    backends.audit_kind = if backends.store_kind == "sqlite" {
        "sqlite"
    } else {
        backends.audit_kind
    };
    Ok(backends)
}
