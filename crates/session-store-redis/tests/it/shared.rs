//! Shared values (the sealed key ring and server secrets): created once,
//! changed only by compare-and-set, on one node and on a cluster.

use session_core::shared::SharedValues;

use crate::both_stores;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_value_is_created_once_and_changed_only_from_what_was_read() {
    for store in both_stores().await {
        let s = &store.store;
        assert_eq!(s.get_shared("keys").await.unwrap(), None);
        assert!(s.create_shared("keys", b"first").await.unwrap());
        assert!(
            !s.create_shared("keys", b"second").await.unwrap(),
            "the first writer wins"
        );
        assert_eq!(
            s.get_shared("keys").await.unwrap().as_deref(),
            Some(&b"first"[..])
        );
        assert!(!s.replace_shared("keys", b"stale", b"third").await.unwrap());
        assert!(s.replace_shared("keys", b"first", b"third").await.unwrap());
        assert!(!s.replace_shared("keys", b"first", b"fourth").await.unwrap());
        assert_eq!(
            s.get_shared("keys").await.unwrap().as_deref(),
            Some(&b"third"[..])
        );
        assert_eq!(s.get_shared("token-secret").await.unwrap(), None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_many_instances_creating_at_once_exactly_one_wins() {
    for store in both_stores().await {
        let tries = (0..16u8).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.store.create_shared("ring", &[i]).await.unwrap() })
        });
        let won = futures::future::join_all(tries)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().unwrap())
            .count();
        assert_eq!(won, 1);
    }
}
