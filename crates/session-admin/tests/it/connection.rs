//! Where the URL and token come from, and what each failure exits with.

use crate::harness::{Env, bare_cli, run};

#[tokio::test]
async fn a_wrong_token_exits_1_with_the_servers_code_and_never_shows_a_token() {
    let env = Env::start().await;
    for json in [false, true] {
        let mut args = vec!["keys", "list"];
        if json {
            args.push("--json");
        }
        let mut cmd = env.cli();
        cmd.env("SESSION_ADMIN_TOKEN", "sat_not-the-right-token");
        let out = run(cmd, &args, None).await;
        let line = out.fails(1);
        assert!(
            line.starts_with("error: ") && line.contains("unauthorized: "),
            "{line}"
        );
        for output in [&out.stdout, &out.stderr] {
            assert!(!output.contains("sat_not-the-right-token"));
            assert!(!output.contains(&env.server.admin_token()));
        }
    }
}

#[tokio::test]
async fn the_token_comes_from_a_file_the_environment_or_the_data_dir() {
    let env = Env::start().await;
    // The data dir (what `Env::cli` sets up) works with no other set-up.
    env.run(&["keys", "list"]).await.ok();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{}\n", env.server.admin_token())).unwrap();
    let mut cmd = bare_cli();
    cmd.env("SESSION_ADMIN_URL", env.server.admin_url());
    run(
        cmd,
        &["keys", "list", "--token-file", file.to_str().unwrap()],
        None,
    )
    .await
    .ok();

    let mut cmd = bare_cli();
    cmd.env("SESSION_ADMIN_TOKEN", env.server.admin_token());
    run(
        cmd,
        &["keys", "list", "--url", &env.server.admin_url()],
        None,
    )
    .await
    .ok();
}

#[tokio::test]
async fn no_token_anywhere_is_a_usage_error_naming_the_file() {
    let env = Env::start().await;
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = bare_cli();
    cmd.env("SESSION_ADMIN_URL", env.server.admin_url());
    let out = run(
        cmd,
        &["keys", "list", "--data-dir", empty.path().to_str().unwrap()],
        None,
    )
    .await;
    let line = out.fails(2);
    assert!(line.contains("admin-token"), "{line}");
}

#[tokio::test]
async fn a_server_that_is_down_exits_3_for_every_command() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    for args in [
        &["status"][..],
        &["status", "--json"][..],
        &["keys", "list"][..],
        &["sessions", "list", "--user", "alice", "--json"][..],
        &["audit"][..],
    ] {
        let mut cmd = bare_cli();
        cmd.env("SESSION_ADMIN_URL", &url)
            .env("SESSION_ADMIN_TOKEN", "sat_whatever-token");
        let out = run(cmd, args, None).await;
        let line = out.fails(3);
        assert!(line.contains("cannot reach the server"), "{args:?}: {line}");
        if args.contains(&"--json") && args[0] == "status" {
            let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            assert_eq!(doc["reachable"], false);
        }
    }
}

#[tokio::test]
async fn bad_usage_exits_2_and_help_documents_the_exit_codes() {
    let out = run(bare_cli(), &["sessions", "revoke"], None).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    let out = run(
        bare_cli(),
        &["users", "add", "alice", "hunter2hunter2"],
        None,
    )
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);

    let help = run(bare_cli(), &["--help"], None).await;
    let text = help.ok();
    for code in [
        "0  done",
        "1  the server refused",
        "2  usage",
        "3  cannot reach the server",
        "4  not found",
    ] {
        assert!(text.contains(code), "{code:?} not in --help:\n{text}");
    }
}

#[tokio::test]
async fn completions_and_the_manual_print_without_a_server() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(bare_cli(), &["completions", shell], None).await;
        assert!(out.ok().contains("session-admin"), "{shell}");
    }
    let man = run(bare_cli(), &["man"], None).await;
    let text = man.ok();
    assert!(text.starts_with(".ie") || text.contains(".TH"), "{text}");
    assert!(text.contains("session\\-admin"), "{text}");
}
