//! The shared conformance suite, each check on a fresh database file.

use crate::support::{fresh, fresh_from_pool, fresh_sealed};

session_conformance::session_store_tests!(fresh());
session_conformance::audit_log_tests!(fresh());
session_conformance::user_store_tests!(fresh());
session_conformance::session_and_user_store_tests!(fresh());

/// The session checks again on a store that seals records at rest: the
/// compare-and-swap, revocation and rotation work on the clear columns.
mod sealed {
    use super::fresh_sealed;

    session_conformance::session_store_tests!(fresh_sealed());
    session_conformance::session_and_user_store_tests!(fresh_sealed());
}

/// The session checks on a store made from the application's own pool.
mod from_pool {
    use super::fresh_from_pool;

    session_conformance::session_store_tests!(fresh_from_pool());
    session_conformance::session_and_user_store_tests!(fresh_from_pool());
}

/// Two handles on one file (two processes on one embedded store): the
/// copy one keeps of the sessions it wrote never outvotes what the other
/// wrote since.
#[tokio::test]
async fn a_copy_kept_by_one_handle_never_outvotes_another() {
    use std::sync::Arc;

    use session_conformance::guarded::Guarded;
    use session_store_sqlite::SqliteStore;

    let here = fresh().await;
    let there = SqliteStore::open(here.store.path())
        .await
        .expect("a second handle on the file");
    session_conformance::sessions::a_copy_kept_by_one_instance_never_outvotes_another(
        here,
        Arc::new(Guarded::new(there, ())),
    )
    .await;
}
