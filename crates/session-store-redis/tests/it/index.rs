//! The per-user index is maintained outside the session's slot, so it must
//! heal itself: stray and dead entries never show, and old ones are pruned.

use session_conformance::fixtures::{base_time, open_session, secrets, secs, unique_user};
use session_core::{Lifetimes, RevokeReason, SessionStore, StoreError};

use crate::servers::Throwaway;
use crate::{Probe as _, both_stores};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_create_never_shows_the_session_in_the_impostors_list() {
    for store in both_stores().await {
        let secrets = secrets();
        let now = base_time();
        let (original, _, _) =
            open_session(&secrets, &unique_user("owner"), &Lifetimes::default(), now);
        store.create(&original).await.unwrap();
        let mut impostor = original.clone();
        impostor.user_id = unique_user("impostor");
        assert!(matches!(
            store.create(&impostor).await,
            Err(StoreError::Conflict)
        ));
        assert!(
            store
                .list_user(&impostor.user_id, now)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .revoke_user(&impostor.user_id, RevokeReason::RevokeAll, now)
                .await
                .unwrap()
                .is_empty(),
            "revoking the impostor's sessions leaves the owner's alone"
        );
        assert!(
            store
                .get(&original.id)
                .await
                .unwrap()
                .unwrap()
                .revoked
                .is_none()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_entries_of_vanished_sessions_are_pruned_once_old() {
    for store in both_stores().await {
        let secrets = secrets();
        let now = base_time();
        let user = unique_user("prune");
        let (gone, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
        let (kept, _, _) = open_session(&secrets, &user, &Lifetimes::default(), now);
        store.create(&gone).await.unwrap();
        store.create(&kept).await.unwrap();
        // As if Redis had expired it.
        let key = store.store.session_key(&gone.id);
        let _: i64 = store.raw(&key, redis::cmd("DEL").arg(&key));
        let index = store.store.user_index_key(&user);
        let card = || -> i64 { store.raw(&index, redis::cmd("ZCARD").arg(&index)) };

        // A young entry may be a create in flight: it is kept, but not listed.
        assert_eq!(store.list_user(&user, now).await.unwrap().len(), 1);
        assert_eq!(card(), 2);
        // Once old, it is dropped.
        assert_eq!(
            store.list_user(&user, secs(now, 120)).await.unwrap().len(),
            1
        );
        assert_eq!(card(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_loaded_again_after_redis_forgets_them() {
    let server = Throwaway::start();
    let store = session_store_redis::RedisStore::connect(&server.url(), "noscript")
        .await
        .unwrap();
    let secrets = secrets();
    let now = base_time();
    let (a, _, _) = open_session(
        &secrets,
        &unique_user("noscript"),
        &Lifetimes::default(),
        now,
    );
    store.create(&a).await.unwrap();
    let mut con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = redis::cmd("SCRIPT").arg("FLUSH").query(&mut con).unwrap();
    let (b, _, _) = open_session(&secrets, &a.user_id, &Lifetimes::default(), now);
    store.create(&b).await.unwrap();
    assert!(
        store
            .revoke(&a.id, RevokeReason::Admin, now)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.list_user(&a.user_id, now).await.unwrap(), vec![b]);
}
