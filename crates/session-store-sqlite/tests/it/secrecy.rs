//! The file holds token digests and sealed successors, never a token.

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::SessionStore;
use session_core::rotation::RefreshOutcome;
use session_core::session::Lifetimes;

use crate::support::{bytes_on_disk, temp_store};
use session_core::ApplyRefresh as _;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_database_files_never_hold_a_plaintext_refresh_token() {
    let store = temp_store().await;
    let secrets = secrets();
    let now = base_time();
    let (session, first, p0) = open_session(
        &secrets,
        &unique_user("secrecy"),
        &Lifetimes::default(),
        now,
    );
    store.create(&session).await.unwrap();
    let (second, _, next) = mint(&secrets, &session.id, 1);
    let result = store
        .refresh(&p0, &next, &params(default_grace()), secs(now, 1))
        .await
        .unwrap();
    assert_eq!(result.outcome, RefreshOutcome::Rotated);
    assert!(
        result.session.unwrap().refresh.grace_successor.is_some(),
        "the sealed successor is stored"
    );

    let check = |bytes: &[u8]| {
        // The scan does see the data: the live token's digest is there...
        assert!(
            contains(bytes, second.digest().as_bytes()),
            "the live digest is on disk"
        );
        assert!(
            contains(bytes, session.id.to_string().as_bytes()),
            "the session id is on disk"
        );
        // ...but no token, nor any 16-character piece of its secret part.
        // (A token's text opens with its public session id and generation:
        // `srt_` and 32 base64 characters for 24 bytes. The random part and
        // the tag follow.)
        for token in [&first, &second] {
            let text = token.expose().as_bytes();
            assert!(
                !contains(bytes, text),
                "a plaintext refresh token is on disk"
            );
            for piece in text[4 + 32..].chunks(16).filter(|c| c.len() == 16) {
                assert!(
                    !contains(bytes, piece),
                    "part of a refresh token is on disk"
                );
            }
        }
    };
    // While open, the writes sit in the WAL; after closing, in the main file.
    check(&bytes_on_disk(store.guard.path()));
    store.store.close().await;
    check(&bytes_on_disk(store.guard.path()));
}

/// The sealed successor as the row holds it (read outside the store).
async fn sealed_in_row(dir: &std::path::Path, id: &session_core::SessionId) -> Option<Vec<u8>> {
    let mut raw = crate::support::raw_connection(&crate::support::db_path(dir)).await;
    sqlx::query_scalar("SELECT grace_successor FROM sessions WHERE id = ?1")
        .bind(id.to_string())
        .fetch_one(&mut raw)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sealed_successor_is_cleared_once_the_grace_window_passes() {
    let store = temp_store().await;
    let dir = store.guard.path().to_owned();
    let secrets = secrets();
    let now = base_time();
    let grace = default_grace();
    let user = unique_user("grace-clear");
    let mut rotated = Vec::new();
    let mut live = Vec::new();
    for _ in 0..2 {
        let (session, _, p0) = open_session(&secrets, &user, &Lifetimes::default(), now);
        store.create(&session).await.unwrap();
        let (_, p1, next) = mint(&secrets, &session.id, 1);
        live.push(p1);
        let result = store
            .refresh(&p0, &next, &params(grace), now)
            .await
            .unwrap();
        assert_eq!(result.outcome, RefreshOutcome::Rotated);
        assert!(sealed_in_row(&dir, &session.id).await.is_some());
        rotated.push(session.id);
    }
    let (first, second) = (rotated[0], rotated[1]);

    // Inside the window the successor stays (a replay needs it).
    store
        .purge_expired(now + grace - time::Duration::seconds(1))
        .await
        .unwrap();
    assert!(sealed_in_row(&dir, &first).await.is_some());

    // The periodic purge clears it once the window has passed, and the
    // session lives on.
    store.purge_expired(now + grace).await.unwrap();
    assert_eq!(sealed_in_row(&dir, &first).await, None);
    assert!(
        store
            .get(&first)
            .await
            .unwrap()
            .unwrap()
            .is_active(now + grace)
    );

    // So does the next refresh of a session past its window, whatever it
    // comes to (here a never-issued token, which changes nothing else).
    let later = now + grace + grace;
    let (_, _, next) = mint(&secrets, &second, 2);
    let result = store
        .refresh(&live[1], &next, &params(grace), later)
        .await
        .unwrap();
    assert_eq!(result.outcome, RefreshOutcome::Rotated);
    assert!(sealed_in_row(&dir, &second).await.is_some());
    let (_, never, _) = mint(&secrets, &second, 7);
    let (_, _, next) = mint(&secrets, &second, 8);
    let result = store
        .refresh(&never, &next, &params(grace), later + grace)
        .await
        .unwrap();
    assert_eq!(result.outcome, RefreshOutcome::Invalid);
    assert_eq!(sealed_in_row(&dir, &second).await, None);
}
