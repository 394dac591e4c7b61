//! Memory per live session, measured with `MEMORY USAGE` (a size check).

use session_conformance::fixtures::{base_time, default_grace, mint, params, secrets, unique_user};
use session_core::anomaly::ClientInfo;
use session_core::rotation::RefreshOutcome;
use session_core::{Lifetimes, Session, SessionId, SessionStore};

use crate::{Cleaned, Probe as _, single_store_with_prefix, unique_prefix};
use session_core::ApplyRefresh as _;

/// The budget per live session: its key and its share of its user's index.
const BUDGET: i64 = 600;

/// A realistic desktop browser's user agent (111 bytes).
const USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// Opens `per_user` sessions for each of `users` users (UUID-long ids),
/// rotates each once, and returns the bytes per session and their split.
async fn bytes_per_session(store: &Cleaned, users: usize, per_user: usize) -> (i64, i64, i64) {
    let secrets = secrets();
    let now = base_time();
    let mut sessions: Vec<Session> = Vec::new();
    let mut user_ids = Vec::new();
    for _ in 0..users {
        let user = format!("{:0>36}", &unique_user("")[13..]);
        for _ in 0..per_user {
            let (_, p0) = secrets.issue_refresh(&SessionId::generate(), 0);
            let mut s = Session::new(
                p0.session_id,
                user.clone(),
                p0.digest,
                &Lifetimes::default(),
                now,
            );
            s.ip = Some("203.0.113.77".into());
            s.user_agent = Some(USER_AGENT.into());
            store.create(&s).await.unwrap();
            // One rotation, as every session in use has had: a previous
            // digest and a recent-refresh entry (its sealed successor
            // lives in its own key for the grace window only).
            let (_, _, next) = mint(&secrets, &s.id, 1);
            let mut p = params(default_grace());
            p.client = ClientInfo {
                ip: s.ip.clone(),
                user_agent: s.user_agent.clone(),
                dpop_jkt: None,
                location: None,
            };
            let r = store.refresh(&p0, &next, &p, now).await.unwrap();
            assert_eq!(r.outcome, RefreshOutcome::Rotated);
            sessions.push(r.session.unwrap());
        }
        user_ids.push(user);
    }
    let usage = |key: &str| -> i64 {
        store.raw(
            key,
            redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .arg("SAMPLES")
                .arg(0),
        )
    };
    let records: i64 = sessions
        .iter()
        .map(|s| usage(&store.store.session_key(&s.id)))
        .sum();
    let indexes: i64 = user_ids
        .iter()
        .map(|u| usage(&store.store.user_index_key(u)))
        .sum();
    let n = i64::try_from(sessions.len()).unwrap();
    ((records + indexes) / n, records / n, indexes / n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_costs_at_most_600_bytes_including_its_index_entry() {
    // A production-like prefix length ("sessions").
    let store = single_store_with_prefix(&format!("m{}", &unique_prefix()[3..10])).await;
    for (users, per_user) in [(50, 1), (20, 5)] {
        let (total, record, index) = bytes_per_session(&store, users, per_user).await;
        println!(
            "{per_user} session(s) per user: {total} bytes per session (record {record}, index share {index})"
        );
        assert!(
            total <= BUDGET,
            "with {per_user} session(s) per user a live session costs {total} bytes \
             (record {record}, index share {index}), over the {BUDGET}-byte budget"
        );
    }
}
