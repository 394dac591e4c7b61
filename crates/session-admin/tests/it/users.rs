//! `users add|remove|passwd`, passwords from stdin (the prompt is in `pty`).

use reqwest::StatusCode;

use crate::harness::{Env, PASSWORD};

#[tokio::test]
async fn adding_a_user_takes_the_password_from_stdin_and_lets_them_log_in() {
    let env = Env::start().await;
    let out = env
        .run_with_stdin(&["users", "add", "alice"], &format!("{PASSWORD}\n"))
        .await;
    assert_eq!(out.ok(), "added user \"alice\"\n");
    assert!(!out.stderr.contains(PASSWORD) && !out.stdout.contains(PASSWORD));
    env.login("alice", PASSWORD).await.unwrap();

    let doc = env
        .run_with_stdin(&["users", "add", "bob", "--json"], "another long password")
        .await
        .json();
    assert_eq!(doc["username"], "bob");
    env.login("bob", "another long password").await.unwrap();
}

#[tokio::test]
async fn adding_a_user_twice_is_refused_by_the_server() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let out = env
        .run_with_stdin(&["users", "add", "alice"], &format!("{PASSWORD}\n"))
        .await;
    let line = out.fails(1);
    assert!(line.contains("user_exists"), "{line}");
}

#[tokio::test]
async fn a_password_the_server_finds_too_long_is_refused_with_its_code() {
    let env = Env::start().await;
    let long = "L0ng".repeat(300);
    let out = env
        .run_with_stdin(&["users", "add", "alice"], &format!("{long}\n"))
        .await;
    let line = out.fails(1);
    assert!(line.contains("password must be"), "{line}");
    assert!(!out.stderr.contains(&long) && !out.stdout.contains(&long));
}

#[tokio::test]
async fn an_empty_password_is_refused_before_any_request() {
    let env = Env::start().await;
    env.run_with_stdin(&["users", "add", "alice"], "\n")
        .await
        .fails(2);
    assert!(env.login("alice", "x").await.is_err(), "no user was made");
    // The user name is still free: nothing reached the server.
    env.add_user("alice").await;
}

#[tokio::test]
async fn changing_a_password_revokes_the_users_sessions_and_says_how_many() {
    let env = Env::start().await;
    env.add_user("alice").await;
    env.add_user("bob").await;
    let a1 = env.login("alice", PASSWORD).await.unwrap();
    let a2 = env.login("alice", PASSWORD).await.unwrap();
    let b = env.login("bob", PASSWORD).await.unwrap();

    let out = env
        .run_with_stdin(&["users", "passwd", "alice"], "a brand new password\n")
        .await;
    assert_eq!(
        out.ok(),
        "changed the password of user \"alice\"; revoked 2 sessions\n"
    );
    assert_eq!(env.whoami(&a1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(env.whoami(&a2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(env.whoami(&b).await, StatusCode::OK);
    assert_eq!(
        env.login("alice", PASSWORD).await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );
    env.login("alice", "a brand new password").await.unwrap();

    let doc = env
        .run_with_stdin(
            &["users", "passwd", "alice", "--json"],
            "yet another password\n",
        )
        .await
        .json();
    assert_eq!(doc["revoked"], 1);
}

#[tokio::test]
async fn removing_a_user_stops_their_logins_and_an_unknown_user_exits_4() {
    let env = Env::start().await;
    env.add_user("alice").await;
    env.add_user("bob").await;
    assert_eq!(
        env.run(&["users", "remove", "alice"]).await.ok(),
        "removed user \"alice\"\n"
    );
    assert_eq!(
        env.login("alice", PASSWORD).await.unwrap_err(),
        StatusCode::UNAUTHORIZED
    );

    let doc = env.run(&["users", "remove", "bob", "--json"]).await.json();
    assert_eq!(doc["username"], "bob");
    assert_eq!(doc["removed"], true);

    let line = env
        .run(&["users", "remove", "alice"])
        .await
        .fails(4)
        .to_owned();
    assert!(line.contains("not_found"), "{line}");
    env.run_with_stdin(&["users", "passwd", "carol"], "some long password\n")
        .await
        .fails(4);
}
