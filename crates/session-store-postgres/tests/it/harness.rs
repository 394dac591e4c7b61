//! Fresh databases, a superuser connection, events, and a PostgreSQL of the
//! test's own (for the fault test).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use session_core::{Actor, AuditEvent, AuditKind, AuditLog, AuditQuery, RevokeReason, StoreError};
use session_store_postgres::{MigrateMode, OutboxAuditLog, OutboxConfig, PostgresAuditLog};
use sqlx::{Connection, Executor, PgConnection};
use time::OffsetDateTime;

/// The shared PostgreSQL's URL.
pub(crate) fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned())
}

/// `url` with its database replaced by `db`.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{base}/{db}{query}")
}

async fn admin_connection(url: &str) -> PgConnection {
    match PgConnection::connect(url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "these tests need the PostgreSQL at DATABASE_URL={url} (CI={}): {e}",
            std::env::var("CI").unwrap_or_default()
        ),
    }
}

/// A database of one test's own, dropped (with its connections) at the end.
#[derive(Debug)]
pub(crate) struct TestDb {
    pub(crate) name: String,
    pub(crate) url: String,
    admin_url: String,
}

impl TestDb {
    pub(crate) async fn create() -> Self {
        let admin_url = database_url();
        let name = format!("audit_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = admin_connection(&admin_url).await;
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        Self {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// A migrated log on this database.
    pub(crate) async fn log(&self) -> PostgresAuditLog {
        PostgresAuditLog::connect(&self.url, MigrateMode::Apply)
            .await
            .expect("connect and migrate")
    }

    /// A superuser connection to this database.
    pub(crate) async fn superuser(&self) -> PgConnection {
        admin_connection(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Its own thread and runtime: Drop may run inside (or outside) a runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut admin = PgConnection::connect(&url).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// A log that owns the database (and directory) it lives in, for the
/// conformance macro's factory.
#[derive(Debug)]
pub(crate) struct Owned<L> {
    pub(crate) log: L,
    _db: TestDb,
    _dir: Option<tempfile::TempDir>,
}

#[async_trait]
impl<L: AuditLog> AuditLog for Owned<L> {
    async fn append(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.log.append(event).await
    }
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
        self.log.query(query).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.log.ping().await
    }
}

pub(crate) async fn fresh_postgres_log() -> Arc<dyn AuditLog> {
    let db = TestDb::create().await;
    let log = db.log().await;
    Arc::new(Owned {
        log,
        _db: db,
        _dir: None,
    })
}

pub(crate) async fn fresh_outbox_log() -> Arc<dyn AuditLog> {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = OutboxAuditLog::open(dir.path(), &db.url, fast_config())
        .await
        .expect("open outbox");
    Arc::new(Owned {
        log,
        _db: db,
        _dir: Some(dir),
    })
}

/// Short pauses, so tests recover quickly.
pub(crate) fn fast_config() -> OutboxConfig {
    OutboxConfig {
        outbox: session_core::outbox::OutboxConfig {
            batch_size: 200,
            min_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(250),
            query_wait: Duration::from_secs(5),
            ..session_core::outbox::OutboxConfig::default()
        },
        migrate: MigrateMode::Apply,
    }
}

/// A fixed instant to start events from.
pub(crate) fn t0() -> OffsetDateTime {
    time::macros::datetime!(2026-11-26 06:00:00 UTC)
}

/// The `i`th revocation of a test.
pub(crate) fn revocation(i: i64) -> AuditEvent {
    let at = t0() + time::Duration::milliseconds(i);
    AuditEvent::new(AuditKind::SessionRevoked, Actor::Admin, at)
        .session(format!("session-{i}"), format!("user-{}", i % 7))
        .reason(RevokeReason::Admin)
        .details(serde_json::json!({ "n": i }))
}

/// A PostgreSQL server of the test's own, in a temporary directory, run as
/// an unprivileged user (`postgres`) when the tests run as root.
#[derive(Debug)]
pub(crate) struct OwnedPostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    as_postgres: bool,
    pub(crate) port: u16,
}

impl OwnedPostgres {
    pub(crate) fn init() -> Self {
        let bindir = pg_bindir();
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let dir = tempfile::Builder::new()
            .prefix("audit-pg-")
            .tempdir()
            .expect("temp dir");
        if as_postgres {
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown the PostgreSQL directory to postgres"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = Self {
            dir,
            bindir,
            as_postgres,
            port,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bindir.join(tool);
        let output = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub(crate) fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=40",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        let data = self.data();
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "30", "start",
            ],
        );
    }

    pub(crate) fn stop(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"],
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnedPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bindir.join("pg_ctl");
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
    }
}

/// Where PostgreSQL's programs are: `SESSION_TEST_PG_BINDIR`, else
/// `pg_config --bindir`, else `/usr/lib/postgresql/*/bin`.
fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("SESSION_TEST_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| d.join("initdb").exists());
    if let Some(dir) = from_pg_config {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| Path::new(d).join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL's programs (initdb, pg_ctl): set SESSION_TEST_PG_BINDIR")
}
