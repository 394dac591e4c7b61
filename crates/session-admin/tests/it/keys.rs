//! `keys list|rotate`.

use crate::harness::{Env, rows};

#[tokio::test]
async fn rotating_starts_a_new_active_key_and_retires_the_old_one() {
    let env = Env::start().await;
    let before = env.run(&["keys", "list", "--json"]).await.json();
    let keys = before["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{before}");
    let old_kid = keys[0]["kid"].as_str().unwrap().to_owned();
    assert_eq!(keys[0]["state"], "active");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert!(keys[0]["created_at"].is_string());

    let table = env.run(&["keys", "list"]).await;
    let text = table.ok();
    assert!(text.starts_with("KID"), "{text}");
    assert!(text.lines().next().unwrap().contains("AGE"), "{text}");
    assert_eq!(rows(text).len(), 1);
    assert!(rows(text)[0].starts_with(&old_kid), "{text}");

    let rotated = env.run(&["keys", "rotate", "--json"]).await.json();
    let next_kid = rotated["key"]["kid"].as_str().unwrap().to_owned();
    assert_ne!(next_kid, old_kid);
    assert_eq!(rotated["key"]["state"], "next");

    // A second scheduled rotation waits for the first: refused (exit 1).
    let refused = env.run(&["keys", "rotate"]).await;
    assert!(refused.fails(1).contains("rotation_pending"), "{refused:?}");

    let text = env.run(&["keys", "rotate", "--immediate"]).await;
    let line = text.ok();
    assert!(
        line.starts_with("signing key ") && line.contains("(EdDSA) signs now"),
        "{line}"
    );

    let after = env.run(&["keys", "list", "--json"]).await.json();
    let keys = after["keys"].as_array().unwrap();
    let state = |kid: &str| {
        keys.iter()
            .find(|k| k["kid"] == kid)
            .map(|k| k["state"].as_str().unwrap().to_owned())
    };
    // The revoked key is retired, or already dropped by the schedule (it
    // runs every second) and archived.
    assert!(
        matches!(state(&old_kid).as_deref(), Some("retired") | None),
        "{after}"
    );
    assert_eq!(state(&next_kid).as_deref(), Some("next"), "{after}");
    assert_eq!(
        keys.iter().filter(|k| k["state"] == "active").count(),
        1,
        "{after}"
    );
    let table = env.run(&["keys", "list"]).await;
    let text = table.ok();
    assert!(text.lines().next().unwrap().contains("ACTIVATED"), "{text}");

    // Once dropped, the key stays listed as archived: its public half is
    // kept for the audit checkpoints it signed.
    let started = std::time::Instant::now();
    loop {
        let doc = env.run(&["keys", "list", "--json"]).await.json();
        let archived = doc["archived"].as_array().unwrap();
        if archived.iter().any(|k| k["kid"] == old_kid.as_str()) {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{doc}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let text = env.run(&["keys", "list"]).await;
    let archived_row = rows(text.ok())
        .into_iter()
        .find(|r| r.starts_with(&old_kid))
        .unwrap_or_else(|| panic!("{}", text.stdout));
    assert!(
        archived_row.contains("archived (revoked)"),
        "{archived_row}"
    );
}
