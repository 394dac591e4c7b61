//! Access tokens over HTTP (RFC 9068 claims, `exp` capped by the session).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use time::OffsetDateTime;

use crate::harness::*;

fn claims_of(access: &str) -> Value {
    let payload = access.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn access_tokens_carry_the_configured_client_id_and_auth_time() {
    let app = App::start_with(|raw| raw.set("client_id", "shop-frontend")).await;
    let t = app.bearer_session("alice").await;
    let claims = claims_of(&t.access);
    assert_eq!(claims["client_id"], "shop-frontend");
    let session = app.admin_view(&t.session_id).await;
    let created = OffsetDateTime::parse(
        session["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(claims["auth_time"], created.unix_timestamp());
    for name in ["iss", "aud", "sub", "sid", "iat", "exp", "jti"] {
        assert!(!claims[name].is_null(), "{name} missing: {claims}");
    }
}

#[tokio::test]
async fn a_short_absolute_lifetime_caps_exp_access_expires_at_and_expires_in() {
    let app = App::start_with(|raw| {
        raw.set("access_token_ttl", "15m")?;
        raw.set("absolute_lifetime", "2m")
    })
    .await;
    let t = app.bearer_session("alice").await;
    let claims = claims_of(&t.access);
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert!(exp - iat <= 120, "exp {exp} not capped (iat {iat})");
    let expires_at = OffsetDateTime::parse(
        t.body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(exp, expires_at.unix_timestamp());
    let access_expires_at = OffsetDateTime::parse(
        t.body["access_expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(access_expires_at.unix_timestamp(), exp);
    let expires_in = t.body["expires_in"].as_i64().unwrap();
    assert!((118..=120).contains(&expires_in), "expires_in {expires_in}");
}
