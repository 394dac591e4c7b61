//! The shared conformance suite, each check on a fresh database file.

use crate::support::fresh;

session_conformance::session_store_tests!(fresh());
session_conformance::audit_log_tests!(fresh());
session_conformance::user_store_tests!(fresh());
session_conformance::session_and_user_store_tests!(fresh());
