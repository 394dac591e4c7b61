//! An axum app that is its own session service: login, refresh and logout
//! with session-core on the app's Redis, its routes protected by
//! session-axum. `main.rs` runs it; the tests drive it over HTTP.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use session_axum::{Authenticated, SessionLayer, ValidationMode};
use session_core::keys::{KeyRing, SigningAlgorithm, VerifyPolicy};
use session_core::service::{Issued, ServiceConfig, ServiceError, ServiceParts, SessionService};
use session_core::{Actor, ClientInfo, Clock as _, RevokeReason, SystemClock, TokenSecrets};
use session_store_redis::RedisStore;

/// Builds the service on the Redis at `redis_url` (keys under `prefix`).
/// `master` (32 random bytes, kept secret) derives the refresh-token and
/// CSRF keys; the signing key is generated here, so tokens do not survive
/// a restart of this example (session-server keeps its key ring sealed in
/// the store).
pub async fn service(
    redis_url: &str,
    prefix: &str,
    master: &[u8; 32],
) -> anyhow::Result<(Arc<SessionService>, Arc<RedisStore>)> {
    let store = Arc::new(RedisStore::connect(redis_url, prefix).await?);
    let policy = VerifyPolicy {
        issuer: "example-app".into(),
        audience: "example-app".into(),
        leeway: time::Duration::seconds(30),
    };
    let keys = KeyRing::generate(SigningAlgorithm::EdDSA, policy, SystemClock.now(), None)?;
    let service = SessionService::new(ServiceParts {
        sessions: store.clone(),
        users: store.clone(),
        // No durable audit here; session-store-postgres or the SQLite
        // store give one.
        audit: Arc::new(session_core::TracingAuditLog),
        keys: Arc::new(keys),
        secrets: TokenSecrets::from_master(master),
        clock: Arc::new(SystemClock),
        config: ServiceConfig::default(),
    });
    Ok((Arc::new(service), store))
}

/// The app: `POST /login`, `POST /refresh`, `POST /logout`, `GET /me`.
pub fn app(service: Arc<SessionService>, store: Arc<RedisStore>) -> Router {
    let layer = SessionLayer::with_feed(service.clone(), ValidationMode::Cached, store);
    Router::new()
        .route("/login", post(login))
        .route("/refresh", post(refresh))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .layer(layer)
        .with_state(service)
}

#[derive(Deserialize)]
struct Login {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct Refresh {
    refresh_token: String,
}

fn tokens(issued: &Issued) -> Response {
    Json(json!({
        "access_token": issued.access_token.expose(),
        "refresh_token": issued.refresh_token.expose(),
        "session_id": issued.session.id.to_string(),
    }))
    .into_response()
}

fn refused(e: &ServiceError) -> Response {
    let (status, code) = match e {
        ServiceError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
        ServiceError::InvalidRefreshToken
        | ServiceError::RefreshTokenReused
        | ServiceError::SessionRevoked => (StatusCode::UNAUTHORIZED, "invalid_refresh_token"),
        ServiceError::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
    };
    (status, Json(json!({ "error": code }))).into_response()
}

async fn login(State(service): State<Arc<SessionService>>, Json(req): Json<Login>) -> Response {
    match service
        .login(&req.username, &req.password, &ClientInfo::default())
        .await
    {
        Ok(issued) => tokens(&issued),
        Err(e) => refused(&e),
    }
}

async fn refresh(State(service): State<Arc<SessionService>>, Json(req): Json<Refresh>) -> Response {
    match service
        .refresh(&req.refresh_token, &ClientInfo::default())
        .await
    {
        Ok(issued) => tokens(&issued),
        Err(e) => refused(&e),
    }
}

async fn logout(State(service): State<Arc<SessionService>>, auth: Authenticated) -> Response {
    match service
        .revoke(
            &auth.session_id,
            RevokeReason::Logout,
            Actor::User,
            &ClientInfo::default(),
        )
        .await
    {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => refused(&e),
    }
}

async fn me(auth: Authenticated) -> String {
    auth.claims.sub
}
