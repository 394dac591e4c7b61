//! A password change and a revoke-all beat logins already in flight, on
//! every store: old-password logins race the change over real HTTP, and
//! afterwards no session they opened can be refreshed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::sync::Mutex;

use crate::harness::*;

/// Logins running at once.
const WORKERS: usize = 24;

/// A login that was answered 200.
struct Opened {
    answered: Instant,
    refresh: String,
    session_id: String,
}

fn unique(label: &str) -> String {
    format!("race-{label}-{}", uuid_like())
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{t:x}-{}", std::process::id())
}

/// Keeps `WORKERS` logins of `user` with `password` in flight; once at
/// least `WORKERS / 2` have succeeded, runs `change` and stops. Returns
/// the successful logins and when the change was sent and answered.
async fn logins_racing<F, Fut>(
    app: &Arc<App>,
    user: &str,
    password: &str,
    change: F,
) -> (Vec<Opened>, Instant, Instant)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let opened = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (app, opened, stop) = (Arc::clone(app), Arc::clone(&opened), Arc::clone(&stop));
            let (user, password) = (user.to_owned(), password.to_owned());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let r = app.login_bearer(&user, &password).await;
                    let answered = Instant::now();
                    match r.status() {
                        StatusCode::OK => {
                            let t = Tokens::from_body(r.json().await.unwrap());
                            opened.lock().await.push(Opened {
                                answered,
                                refresh: t.refresh,
                                session_id: t.session_id,
                            });
                        }
                        // Refused, or shed under load (fail closed): no session.
                        StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE => {}
                        other => panic!("a racing login got {other}"),
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while opened.lock().await.len() < WORKERS / 2 {
        assert!(Instant::now() < deadline, "logins did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = Instant::now();
    change().await;
    let returned = Instant::now();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    let opened = std::mem::take(&mut *opened.lock().await);
    (opened, sent, returned)
}

/// Refreshes every session in `must_die`; returns how many still rotated.
async fn survivors(app: &App, must_die: &[&Opened]) -> usize {
    let mut alive = 0;
    for o in must_die {
        let status = app.refresh_bearer(&o.refresh).await.status();
        if status == StatusCode::OK {
            alive += 1;
        } else {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    alive
}

fn instant(v: &serde_json::Value) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        v.as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

/// Rounds of password changes, then rounds of revoke-alls, each racing
/// `WORKERS` logins in flight. Every session opened with a password that
/// was then changed is dead. Every session the server created before a
/// revoke-all took effect (its `created_at`, taken after the password
/// check, is before the revoke-all's revocation time) is dead, including
/// those whose login was still in flight when the revoke-all came. (The
/// client's own clock cannot order them: under load a login sent before
/// the revoke-all may be taken up after it, and one answered before the
/// revoke-all's answer arrived may have been created after it.)
async fn changes_beat_logins_in_flight(app: App) {
    let app = Arc::new(app);
    let user = unique("user");
    app.add_user(&user).await;
    let mut password = PASSWORD.to_owned();
    let mut in_flight = 0;
    let mut checked = 0;
    for round in 0..2 {
        let new = format!("the new password number {round}");
        let (opened, sent, _) = logins_racing(&app, &user, &password, || async {
            let r = app
                .admin_req(Method::POST, &format!("/admin/v1/users/{user}/password"))
                .json(&json!({ "password": new }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        })
        .await;
        in_flight += opened.iter().filter(|o| o.answered > sent).count();
        let all: Vec<&Opened> = opened.iter().collect();
        checked += all.len();
        assert_eq!(
            survivors(&app, &all).await,
            0,
            "round {round}: an old-password session survived the password change ({} opened, {} of them answered after the change was sent)",
            all.len(),
            all.iter().filter(|o| o.answered > sent).count(),
        );
        password = new;
    }
    for round in 0..2 {
        let (opened, sent, returned) = logins_racing(&app, &user, &password, || async {
            let r = app
                .admin_req(Method::DELETE, &format!("/admin/v1/users/{user}/sessions"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        })
        .await;
        let _ = returned;
        // The revoke-all's time, from a session it revoked.
        let first = opened.iter().find(|o| o.answered < sent).unwrap();
        let cut = instant(&app.admin_view(&first.session_id).await["revoked_at"]);
        let mut before = Vec::new();
        for o in &opened {
            if instant(&app.admin_view(&o.session_id).await["created_at"]) < cut {
                before.push(o);
            }
        }
        in_flight += before.iter().filter(|o| o.answered > sent).count();
        checked += before.len();
        assert_eq!(
            survivors(&app, &before).await,
            0,
            "round {round}: a session created before the revoke-all survived it"
        );
    }
    assert!(
        checked >= 4 * WORKERS / 2,
        "the race opened too few sessions to mean anything ({checked})"
    );
    eprintln!("{checked} sessions checked, {in_flight} of them answered after the change was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_and_revoke_all_beat_logins_in_flight_on_sqlite() {
    changes_beat_logins_in_flight(App::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_and_revoke_all_beat_logins_in_flight_on_redis() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    changes_beat_logins_in_flight(App::start_with(move |raw| raw.set("store", url)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_and_revoke_all_beat_logins_in_flight_on_a_redis_cluster() {
    let nodes = std::env::var("REDIS_CLUSTER_NODES").expect(
        "REDIS_CLUSTER_NODES names a 3-node cluster; run the tests through `cargo xtask test`",
    );
    let url = format!("redis+cluster://{nodes}");
    changes_beat_logins_in_flight(App::start_with(move |raw| raw.set("store", url)).await).await;
}
