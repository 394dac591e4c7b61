//! A store in its own temporary directory, removed when the store goes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use session_conformance::guarded::Guarded;
use session_core::TokenSecrets;
use session_core::record::RecordCipher;
use session_store_sqlite::SqliteStore;
use sqlx::Connection as _;
use sqlx::sqlite::SqliteConnection;
use tempfile::TempDir;

/// A [`SqliteStore`] on a fresh file that lives as long as this value
/// (the store is dropped before its temporary directory).
pub(crate) type TempStore = Guarded<SqliteStore, TempDir>;

/// A store on a fresh file in its own temporary directory.
pub(crate) async fn temp_store() -> TempStore {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(&db_path(dir.path()))
        .await
        .expect("open the store");
    Guarded::new(store, dir)
}

/// Where the tests put the database in a directory (as the server does).
pub(crate) fn db_path(dir: &Path) -> PathBuf {
    dir.join("sessions.db")
}

/// A fresh store for the conformance macros.
pub(crate) async fn fresh() -> Arc<TempStore> {
    Arc::new(temp_store().await)
}

/// A fresh store on a pool the test made itself (as an application that
/// already has one would), with the store's own durability settings.
pub(crate) async fn fresh_from_pool() -> Arc<TempStore> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let options = SqliteConnectOptions::new()
        .filename(db_path(dir.path()))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(std::time::Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .expect("the application's pool");
    let store = SqliteStore::from_pool(pool).await.expect("the store on it");
    assert_eq!(store.path(), db_path(dir.path()));
    Arc::new(Guarded::new(store, dir))
}

/// A fresh store that seals its records' private fields at rest.
pub(crate) async fn fresh_sealed() -> Arc<TempStore> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let records = RecordCipher::from_secrets(&TokenSecrets::from_master(&[5; 32]));
    let store = SqliteStore::open(&db_path(dir.path()))
        .await
        .expect("open the store")
        .with_records(records);
    Arc::new(Guarded::new(store, dir))
}

/// A plain connection to the file, outside the store, as an operator's
/// `sqlite3` shell would have: no pragmas of the store's own.
pub(crate) async fn raw_connection(path: &Path) -> SqliteConnection {
    SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("a raw connection to the database file")
}

/// Every byte of the database and its WAL and shared-memory files.
pub(crate) fn bytes_on_disk(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list the data directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_file() {
            all.extend(std::fs::read(&path).expect("read a database file"));
        }
    }
    all
}
