//! Eviction must never make revocation fail open: a Redis that may evict
//! keys is refused unless the deployment opts out, and the keys a
//! revoke-all relies on never expire before the sessions they cover.

use session_conformance::fixtures::{base_time, open_session, secrets, unique_user};
use session_core::{Lifetimes, RevokeReason, SessionStore, StoreError};
use session_store_redis::{RedisOptions, RedisStore};

use crate::servers::Throwaway;
use crate::{Probe as _, both_stores, unique_prefix};

/// The error and its sources, as one line.
fn chain(e: &StoreError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[tokio::test]
async fn a_redis_that_may_evict_is_refused_at_connect_unless_allowed() {
    for policy in ["allkeys-lru", "volatile-lru", "volatile-ttl"] {
        let server = Throwaway::start_with(&["--maxmemory-policy", policy]);
        let err = RedisStore::connect(&server.url(), &unique_prefix())
            .await
            .expect_err("a Redis that may evict keys is refused");
        assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
        let message = chain(&err);
        assert!(
            message.contains(policy)
                && message.contains("noeviction")
                && message.contains("SESSION_REDIS_ALLOW_EVICTION"),
            "the refusal says what is wrong and how to opt out: {message}"
        );

        let allowed = RedisOptions {
            allow_eviction: true,
            ..RedisOptions::default()
        };
        let store = RedisStore::connect_with(&server.url(), &unique_prefix(), &allowed)
            .await
            .expect("the opt-out starts anyway");
        SessionStore::ping(&store).await.unwrap();
    }
    let server = Throwaway::start_with(&["--maxmemory-policy", "noeviction"]);
    RedisStore::connect(&server.url(), &unique_prefix())
        .await
        .expect("noeviction is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_epoch_never_expires_and_the_index_outlives_every_session_it_lists() {
    for store in both_stores().await {
        let secrets = secrets();
        let now = base_time();
        let user = unique_user("no-ttl");
        let short = Lifetimes {
            absolute_lifetime: time::Duration::hours(1),
            ..Lifetimes::default()
        };
        let (long, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
        let (brief, _, _) = open_session(&secrets, &user, &short, now);
        store.create(&long).await.unwrap();
        store.create(&brief).await.unwrap();
        store
            .revoke_user(&user, RevokeReason::RevokeAll, now)
            .await
            .unwrap();
        assert_eq!(
            store.pexpiretime(&store.store.user_epoch_key(&user)),
            -1,
            "the epoch has no expiry"
        );
        let index = store.pexpiretime(&store.store.user_index_key(&user));
        assert!(
            index == -1 || index >= crate::ms(long.absolute_expires_at),
            "the index lives at least as long as its longest session ({index})"
        );
    }
}
