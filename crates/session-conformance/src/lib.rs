#![doc = include_str!("../README.md")]
// reason: test support. A check that cannot go on is a failed check, and
// `expect` says which step failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use session_core::store::{AuditLog, SessionStore, UserStore};

pub mod accounts;
pub mod audit;
pub mod dpop;
pub mod fixtures;
pub mod guarded;
pub mod sessions;
pub mod users;

/// What the exported macros need, reachable through `$crate`.
#[doc(hidden)]
pub mod __private {
    pub use session_core::store::{AuditLog, SessionStore, UserStore};
}

/// Calls back `__expand_checks!` with the list of session-store checks.
/// The one list behind both [`session_store_suite`] and
/// [`session_store_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __session_store_checks {
    ($($mode:tt)*) => {
        $crate::__expand_checks! { $($mode)* ; sessions ;
            create_never_overwrites,
            get_returns_what_was_created,
            a_revoked_session_reads_back_as_a_tombstone,
            replace_with_a_stale_version_fails,
            replace_never_clears_a_revocation,
            refresh_rotates_the_live_token,
            concurrent_rotations_of_one_token_leave_one_live_successor,
            concurrent_rotations_without_grace_revoke_the_family,
            reuse_of_a_token_two_generations_back_revokes_the_family,
            replay_of_the_previous_token_inside_grace_returns_the_same_successor,
            replay_of_the_previous_token_after_grace_is_reuse,
            a_never_issued_generation_is_invalid_without_side_effects,
            refresh_after_the_idle_deadline_is_expired,
            refresh_never_outlives_the_absolute_deadline,
            refresh_of_an_unknown_session_is_expired,
            revoke_twice_returns_none_the_second_time,
            revoke_user_touches_only_that_user,
            revoke_user_refuses_creates_begun_before_it,
            a_create_at_a_guessed_epoch_writes_only_when_the_guess_is_exact,
            refresh_refuses_a_session_of_an_older_epoch,
            creates_racing_revoke_user_leave_no_survivor,
            the_per_user_limit_revokes_the_oldest,
            list_user_is_oldest_first_and_omits_revoked,
            purge_expired_keeps_live_sessions,
            ping_answers,
            a_dpop_proof_is_remembered_once,
            a_dpop_binding_is_stored_and_enforced_on_refresh,
        }
    };
}

/// Calls back `__expand_checks!` with the list of audit-log checks.
#[doc(hidden)]
#[macro_export]
macro_rules! __audit_log_checks {
    ($($mode:tt)*) => {
        $crate::__expand_checks! { $($mode)* ; audit ;
            appended_events_read_back_with_every_field,
            query_filters_by_user_session_kind_and_since,
            query_is_newest_first_and_honours_the_limit,
            before_cursor_pages_without_overlap_or_gaps,
            appending_the_same_event_twice_stores_one,
            audit_ping_answers,
        }
    };
}

/// Calls back `__expand_checks!` with the list of user-store checks.
#[doc(hidden)]
#[macro_export]
macro_rules! __user_store_checks {
    ($($mode:tt)*) => {
        $crate::__expand_checks! { $($mode)* ; users ;
            create_user_never_overwrites,
            get_user_returns_what_was_created,
            set_password_replaces_only_that_users_hash,
            delete_user_removes_only_that_user,
        }
    };
}

/// Calls back `__expand_checks!` with the list of checks of a store that
/// keeps both sessions and built-in users.
#[doc(hidden)]
#[macro_export]
macro_rules! __accounts_checks {
    ($($mode:tt)*) => {
        $crate::__expand_checks! { $($mode)* ; accounts ;
            set_password_moves_the_session_epoch,
            password_change_beats_logins_in_flight,
        }
    };
}

/// Turns a list of checks into `#[tokio::test]` functions (`tests`) or into
/// a sequence of awaited calls on one store (`run`).
#[doc(hidden)]
#[macro_export]
macro_rules! __expand_checks {
    (tests $store:ty, $factory:expr ; $module:ident ; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<$store> = $factory.await;
                $crate::$module::$name(store).await;
            }
        )*
    };
    (run $store:ident ; $module:ident ; $($name:ident),* $(,)?) => {
        $( $crate::$module::$name(::std::sync::Arc::clone(&$store)).await; )*
    };
}

/// Expands to one `#[tokio::test]` per session-store check, each on a fresh
/// store from `$factory`: an expression of a future whose output is an
/// `Arc` of a [`SessionStore`] (it is evaluated once per test).
///
/// ```no_run
/// # use std::sync::Arc;
/// async fn fresh() -> Arc<session_core::memory::MemoryStore> {
///     Arc::new(session_core::memory::MemoryStore::new())
/// }
///
/// mod conformance {
///     session_conformance::session_store_tests!(super::fresh());
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! session_store_tests {
    ($factory:expr $(,)?) => {
        $crate::__session_store_checks! { tests dyn $crate::__private::SessionStore, $factory }
    };
}

/// Expands to one `#[tokio::test]` per audit-log check, each on a fresh log
/// from `$factory` (a future whose output is an `Arc` of an [`AuditLog`]).
#[macro_export]
macro_rules! audit_log_tests {
    ($factory:expr $(,)?) => {
        $crate::__audit_log_checks! { tests dyn $crate::__private::AuditLog, $factory }
    };
}

/// Expands to one `#[tokio::test]` per user-store check, each on a fresh
/// store from `$factory` (a future whose output is an `Arc` of a
/// [`UserStore`]).
#[macro_export]
macro_rules! user_store_tests {
    ($factory:expr $(,)?) => {
        $crate::__user_store_checks! { tests dyn $crate::__private::UserStore, $factory }
    };
}

/// Expands to one `#[tokio::test]` per check of a store that keeps both
/// sessions and built-in users (the password change against logins in
/// flight), each on a fresh store from `$factory` (a future whose output
/// is an `Arc` of a [`SessionAndUserStore`]).
#[macro_export]
macro_rules! session_and_user_store_tests {
    ($factory:expr $(,)?) => {
        $crate::__accounts_checks! { tests dyn $crate::SessionAndUserStore, $factory }
    };
}

/// A store that keeps both sessions and built-in users (as every bundled
/// backend does): what a password change needs to beat logins in flight.
pub trait SessionAndUserStore: SessionStore + UserStore {}

impl<T: SessionStore + UserStore + ?Sized> SessionAndUserStore for T {}

/// Runs every check of a store that keeps sessions and users, one after
/// another, on one store.
pub async fn session_and_user_store_suite<S: SessionAndUserStore + 'static>(store: Arc<S>) {
    let store: Arc<dyn SessionAndUserStore> = store;
    __accounts_checks! { run store }
}

/// Runs every session-store check, one after another, on one store.
pub async fn session_store_suite<S: SessionStore + 'static>(store: Arc<S>) {
    let store: Arc<dyn SessionStore> = store;
    __session_store_checks! { run store }
}

/// Runs every audit-log check, one after another, on one log.
pub async fn audit_log_suite<L: AuditLog + 'static>(log: Arc<L>) {
    let log: Arc<dyn AuditLog> = log;
    __audit_log_checks! { run log }
}

/// Runs every user-store check, one after another, on one store.
pub async fn user_store_suite<U: UserStore + 'static>(store: Arc<U>) {
    let store: Arc<dyn UserStore> = store;
    __user_store_checks! { run store }
}
