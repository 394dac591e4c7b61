//! Checks of a store that keeps both sessions and built-in users: a
//! password change beats every login already in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use session_core::session::{Lifetimes, RevokeReason};
use session_core::store::StoreError;
use session_core::user::User;

use crate::SessionAndUserStore;
use crate::fixtures::{base_time, open_session, secrets, unique_user};
use crate::sessions::assert_no_survivors;
use crate::users::{HASH_A, HASH_B};

fn user(label: &str) -> User {
    User {
        username: unique_user(label),
        password_hash: HASH_A.to_owned(),
        created_at: base_time(),
    }
}

/// `set_password` moves the user's session epoch on in the same write: a
/// session opened under the epoch read before it is refused.
pub async fn set_password_moves_the_session_epoch(store: Arc<dyn SessionAndUserStore>) {
    let u = user("pw-epoch");
    store.create_user(&u).await.expect("create_user");
    let before = store.user_epoch(&u.username).await.expect("user_epoch");
    assert!(
        store
            .set_password(&u.username, HASH_B)
            .await
            .expect("set_password")
    );
    let after = store.user_epoch(&u.username).await.expect("user_epoch");
    assert!(after > before, "a password change moves the epoch on");

    let (mut session, _, _) =
        open_session(&secrets(), &u.username, &Lifetimes::default(), base_time());
    session.epoch = before;
    let err = store
        .create_limited(&session, 0, base_time())
        .await
        .expect_err("a login that read the old hash");
    assert!(
        matches!(err, StoreError::Superseded),
        "expected Superseded, got {err:?}"
    );
    assert_eq!(store.get(&session.id).await.expect("get"), None);
}

/// Hundreds of logins with the old password race a password change (the
/// new hash, then revoke-all, as the service does it). Each login reads
/// the user's epoch, then the hash, "checks" the password, and creates its
/// session under that epoch. Afterwards every session a login with the old
/// password opened is revoked and refuses to rotate: zero survivors.
pub async fn password_change_beats_logins_in_flight(store: Arc<dyn SessionAndUserStore>) {
    const LOGINS: usize = 200;
    let secrets = Arc::new(secrets());
    let now = base_time();
    let u = user("pw-race");
    store.create_user(&u).await.expect("create_user");
    let name = Arc::new(u.username);
    let begun = Arc::new(AtomicUsize::new(0));
    let logins: Vec<_> = (0..LOGINS)
        .map(|_| {
            let (store, secrets, name, begun) = (
                Arc::clone(&store),
                Arc::clone(&secrets),
                Arc::clone(&name),
                Arc::clone(&begun),
            );
            tokio::spawn(async move {
                let epoch = store.user_epoch(&name).await.expect("user_epoch");
                let hash = store
                    .get_user(&name)
                    .await
                    .expect("get_user")
                    .expect("the user exists")
                    .password_hash;
                begun.fetch_add(1, Ordering::SeqCst);
                // The password check takes a while.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
                if hash != HASH_A {
                    return None; // the new password is in force: a failed login
                }
                let (mut session, _, presented) =
                    open_session(&secrets, &name, &Lifetimes::default(), now);
                session.epoch = epoch;
                Some(match store.create_limited(&session, 0, now).await {
                    Ok(_) => (epoch, Some(presented)),
                    Err(StoreError::Superseded) => (epoch, None),
                    Err(e) => panic!("a racing login failed: {e:?}"),
                })
            })
        })
        .collect();
    let changer = {
        let (store, name, begun) = (Arc::clone(&store), Arc::clone(&name), Arc::clone(&begun));
        tokio::spawn(async move {
            while begun.load(Ordering::SeqCst) < LOGINS / 2 {
                tokio::task::yield_now().await;
            }
            assert!(
                store
                    .set_password(&name, HASH_B)
                    .await
                    .expect("set_password")
            );
            store
                .revoke_user(&name, RevokeReason::PasswordChanged, now)
                .await
                .expect("revoke_user");
        })
    };
    let results: Vec<_> = futures::future::join_all(logins)
        .await
        .into_iter()
        .filter_map(|r| r.expect("a login task panicked"))
        .collect();
    changer.await.expect("the password change panicked");
    let current = store.user_epoch(&name).await.expect("user_epoch");
    // Every login that saw the old hash began before the change.
    assert!(
        results.iter().all(|(e, _)| *e < current),
        "a login that saw the old hash read the epoch after the change"
    );
    assert_no_survivors(&*store, &secrets, &results, current, now).await;
}
