//! Memory per live session, measured with `MEMORY USAGE` (a size check).

use session_conformance::fixtures::{base_time, default_grace, mint, params, secrets, unique_user};
use session_core::anomaly::ClientInfo;
use session_core::rotation::RefreshOutcome;
use session_core::{Lifetimes, Session, SessionStore};

use crate::single_store;

/// The budget per live session: its hash, its pointer and its share of its
/// user's index.
const BUDGET: i64 = 600;

/// A realistic desktop browser's user agent (111 bytes).
const USER_AGENT: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_rotated_session_costs_at_most_600_bytes_including_its_index_entry() {
    let store = single_store().await;
    let secrets = secrets();
    let now = base_time();
    let (users, per_user) = (20, 5);
    let mut sessions: Vec<Session> = Vec::new();
    let mut user_ids = Vec::new();
    for _ in 0..users {
        let user = unique_user("mem");
        for _ in 0..per_user {
            let (_, p0) = {
                let id = session_core::SessionId::generate();
                secrets.issue_refresh(&id, 0)
            };
            let mut s = Session::new(p0.session_id, user.clone(), p0.digest, &Lifetimes::default(), now);
            s.ip = Some("203.0.113.77".into());
            s.user_agent = Some(USER_AGENT.into());
            store.create(&s).await.unwrap();
            // One rotation, as every session in use has had: a previous
            // digest, a sealed grace successor and a recent-refresh entry.
            let (_, _, next) = mint(&secrets, &s.id, 1);
            let mut p = params(default_grace());
            p.client = ClientInfo {
                ip: s.ip.clone(),
                user_agent: s.user_agent.clone(),
            };
            let r = store.refresh(&p0, &next, &p, now).await.unwrap();
            assert_eq!(r.outcome, RefreshOutcome::Rotated);
            sessions.push(r.session.unwrap());
        }
        user_ids.push(user);
    }

    let usage = |key: &str| -> i64 {
        store.raw(key, redis::cmd("MEMORY").arg("USAGE").arg(key).arg("SAMPLES").arg(0))
    };
    let mut hashes = 0;
    let mut pointers = 0;
    for s in &sessions {
        hashes += usage(&store.store.session_key(&s.user_id, &s.id));
        pointers += usage(&store.store.pointer_key(&s.id));
    }
    let indexes: i64 = user_ids.iter().map(|u| usage(&store.store.user_index_key(u))).sum();
    let n = i64::try_from(sessions.len()).unwrap();
    let per_session = (hashes + pointers + indexes) / n;
    println!(
        "bytes per live session: {per_session} (hash {}, pointer {}, index share {})",
        hashes / n,
        pointers / n,
        indexes / n
    );
    assert!(
        per_session <= BUDGET,
        "a live session costs {per_session} bytes (hash {}, pointer {}, index {}), over the {BUDGET}-byte budget",
        hashes / n,
        pointers / n,
        indexes / n
    );
}
