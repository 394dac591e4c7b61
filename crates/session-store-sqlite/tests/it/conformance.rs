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
