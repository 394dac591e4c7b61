//! Checks of a [`UserStore`]: create never overwrites, reads, password
//! changes and deletion.
//!
//! Every check uses its own usernames, so the checks may share one store.

use std::sync::Arc;

use session_core::store::{StoreError, UserStore};
use session_core::user::User;

use crate::fixtures::{base_time, unique_user};

/// A well-formed argon2id PHC string; the stores keep it as opaque text, so
/// no check pays for real hashing.
pub(crate) const HASH_A: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE";
pub(crate) const HASH_B: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$cGVwcGVycGVwcGVy$YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI";

fn user(label: &str, hash: &str) -> User {
    User {
        username: unique_user(label),
        password_hash: hash.to_owned(),
        created_at: base_time(),
    }
}

async fn get(store: &dyn UserStore, username: &str) -> Option<User> {
    store.get_user(username).await.expect("get_user")
}

/// Adding a username that exists is a `Conflict`, and the original user
/// (its hash included) is kept.
pub async fn create_user_never_overwrites(store: Arc<dyn UserStore>) {
    let original = user("user-create", HASH_A);
    store.create_user(&original).await.expect("create_user");
    let impostor = User {
        password_hash: HASH_B.to_owned(),
        ..original.clone()
    };
    let err = store
        .create_user(&impostor)
        .await
        .expect_err("a second user with the same name is refused");
    assert!(
        matches!(err, StoreError::Conflict),
        "expected Conflict, got {err:?}"
    );
    assert_eq!(get(&*store, &original.username).await, Some(original));
}

/// `get_user` returns what was created, every field; an unknown name is
/// `None`.
pub async fn get_user_returns_what_was_created(store: Arc<dyn UserStore>) {
    let u = user("user-get", HASH_A);
    store.create_user(&u).await.expect("create_user");
    assert_eq!(get(&*store, &u.username).await, Some(u));
    assert_eq!(get(&*store, &unique_user("nobody")).await, None);
}

/// `set_password` replaces that user's hash only; for an unknown user it
/// answers false and creates nothing.
pub async fn set_password_replaces_only_that_users_hash(store: Arc<dyn UserStore>) {
    let (a, b) = (user("user-pw-a", HASH_A), user("user-pw-b", HASH_A));
    store.create_user(&a).await.expect("create_user");
    store.create_user(&b).await.expect("create_user");

    assert!(
        store
            .set_password(&a.username, HASH_B)
            .await
            .expect("set_password")
    );
    let changed = get(&*store, &a.username).await.expect("still there");
    assert_eq!(changed.password_hash, HASH_B);
    assert_eq!(changed.created_at, a.created_at, "only the hash changes");
    assert_eq!(
        get(&*store, &b.username).await,
        Some(b),
        "another user keeps their hash"
    );

    let ghost = unique_user("user-pw-ghost");
    assert!(
        !store
            .set_password(&ghost, HASH_B)
            .await
            .expect("set_password")
    );
    assert_eq!(
        get(&*store, &ghost).await,
        None,
        "set_password never creates"
    );
}

/// `delete_user` removes that user only, answers false the second time,
/// and frees the name for a new user.
pub async fn delete_user_removes_only_that_user(store: Arc<dyn UserStore>) {
    let (a, b) = (user("user-del-a", HASH_A), user("user-del-b", HASH_A));
    store.create_user(&a).await.expect("create_user");
    store.create_user(&b).await.expect("create_user");

    assert!(store.delete_user(&a.username).await.expect("delete_user"));
    assert_eq!(get(&*store, &a.username).await, None);
    assert_eq!(
        get(&*store, &b.username).await,
        Some(b),
        "another user is kept"
    );
    assert!(
        !store.delete_user(&a.username).await.expect("delete_user"),
        "already gone"
    );

    let again = User {
        password_hash: HASH_B.to_owned(),
        ..a
    };
    store
        .create_user(&again)
        .await
        .expect("the name is free again");
    assert_eq!(get(&*store, &again.username).await, Some(again));
}
