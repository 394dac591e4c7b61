//! Checks of the DPoP parts of a [`SessionStore`] (RFC 9449): the `jti`
//! replay set and a session's key binding.

use std::sync::Arc;

use session_core::dpop::Jkt;
use session_core::rotation::RefreshOutcome;
use session_core::session::Lifetimes;
use session_core::store::SessionStore;

use crate::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::ApplyRefresh as _;

fn random_key() -> [u8; 32] {
    session_core::secret::random_bytes::<32>()
}

/// A proof is accepted once: the first `remember` is `true`, a replay is
/// `false`, another proof is unaffected, and of many concurrent first
/// presentations of one proof exactly one wins.
pub async fn a_dpop_proof_is_remembered_once(store: Arc<dyn SessionStore>) {
    let now = base_time();
    let until = secs(now, 61);
    let key = random_key();
    assert!(
        store.remember_dpop_proof(&key, until, now).await.unwrap(),
        "first presentation"
    );
    assert!(
        !store
            .remember_dpop_proof(&key, until, secs(now, 1))
            .await
            .unwrap(),
        "a replay inside the window is refused"
    );
    assert!(
        store
            .remember_dpop_proof(&random_key(), until, now)
            .await
            .unwrap(),
        "another proof is its own"
    );

    let key = random_key();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.remember_dpop_proof(&key, until, now).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        winners += usize::from(t.await.unwrap());
    }
    assert_eq!(winners, 1, "exactly one concurrent presentation wins");
}

/// A session's DPoP binding is stored with it, survives a refresh by the
/// same key, and a refresh without that key changes nothing.
pub async fn a_dpop_binding_is_stored_and_enforced_on_refresh(store: Arc<dyn SessionStore>) {
    let secrets = secrets();
    let now = base_time();
    let jkt = Jkt::from_digest(random_key());
    let (mut session, _, presented) =
        open_session(&secrets, &unique_user("dpop"), &Lifetimes::default(), now);
    session.dpop_jkt = Some(jkt.clone());
    store.create(&session).await.unwrap();
    let got = store.get(&session.id).await.unwrap().unwrap();
    assert_eq!(got, session, "the binding reads back");

    let (_, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&presented, &next, &params(default_grace()), secs(now, 5))
        .await
        .unwrap();
    assert_eq!(result.outcome, RefreshOutcome::DpopKeyMismatch);
    assert_eq!(
        store.get(&session.id).await.unwrap().unwrap(),
        session,
        "a refresh without the key writes nothing"
    );

    let mut with_key = params(default_grace());
    with_key.client.dpop_jkt = Some(jkt.clone());
    let result = store
        .refresh(&presented, &next, &with_key, secs(now, 6))
        .await
        .unwrap();
    assert_eq!(result.outcome, RefreshOutcome::Rotated);
    let got = store.get(&session.id).await.unwrap().unwrap();
    assert_eq!(got.dpop_jkt, Some(jkt), "the binding survives the rotation");
    assert_eq!(got.refresh.generation, 1);
}
