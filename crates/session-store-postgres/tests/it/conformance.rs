//! The shared audit-log checks, on the direct log and on the outbox.

mod postgres {
    session_conformance::audit_log_tests!(crate::harness::fresh_postgres_log());
}

mod outbox {
    session_conformance::audit_log_tests!(crate::harness::fresh_outbox_log());
}
