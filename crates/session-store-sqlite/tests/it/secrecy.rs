//! The file holds token digests and sealed successors, never a token.

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::SessionStore;
use session_core::rotation::RefreshOutcome;
use session_core::session::Lifetimes;

use crate::support::{bytes_on_disk, temp_store};

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
