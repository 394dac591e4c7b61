//! Access tokens as the service issues them (RFC 9068): `client_id`,
//! `auth_time`, and an `exp` never past the session's absolute deadline.

use std::sync::Arc;

use session_core::Clock as _;
use session_core::anomaly::ClientInfo;
use session_core::audit::Actor;
use session_core::clock::ManualClock;
use session_core::keys::{KeyRing, SigningAlgorithm, VerifyPolicy};
use session_core::memory::MemoryStore;
use session_core::service::{ServiceConfig, ServiceParts, SessionService};
use session_core::session::Lifetimes;
use time::Duration;

fn service(lifetimes: Lifetimes, client_id: &str) -> (SessionService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at_epoch());
    let store = Arc::new(MemoryStore::new());
    let policy = VerifyPolicy {
        issuer: "session-server".into(),
        audience: "session-server".into(),
        leeway: Duration::seconds(60),
    };
    let keys = KeyRing::generate(SigningAlgorithm::EdDSA, policy, clock.now(), None).unwrap();
    let service = SessionService::new(ServiceParts {
        sessions: store.clone(),
        users: store.clone(),
        audit: store,
        keys: Arc::new(keys),
        secrets: session_conformance::fixtures::secrets(),
        clock: clock.clone(),
        config: ServiceConfig {
            lifetimes,
            client_id: client_id.to_owned(),
            ..ServiceConfig::default()
        },
    });
    (service, clock)
}

#[tokio::test]
async fn access_tokens_carry_client_id_and_the_sessions_auth_time() {
    let (service, clock) = service(Lifetimes::default(), "shop-frontend");
    let opened = clock.now();
    let issued = service
        .open_session("alice", None, &ClientInfo::default(), Actor::Admin)
        .await
        .unwrap();
    let claims = service.verify_access(issued.access_token.expose()).unwrap();
    assert_eq!(claims.client_id.as_deref(), Some("shop-frontend"));
    assert_eq!(claims.auth_time, Some(opened.unix_timestamp()));

    // A refresh later keeps auth_time at the login, not the refresh.
    clock.advance(Duration::minutes(5));
    let refreshed = service
        .refresh(issued.refresh_token.expose(), &ClientInfo::default())
        .await
        .unwrap();
    let claims = service
        .verify_access(refreshed.access_token.expose())
        .unwrap();
    assert_eq!(claims.auth_time, Some(opened.unix_timestamp()));
    assert_eq!(claims.iat, clock.now().unix_timestamp());
}

#[tokio::test]
async fn an_absolute_lifetime_shorter_than_the_access_token_lifetime_caps_exp() {
    let lifetimes = Lifetimes {
        access_token: Duration::minutes(15),
        absolute_lifetime: Duration::minutes(5),
        ..Lifetimes::default()
    };
    let (service, clock) = service(lifetimes, "session-server");
    let opened = clock.now();
    let issued = service
        .open_session("alice", None, &ClientInfo::default(), Actor::Admin)
        .await
        .unwrap();
    let deadline = opened + Duration::minutes(5);
    assert_eq!(issued.session.absolute_expires_at, deadline);
    assert_eq!(issued.access_expires_at, deadline);
    let claims = service.verify_access(issued.access_token.expose()).unwrap();
    assert_eq!(claims.exp, deadline.unix_timestamp());
}

#[tokio::test]
async fn a_refresh_near_the_absolute_deadline_gets_an_access_token_ending_with_the_session() {
    let lifetimes = Lifetimes {
        access_token: Duration::minutes(15),
        absolute_lifetime: Duration::hours(1),
        ..Lifetimes::default()
    };
    let (service, clock) = service(lifetimes, "session-server");
    let opened = clock.now();
    let issued = service
        .open_session("alice", None, &ClientInfo::default(), Actor::Admin)
        .await
        .unwrap();
    assert_eq!(issued.access_expires_at, opened + Duration::minutes(15));
    clock.advance(Duration::minutes(55));
    let refreshed = service
        .refresh(issued.refresh_token.expose(), &ClientInfo::default())
        .await
        .unwrap();
    let deadline = opened + Duration::hours(1);
    assert_eq!(refreshed.access_expires_at, deadline);
    let claims = service
        .verify_access(refreshed.access_token.expose())
        .unwrap();
    assert_eq!(claims.exp, deadline.unix_timestamp());
}
