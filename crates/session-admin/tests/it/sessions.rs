//! `sessions list|show|revoke`.

use reqwest::StatusCode;

use crate::harness::{Env, PASSWORD, rows};

#[tokio::test]
async fn listing_a_users_sessions_shows_every_active_one_in_both_modes() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let a = env.login("alice", PASSWORD).await.unwrap();
    let b = env.login("alice", PASSWORD).await.unwrap();

    let doc = env
        .run(&["sessions", "list", "--user", "alice", "--json"])
        .await
        .json();
    let sessions = doc["sessions"].as_array().unwrap();
    let mut ids: Vec<&str> = sessions
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = [a.session_id.as_str(), b.session_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);
    for s in sessions {
        assert_eq!(s["user_id"], "alice");
        for field in ["created_at", "last_seen_at", "expires_at"] {
            assert!(s[field].is_string(), "{field} in {s}");
        }
    }

    let table = env.run(&["sessions", "list", "--user", "alice"]).await;
    let text = table.ok();
    assert!(text.starts_with("SESSION"), "{text}");
    assert!(text.lines().next().unwrap().contains("LAST SEEN"), "{text}");
    assert_eq!(rows(text).len(), 2, "{text}");
    // Whole ids, so they can be pasted into `sessions revoke`; UTC here (TZ=UTC).
    assert!(
        text.contains(&a.session_id) && text.contains(&b.session_id),
        "{text}"
    );
    assert!(text.contains("+00:00"), "{text}");

    let none = env.run(&["sessions", "list", "--user", "nobody"]).await;
    assert_eq!(none.ok(), "user \"nobody\" has no active sessions\n");
}

#[tokio::test]
async fn showing_a_session_gives_its_fields_in_both_modes() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let a = env.login("alice", PASSWORD).await.unwrap();

    let doc = env
        .run(&["sessions", "show", &a.session_id, "--json"])
        .await
        .json();
    assert_eq!(doc["session_id"], a.session_id.as_str());
    assert_eq!(doc["user_id"], "alice");
    assert!(
        doc["created_at"].is_string() && doc["expires_at"].is_string(),
        "{doc}"
    );

    let text = env.run(&["sessions", "show", &a.session_id]).await;
    let text = text.ok();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.split("  ").next() == Some(name))
            .map(|l| l[name.len()..].trim().to_owned())
            .unwrap_or_else(|| panic!("no {name:?} line in {text}"))
    };
    assert!(text.starts_with("session "), "{text}");
    assert_eq!(field("session"), a.session_id);
    assert_eq!(field("user"), "alice");
    assert!(field("created").ends_with("+00:00"), "{text}");
}

#[tokio::test]
async fn an_unknown_session_exits_4() {
    let env = Env::start().await;
    let show = env
        .run(&["sessions", "show", "AAAAAAAAAAAAAAAAAAAAAA"])
        .await;
    let line = show.fails(4);
    assert!(line.contains("not_found"), "{line}");
    env.run(&["sessions", "revoke", "AAAAAAAAAAAAAAAAAAAAAA"])
        .await
        .fails(4);
    env.run(&["sessions", "show", "AAAAAAAAAAAAAAAAAAAAAA", "--json"])
        .await
        .fails(4);
}

#[tokio::test]
async fn revoking_one_session_stops_its_access_token_and_no_other() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let a = env.login("alice", PASSWORD).await.unwrap();
    let b = env.login("alice", PASSWORD).await.unwrap();

    let out = env
        .run(&[
            "sessions",
            "revoke",
            &a.session_id,
            "--reason",
            "lost phone",
        ])
        .await;
    assert_eq!(out.ok(), format!("revoked session {}\n", a.session_id));
    assert_eq!(env.whoami(&a).await, StatusCode::UNAUTHORIZED);
    assert_eq!(env.whoami(&b).await, StatusCode::OK);

    let doc = env
        .run(&["sessions", "revoke", &b.session_id, "--json"])
        .await
        .json();
    assert_eq!(doc["session_id"], b.session_id.as_str());
    assert_eq!(doc["revoked"], true);
    assert_eq!(env.whoami(&b).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_all_of_a_users_sessions_stops_their_access_tokens_at_once_and_no_one_elses() {
    let env = Env::start().await;
    env.add_user("alice").await;
    env.add_user("bob").await;
    let alice1 = env.login("alice", PASSWORD).await.unwrap();
    let alice2 = env.login("alice", PASSWORD).await.unwrap();
    let bob = env.login("bob", PASSWORD).await.unwrap();
    assert_eq!(env.whoami(&alice1).await, StatusCode::OK);

    let out = env
        .run(&["sessions", "revoke", "--user", "alice", "--yes"])
        .await;
    assert_eq!(out.ok(), "revoked 2 sessions of user \"alice\"\n");

    assert_eq!(env.whoami(&alice1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(env.whoami(&alice2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(env.whoami(&bob).await, StatusCode::OK);

    let again = env
        .run(&["sessions", "revoke", "--user", "bob", "--yes", "--json"])
        .await
        .json();
    assert_eq!(again["revoked"], 1);
    assert_eq!(env.whoami(&bob).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn revoking_a_users_sessions_from_a_script_needs_yes() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let a = env.login("alice", PASSWORD).await.unwrap();

    let out = env.run(&["sessions", "revoke", "--user", "alice"]).await;
    let line = out.fails(2);
    assert!(line.contains("--yes"), "{line}");
    assert_eq!(env.whoami(&a).await, StatusCode::OK, "nothing was revoked");
}
