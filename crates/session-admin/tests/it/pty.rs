//! The interactive paths, through a pseudo-terminal: the confirmation of
//! `sessions revoke --user` and the no-echo password prompt.

use std::time::Duration;

use reqwest::StatusCode;
use rexpect::process::WaitStatus;

use crate::harness::{BIN, Env, PASSWORD};

/// The CLI for a terminal session, pointed at `env`'s server.
fn terminal_cli(env: &Env, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("SESSION_ADMIN_TOKEN")
        .env("SESSION_ADMIN_URL", env.server.admin_url())
        .env("SESSION_DATA_DIR", env.server.data_dir())
        .env("TZ", "UTC");
    cmd
}

/// Drives `cmd` on a terminal with `script` and returns its exit code.
async fn on_terminal(
    cmd: std::process::Command,
    script: impl FnOnce(&mut rexpect::session::PtySession) + Send + 'static,
) -> i32 {
    let status = tokio::task::spawn_blocking(move || {
        let mut p = rexpect::session::spawn_command(cmd, Some(30_000)).unwrap();
        script(&mut p);
        p.exp_eof().unwrap();
        p.process().wait().unwrap()
    })
    .await
    .unwrap();
    match status {
        WaitStatus::Exited(_, code) => code,
        other => panic!("the CLI did not exit normally: {other:?}"),
    }
}

/// rpassword prints its prompt a moment before it turns echo off; a person
/// never types that fast, a test does. Wait past that moment.
fn let_echo_turn_off() {
    std::thread::sleep(Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_users_sessions_on_a_terminal_asks_first() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let a1 = env.login("alice", PASSWORD).await.unwrap();
    env.login("alice", PASSWORD).await.unwrap();

    let declined = on_terminal(
        terminal_cli(&env, &["sessions", "revoke", "--user", "alice"]),
        |p| {
            p.exp_string("Revoke all 2 active sessions of user \"alice\"? [y/N] ")
                .unwrap();
            p.send_line("n").unwrap();
            p.exp_string("error: not confirmed; nothing was revoked")
                .unwrap();
        },
    )
    .await;
    assert_eq!(declined, 2);
    assert_eq!(env.whoami(&a1).await, StatusCode::OK);

    let confirmed = on_terminal(
        terminal_cli(&env, &["sessions", "revoke", "--user", "alice"]),
        |p| {
            p.exp_string("[y/N] ").unwrap();
            p.send_line("y").unwrap();
            p.exp_string("revoked 2 sessions of user \"alice\"")
                .unwrap();
        },
    )
    .await;
    assert_eq!(confirmed, 0);
    assert_eq!(env.whoami(&a1).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_on_a_terminal_is_asked_twice_and_never_echoed() {
    let env = Env::start().await;
    let added = on_terminal(terminal_cli(&env, &["users", "add", "carol"]), |p| {
        p.exp_string("New password for carol: ").unwrap();
        let_echo_turn_off();
        p.send_line(PASSWORD).unwrap();
        let between = p.exp_string("Repeat it: ").unwrap();
        assert!(!between.contains(PASSWORD), "echoed: {between:?}");
        let_echo_turn_off();
        p.send_line(PASSWORD).unwrap();
        let rest = p.exp_string("added user \"carol\"").unwrap();
        assert!(!rest.contains(PASSWORD), "echoed: {rest:?}");
    })
    .await;
    assert_eq!(added, 0);
    env.login("carol", PASSWORD).await.unwrap();

    let differ = on_terminal(terminal_cli(&env, &["users", "passwd", "carol"]), |p| {
        p.exp_string("New password for carol: ").unwrap();
        let_echo_turn_off();
        p.send_line("first new password").unwrap();
        p.exp_string("Repeat it: ").unwrap();
        let_echo_turn_off();
        p.send_line("second new password").unwrap();
        p.exp_string("error: the two passwords differ; nothing was changed")
            .unwrap();
    })
    .await;
    assert_eq!(differ, 2);
    env.login("carol", PASSWORD).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_on_a_terminal_reports_its_progress_on_stderr() {
    let env = Env::start().await;
    env.add_user("alice").await;
    let a = env.login("alice", PASSWORD).await.unwrap();
    let session_id = a.session_id.clone();
    let code = on_terminal(terminal_cli(&env, &["audit", "export"]), move |p| {
        let before = p.exp_string("exported 1 audit event").unwrap();
        assert!(before.contains(&session_id), "{before:?}");
    })
    .await;
    assert_eq!(code, 0);
}
