//! The service's edge under attack: client addresses behind proxies,
//! per-client limits and lockouts, bounded password work, connection
//! timeouts, strict bodies (issue 11).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::*;

/// Bearer login as `client` (an address a trusted proxy names).
async fn login_from(app: &App, client: &str, name: &str, password: &str) -> reqwest::Response {
    app.http
        .post(app.public("/v1/auth/login"))
        .header("X-Session-Transport", "bearer")
        .header("X-Forwarded-For", client)
        .json(&json!({ "username": name, "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_forged_entry_left_of_the_client_does_not_hide_it() {
    let app = App::start_with(|raw| raw.set("trusted_proxies", "127.0.0.0/8")).await;
    app.add_user("alice").await;
    let r = login_from(&app, "not-an-ip, 203.0.113.7", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let t = Tokens::from_body(r.json().await.unwrap());
    let s: Value = app.admin_view(&t.session_id).await;
    assert_eq!(s["ip"], "203.0.113.7");
}

#[tokio::test]
async fn addresses_in_one_ipv6_64_share_one_rate_limit() {
    let app = App::start_with(|raw| {
        raw.set("trusted_proxies", "127.0.0.0/8")?;
        raw.set("rate_limit_refresh", "5")
    })
    .await;
    // Refreshes with a token that is not one: cheap, and counted.
    let refresh_from = |ip: String| {
        app.http
            .post(app.public("/v1/auth/refresh"))
            .header("X-Session-Transport", "bearer")
            .header("X-Forwarded-For", ip)
            .json(&json!({ "refresh_token": "not-a-token" }))
            .send()
    };
    let mut limited = 0;
    for i in 0..20u32 {
        let r = refresh_from(format!("2001:db8:aa:bb:{i:x}:{:x}::1", i * 7))
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(
        limited >= 14,
        "20 addresses of one /64 count as one client ({limited} limited)"
    );
    // Another /64 has its own budget.
    let r = refresh_from("2001:db8:aa:cc::1".to_owned()).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_lockout_holds_only_the_client_that_failed() {
    let app = App::start_with(|raw| {
        raw.set("trusted_proxies", "127.0.0.0/8")?;
        raw.set("rate_limit_login", "300")
    })
    .await;
    app.add_user("alice").await;
    let attacker = "198.51.100.66";
    for i in 0..10 {
        let r = login_from(&app, attacker, "alice", "guess guess guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "failure {i}");
    }
    // Ten failures within a minute: the attacker is locked out, even with
    // the right password...
    let r = login_from(&app, attacker, "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(error_code(r).await.1, "rate_limited");
    // ...while alice, elsewhere, still gets in.
    let r = login_from(&app, "203.0.113.7", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);

    // An IPv6 attacker is one client across its /64, not beyond it.
    for _ in 0..10 {
        let r = login_from(&app, "2001:db8:66::1", "alice", "guess guess guess").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = login_from(&app, "2001:db8:66::beef", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = login_from(&app, "2001:db8:67::1", "alice", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
}

/// Peak resident memory of this process (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn a_login_storm_is_bounded_refused_fast_and_leaves_others_served() {
    const STORM: usize = 48;
    const ARGON2_MIB: u64 = 19;
    let app = App::start().await;
    app.add_user("alice").await;
    let before = peak_rss();
    let logins = (0..STORM).map(|i| {
        let password = if i % 2 == 0 { PASSWORD } else { "wrong wrong" };
        app.login_bearer("alice", password)
    });
    let probes = (0..8).map(|_| async {
        app.http
            .get(app.public("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    });
    let (answers, probes) = tokio::join!(
        futures::future::join_all(logins),
        futures::future::join_all(probes)
    );
    let mut refused = 0;
    for r in answers {
        match r.status() {
            StatusCode::OK | StatusCode::UNAUTHORIZED => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(r.headers().contains_key("retry-after"));
                assert_eq!(error_code(r).await.1, "overloaded");
                refused += 1;
            }
            other => panic!("a login answered {other}"),
        }
    }
    assert!(refused > 0, "more logins at once than cores are refused");
    assert!(
        probes.iter().all(|s| *s == StatusCode::OK),
        "the store still answers everyone else: {probes:?}"
    );
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < (STORM as u64 / 2) * ARGON2_MIB * 1024 * 1024,
        "{STORM} concurrent logins grew the peak by {} MiB",
        grown / 1024 / 1024
    );
    assert_eq!(
        app.login_bearer("alice", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrongly_typed_password_is_never_echoed() {
    let app = App::start().await;
    for password in ["31415926535", "2718.2818284", "[\"hunter2hunter2\"]"] {
        let body = format!(r#"{{"username":"alice","password":{password}}}"#);
        for url in [app.public("/v1/auth/login"), app.admin("/admin/v1/users")] {
            let r = app
                .http
                .post(&url)
                .bearer_auth(app.server.admin_token())
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{url}");
            let text = r.text().await.unwrap();
            let bare = password.trim_matches(|c| "[\"]".contains(c));
            assert!(!text.contains(bare), "{url} echoed {bare}: {text}");
            assert!(text.contains("`password`"), "{text}");
        }
    }
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_a_bad_request() {
    let app = App::start().await;
    let t = app.bearer_session("alice").await;
    let introspect = serde_json::to_string(&json!([t.access])).unwrap();
    let cases = [
        (app.admin("/admin/v1/introspect"), introspect),
        (
            app.admin("/admin/v1/introspect"),
            format!("\"{}\"", t.access),
        ),
        (app.admin("/admin/v1/introspect"), "42".to_owned()),
        (app.public("/v1/auth/login"), r#"["alice","x"]"#.to_owned()),
        (app.admin("/admin/v1/sessions"), r#"["u"]"#.to_owned()),
    ];
    for (url, body) in cases {
        let r = app
            .http
            .post(&url)
            .bearer_auth(app.server.admin_token())
            .header("X-Session-Transport", "bearer")
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r).await,
            (StatusCode::BAD_REQUEST, "invalid_request".to_owned()),
            "{url} {body}"
        );
    }
}

/// The host:port of a listener URL.
fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

/// Everything the server sends until it closes, errs or `within` passes.
async fn read_all(stream: &mut tokio::net::TcpStream, within: std::time::Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_connection_refused_early_still_answers_its_next_request_or_says_close() {
    use tokio::io::AsyncWriteExt as _;
    let app = App::start().await;
    let body = r#"{"username":"alice","password":"correct horse battery"}"#;
    for (content_type, refused) in [("text/plain", "415"), ("application/json", "404")] {
        let mut s = tokio::net::TcpStream::connect(addr(&app.server.public_url()))
            .await
            .unwrap();
        // The head alone: the server answers before the body arrives...
        let target = if refused == "415" {
            "/v1/auth/login"
        } else {
            "/v1/nowhere"
        };
        s.write_all(
            format!(
                "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // ...then the body and a second request on the same connection.
        let _ = s.write_all(body.as_bytes()).await;
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await;
        let text = read_all(&mut s, std::time::Duration::from_secs(5)).await;
        let first = text.split("\r\n\r\n").next().unwrap_or_default();
        assert!(first.starts_with("HTTP/1.1 4"), "{text}");
        let said_close = first.to_ascii_lowercase().contains("connection: close");
        let answered_next =
            text.matches("HTTP/1.1 ").count() == 2 && text.contains("HTTP/1.1 200 OK");
        assert!(
            said_close || answered_next,
            "after a {refused} the connection dropped the next request: {text}"
        );
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_answered_with_connection_close() {
    use tokio::io::AsyncWriteExt as _;
    let app = App::start().await;
    let mut s = tokio::net::TcpStream::connect(addr(&app.server.public_url()))
        .await
        .unwrap();
    s.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n",
    )
    .await
    .unwrap();
    let _ = s.write_all(&[b' '; 70_000]).await;
    let text = read_all(&mut s, std::time::Duration::from_secs(5)).await;
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 413"), "{text}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
}

#[tokio::test]
async fn the_data_dir_and_every_file_in_it_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("var").join("session");
    let server = session_server::testing::TestServer::start_in(&data, |_| Ok(()))
        .await
        .unwrap();
    // Write something, so that the WAL is in use.
    let r = client()
        .post(format!("{}/admin/v1/sessions", server.admin_url()))
        .bearer_auth(server.admin_token())
        .json(&json!({ "user_id": "u" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data dir");
    assert_eq!(mode(&tmp.path().join("var")), 0o700, "its parent, made too");
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "sessions.db",
        "sessions.db-wal",
        "sessions.db-shm",
        "admin-token",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    for name in &names {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }
    server.stop().await;
}

/// A server whose connection timeouts are short enough to watch.
async fn impatient(configure: &[(&str, &str)]) -> App {
    let configure: Vec<(String, String)> = configure
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    App::start_with(move |raw| {
        raw.set("header_read_timeout", "1")?;
        raw.set("keepalive_timeout", "2")?;
        raw.set("request_timeout", "1")?;
        for (k, v) in &configure {
            raw.set(k, v.clone())?;
        }
        Ok(())
    })
    .await
}

/// Whether the server has closed `s`: it reads end-of-stream or an error
/// within `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slowloris_connections_are_closed_within_the_header_timeout() {
    use tokio::io::AsyncWriteExt as _;
    let app = impatient(&[]).await;
    let public = addr(&app.server.public_url());
    let started = std::time::Instant::now();
    let attackers = (0..20).map(|i| {
        let public = public.clone();
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(&public).await.unwrap();
            if i % 4 == 0 {
                // Connects and says nothing.
                return closed_within(&mut s, std::time::Duration::from_secs(5)).await;
            }
            let _ = s
                .write_all(b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\n")
                .await;
            // A header line every 200 ms, never the blank line that ends them.
            for n in 0..25 {
                if s.write_all(format!("X-Slow-{n}: a\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return true;
                }
                if closed_within(&mut s, std::time::Duration::from_millis(200)).await {
                    return true;
                }
            }
            false
        })
    });
    for closed in futures::future::join_all(attackers).await {
        assert!(
            closed.unwrap(),
            "a partial head held its connection for 5 s"
        );
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "closed after {:?} with a 1 s header timeout",
        started.elapsed()
    );
    // The server still serves.
    assert_eq!(
        app.http
            .get(app.public("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// A connection to `app` that has had one request answered and is now
/// idle, kept alive.
async fn kept_alive(app: &App) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut s = tokio::net::TcpStream::connect(addr(&app.server.public_url()))
        .await
        .unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let app = impatient(&[("header_read_timeout", "10")]).await;
    let mut s = kept_alive(&app).await;
    let idle = std::time::Instant::now();
    assert!(
        closed_within(&mut s, std::time::Duration::from_secs(6)).await,
        "an idle connection stayed open"
    );
    let waited = idle.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(1500),
        "closed after {waited:?}, before the 2 s keep-alive timeout"
    );
}

#[tokio::test]
async fn a_partial_head_after_an_idle_pause_gets_the_header_timeout_not_the_keepalive_one() {
    use tokio::io::AsyncWriteExt as _;
    // The connection's watchdog sleeps towards the 10 s keep-alive deadline
    // while it is idle; the first bytes of the next head must bring its
    // 1 s header deadline forward.
    let app = impatient(&[("keepalive_timeout", "10")]).await;
    let mut s = kept_alive(&app).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut s, std::time::Duration::from_secs(5)).await,
        "a partial head held its connection for 5 s"
    );
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(700),
        "closed after {waited:?}, before the 1 s header timeout"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_times_out_the_request() {
    use tokio::io::AsyncWriteExt as _;
    let app = impatient(&[("header_read_timeout", "10"), ("keepalive_timeout", "10")]).await;
    let mut s = tokio::net::TcpStream::connect(addr(&app.server.public_url()))
        .await
        .unwrap();
    s.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"username\":",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let text = read_all(&mut s, std::time::Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    assert!(head.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(body.contains("\"request_timeout\""), "{body}");
}

/// Whether an answer starts arriving on `s` within `within` ms.
async fn answer(s: &mut tokio::net::TcpStream, within: u64) -> bool {
    let mut buf = [0u8; 1024];
    matches!(
        tokio::time::timeout(
            std::time::Duration::from_millis(within),
            tokio::io::AsyncReadExt::read(s, &mut buf)
        )
        .await,
        Ok(Ok(n)) if n > 0
    )
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    use tokio::io::AsyncWriteExt as _;
    let app = impatient(&[
        ("max_connections", "3"),
        ("header_read_timeout", "10"),
        ("keepalive_timeout", "10"),
    ])
    .await;
    let public = addr(&app.server.public_url());
    let request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(&public).await.unwrap();
        s.write_all(request).await.unwrap();
        assert!(answer(&mut s, 2000).await);
        held.push(s);
    }
    let mut fourth = tokio::net::TcpStream::connect(&public).await.unwrap();
    fourth.write_all(request).await.unwrap();
    assert!(
        !answer(&mut fourth, 500).await,
        "a fourth connection was served past a cap of three"
    );
    drop(held.pop());
    assert!(
        answer(&mut fourth, 3000).await,
        "the waiting connection is served once one closes"
    );
}
