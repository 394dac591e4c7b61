//! An app behind session-server that has only its JWKS: `GET /hello`
//! greets the token's user. `main.rs` runs it; the tests drive it against
//! a real session-server.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use session_axum::{Authenticated, JwksVerifier, SessionLayer};
use session_core::keys::{SigningAlgorithm, VerifyPolicy};

/// Fetches `jwks_url` (session-server's `/.well-known/jwks.json`) and
/// builds the app; the keys are re-read every five minutes.
pub async fn app(jwks_url: &str) -> anyhow::Result<Router> {
    let verifier: Arc<JwksVerifier> = JwksVerifier::fetch(
        jwks_url,
        SigningAlgorithm::EdDSA,
        VerifyPolicy {
            issuer: "session-server".into(),
            audience: "session-server".into(),
            leeway: time::Duration::seconds(30),
        },
    )
    .await?;
    verifier.spawn_refresh(std::time::Duration::from_secs(300));
    Ok(Router::new()
        .route("/hello", get(hello))
        .layer(SessionLayer::jwks(verifier)))
}

async fn hello(auth: Authenticated) -> String {
    format!("hello, {}", auth.claims.sub)
}
