//! Every key expires exactly at the deadline of the session(s) it serves.

use session_conformance::fixtures::{
    base_time, default_grace, mint, open_session, params, secrets, secs, unique_user,
};
use session_core::rotation::RefreshOutcome;
use session_core::{Lifetimes, RevokeReason, SessionStore};
use time::Duration;

use crate::{Probe as _, both_stores, ms};
use session_core::ApplyRefresh as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_key_expires_at_the_sessions_deadline_and_follows_it_on_rotation() {
    for store in both_stores().await {
        let secrets = secrets();
        let now = base_time();
        let user = unique_user("ttl");
        let (session, _, p0) = open_session(&secrets, &user, &Lifetimes::default(), now);
        store.create(&session).await.unwrap();

        let s_key = store.store.session_key(&session.id);
        let g_key = store.store.grace_key(&session.id);
        let u_key = store.store.user_index_key(&user);
        let deadline = ms(session.expires_at());
        assert_eq!(store.pexpiretime(&s_key), deadline, "session key");
        assert_eq!(
            store.pexpiretime(&u_key),
            ms(session.absolute_expires_at),
            "the index lives until the latest absolute deadline of its sessions"
        );
        assert_eq!(
            store.pexpiretime(&g_key),
            -2,
            "no grace successor before a rotation"
        );

        // A rotation an hour later pushes the idle deadline, and the key
        // with it; the sealed successor lives for the grace window only
        // (plus a 60 s margin for clock skew).
        let later = secs(now, 3600);
        let (_, _, next) = mint(&secrets, &session.id, 1);
        let r = store
            .refresh(&p0, &next, &params(default_grace()), later)
            .await
            .unwrap();
        assert_eq!(r.outcome, RefreshOutcome::Rotated);
        let rotated = r.session.unwrap();
        let new_deadline = ms(rotated.expires_at());
        assert_eq!(new_deadline, deadline + 3_600_000);
        assert_eq!(
            store.pexpiretime(&s_key),
            new_deadline,
            "session key after rotation"
        );
        assert_eq!(
            store.pexpiretime(&g_key),
            ms(later + default_grace() + Duration::seconds(60)),
            "grace successor"
        );
        assert_eq!(
            store.pexpiretime(&u_key),
            ms(session.absolute_expires_at),
            "index"
        );

        // A revoked tombstone keeps its key until that same deadline, and
        // its sealed successor is gone at once.
        store
            .revoke(&session.id, RevokeReason::Logout, later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.pexpiretime(&s_key), new_deadline, "tombstone");
        assert_eq!(
            store.pexpiretime(&g_key),
            -2,
            "no successor after revocation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_absolute_deadline_caps_the_key_expiry() {
    for store in both_stores().await {
        let secrets = secrets();
        let now = base_time();
        let lifetimes = Lifetimes {
            idle_timeout: Duration::days(14),
            absolute_lifetime: Duration::hours(2),
            ..Lifetimes::default()
        };
        let (session, _, p0) = open_session(&secrets, &unique_user("abs"), &lifetimes, now);
        store.create(&session).await.unwrap();
        let s_key = store.store.session_key(&session.id);
        assert_eq!(store.pexpiretime(&s_key), ms(secs(now, 7200)));

        let (_, _, next) = mint(&secrets, &session.id, 1);
        let r = store
            .refresh(&p0, &next, &params(default_grace()), secs(now, 60))
            .await
            .unwrap();
        assert_eq!(r.outcome, RefreshOutcome::Rotated);
        assert_eq!(
            store.pexpiretime(&s_key),
            ms(secs(now, 7200)),
            "rotation never passes the absolute deadline"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_index_lives_as_long_as_its_longest_lived_session() {
    for store in both_stores().await {
        let secrets = secrets();
        let now = base_time();
        let user = unique_user("index");
        let long = Lifetimes::default();
        let short = Lifetimes {
            idle_timeout: Duration::hours(1),
            absolute_lifetime: Duration::hours(2),
            ..Lifetimes::default()
        };
        let (a, _, _) = open_session(&secrets, &user, &long, now);
        let (b, _, _) = open_session(&secrets, &user, &short, secs(now, 1));
        store.create(&a).await.unwrap();
        store.create(&b).await.unwrap();
        let u_key = store.store.user_index_key(&user);
        assert_eq!(store.pexpiretime(&u_key), ms(a.absolute_expires_at));
        assert_eq!(
            store.pexpiretime(&store.store.session_key(&b.id)),
            ms(b.expires_at())
        );
        assert_eq!(
            store.pexpiretime(&store.store.session_key(&a.id)),
            ms(a.expires_at())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_records_never_expire() {
    use session_core::UserStore;
    use session_core::user::User;
    for store in both_stores().await {
        let name = unique_user("u");
        store
            .create_user(&User {
                username: name.clone(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                created_at: base_time(),
            })
            .await
            .unwrap();
        let keys = store.keys();
        let user_key = keys
            .iter()
            .find(|k| k.contains(":user:"))
            .expect("a user key");
        assert_eq!(store.pexpiretime(user_key), -1);
    }
}
