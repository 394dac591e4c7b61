//! The public listener: login, refresh, logout, who-am-I, devices,
//! forward-auth, JWKS. The health checks are `health`'s, the response
//! helpers `wire`'s, the bodies `session_core::wire`'s.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use session_core::rotation::RefreshStanding;
use session_core::service::ServiceError;
use session_core::wire::{DeviceList, DeviceView, LocationView, SessionView, TokenResponse};
use session_core::{Actor, ClientInfo, RevokeReason, SessionId};

use crate::error::ApiError;
use crate::extract::{Client, REFRESH_COOKIE, StrictJson, bearer, cookie, read_json, wants_bearer};
use crate::health;
use crate::state::AppState;
use crate::wire::{issued_response, log_session, no_store};
use session_axum::{Authenticated, DpopRequest, DpopTarget, Source};

/// The public router (state applied by the caller).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/verify", get(verify))
        .route("/v1/session", get(whoami))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{session_id}", delete(revoke_own))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
}

/// Login request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Built-in user name.
    pub username: String,
    /// Password.
    pub password: String,
}

/// Bearer-transport refresh request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token.
    pub refresh_token: String,
}

/// Authenticates a request by its access token: session-axum's [`Guard`]
/// (token sources, validation, the DPoP binding for `target`).
///
/// [`Guard`]: session_axum::Guard
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    need_session: bool,
    dpop: &DpopRequest,
    target: DpopTarget,
) -> Result<(Arc<Authenticated>, Source), ApiError> {
    Ok(state
        .guard
        .authenticate(headers, need_session, dpop, target)
        .await?)
}

fn validate_login(req: &LoginRequest) -> Result<(), ApiError> {
    if req.username.is_empty()
        || req.username.len() > 256
        || req.username.chars().any(char::is_control)
    {
        return Err(ApiError::unprocessable(
            "username must be 1 to 256 printable characters",
        ));
    }
    if req.password.is_empty() || req.password.len() > 1024 {
        return Err(ApiError::unprocessable("password must be 1 to 1024 bytes"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/auth/login", tag = "public", request_body = LoginRequest, params(("X-Session-Transport" = Option<String>, Header, description = "`bearer` for tokens in the body")), responses((status = 200, description = "Signed in; cookies set in cookie transport", body = TokenResponse), (status = 401, description = "invalid_credentials"), (status = 403, description = "csrf_failed (cross-site or foreign Origin)"), (status = 429, description = "rate_limited")))]
pub(crate) async fn login(
    State(state): State<AppState>,
    Client(mut client): Client,
    dpop: DpopRequest,
    headers: HeaderMap,
    StrictJson(req): StrictJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let bearer = wants_bearer(&headers);
    if !bearer {
        state.guard.check_origin(&headers)?;
    }
    state.limits.login_ip.check_client(client.ip.as_deref())?;
    validate_login(&req)?;
    state
        .limits
        .login_user
        .check(&req.username, client.ip.as_deref())?;
    if bearer {
        client.dpop_jkt = state
            .guard
            .check_proof(&dpop, DpopTarget::This, true)
            .await?;
    }
    let _hashing = state.limits.password_work.acquire().await?;
    let issued = match state
        .service
        .login(&req.username, &req.password, &client)
        .await
    {
        Ok(issued) => issued,
        Err(e) => {
            if matches!(e, ServiceError::InvalidCredentials) {
                state
                    .limits
                    .login_user
                    .failed(&req.username, client.ip.as_deref());
            }
            return Err(e.into());
        }
    };
    metrics::counter!("session_sessions_created_total", "via" => "login").increment(1);
    Ok(issued_response(&state, &issued, bearer, StatusCode::OK))
}

#[utoipa::path(post, path = "/v1/auth/refresh", tag = "public", request_body(content = Option<RefreshRequest>, description = "bearer transport only"), responses((status = 200, body = TokenResponse), (status = 401, description = "invalid_refresh_token, refresh_token_reused or session_revoked"), (status = 403, description = "csrf_failed"), (status = 429, description = "rate_limited")))]
pub(crate) async fn refresh(
    State(state): State<AppState>,
    Client(mut client): Client,
    dpop: DpopRequest,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state.limits.refresh_ip.check_client(client.ip.as_deref())?;
    let bearer = wants_bearer(&headers);
    let token = if bearer {
        let req: RefreshRequest = read_json(&headers, body, state.settings.body_limit).await?;
        req.refresh_token
    } else {
        let token = cookie(&headers, REFRESH_COOKIE)
            .ok_or_else(|| ApiError::from(ServiceError::InvalidRefreshToken))?
            .to_owned();
        let presented = state
            .service
            .refresh_token_family(&token)
            .ok_or_else(|| ApiError::from(ServiceError::InvalidRefreshToken))?;
        // Against the presented token's generation: a grace-window replay
        // (a second tab) carries the CSRF token issued with that token.
        state
            .guard
            .check_csrf(&headers, &presented.session_id, presented.generation)?;
        token
    };
    if bearer {
        client.dpop_jkt = state
            .guard
            .check_proof(&dpop, DpopTarget::This, true)
            .await?;
    }
    match state.service.refresh(&token, &client).await {
        Ok(issued) => {
            metrics::counter!("session_refreshes_total", "outcome" => "rotated").increment(1);
            let mut res = issued_response(&state, &issued, bearer, StatusCode::OK);
            res.extensions_mut()
                .insert(crate::telemetry::Outcome("rotated"));
            Ok(res)
        }
        Err(e) => {
            let outcome = match &e {
                ServiceError::InvalidRefreshToken => "invalid",
                ServiceError::RefreshTokenReused => "reused",
                ServiceError::SessionRevoked => "revoked",
                ServiceError::DpopKeyMismatch => "dpop",
                _ => "error",
            };
            metrics::counter!("session_refreshes_total", "outcome" => outcome).increment(1);
            let err = ApiError::from(e);
            let mut res = err.into_response();
            if !bearer && outcome != "error" && outcome != "dpop" {
                state.cookies.clear(&mut res);
            }
            no_store(&mut res);
            res.extensions_mut()
                .insert(crate::telemetry::Outcome(outcome));
            Ok(res)
        }
    }
}

/// The session a logout or own-revocation acts on, with CSRF enforced for
/// cookie transport. Falls back to the refresh token when the access
/// token has expired, so a user can always sign out.
async fn caller_session(
    state: &AppState,
    headers: &HeaderMap,
    dpop: &DpopRequest,
    client: &ClientInfo,
) -> Result<SessionId, ApiError> {
    match authenticate(state, headers, false, dpop, DpopTarget::This).await {
        Ok((auth, Source::Header)) => Ok(auth.session_id),
        Ok((auth, Source::Cookie)) => {
            state
                .guard
                .check_csrf_live(headers, &auth.session_id)
                .await?;
            Ok(auth.session_id)
        }
        Err(e)
            if e.status() == StatusCode::UNAUTHORIZED
                && !wants_bearer(headers)
                && bearer(headers).is_none() =>
        {
            let token = cookie(headers, REFRESH_COOKIE).ok_or(e)?;
            state.guard.check_origin(headers)?;
            // The one rule refresh uses decides what this token is.
            let (session, presented, standing) = state
                .service
                .refresh_standing(token)
                .await?
                .ok_or_else(ApiError::invalid_token)?;
            // Against the presented token's generation, as refresh checks it.
            state
                .guard
                .check_csrf(headers, &session.id, presented.generation)?;
            match standing {
                RefreshStanding::Live | RefreshStanding::Grace => Ok(session.id),
                // A rotated-away token is a reuse wherever it is presented:
                // refresh's own path revokes the family and audits it.
                RefreshStanding::RotatedAway => {
                    Err(match state.service.refresh(token, client).await {
                        Err(e) => ApiError::from(e),
                        Ok(_) => ApiError::invalid_token(),
                    })
                }
                RefreshStanding::Unknown => Err(ApiError::invalid_token()),
            }
        }
        Err(e) => Err(e),
    }
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "public", responses((status = 204, description = "Session revoked, cookies cleared"), (status = 401, description = "invalid_token"), (status = 403, description = "csrf_failed")))]
pub(crate) async fn logout(
    State(state): State<AppState>,
    Client(client): Client,
    dpop: DpopRequest,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let sid = caller_session(&state, &headers, &dpop, &client).await?;
    // Already revoked (a racing logout) is fine: the caller is signed out.
    state
        .service
        .revoke(&sid, RevokeReason::Logout, Actor::User, &client)
        .await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    log_session(&mut res, &sid);
    state.cookies.clear(&mut res);
    res.headers_mut()
        .insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
    no_store(&mut res);
    Ok(res)
}

#[utoipa::path(get, path = "/v1/session", tag = "public", responses((status = 200, body = SessionView), (status = 401, description = "invalid_token")))]
pub(crate) async fn whoami(
    State(state): State<AppState>,
    dpop: DpopRequest,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (auth, source) = authenticate(&state, &headers, true, &dpop, DpopTarget::This).await?;
    let session = auth.session.clone().ok_or_else(ApiError::invalid_token)?;
    let mut view = SessionView::from(session.as_ref());
    if source == Source::Cookie {
        view.csrf_token = Some(state.service.csrf_token(&session).expose().to_owned());
    }
    let mut res = Json(view).into_response();
    no_store(&mut res);
    log_session(&mut res, &auth.session_id);
    Ok(res)
}

#[utoipa::path(get, path = "/v1/sessions", tag = "public", responses((status = 200, body = DeviceList), (status = 401, description = "invalid_token")))]
pub(crate) async fn list_sessions(
    State(state): State<AppState>,
    dpop: DpopRequest,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (auth, _) = authenticate(&state, &headers, false, &dpop, DpopTarget::This).await?;
    let sessions = state.service.list(&auth.claims.sub).await?;
    let body = DeviceList {
        sessions: sessions
            .iter()
            .map(|s| DeviceView {
                session_id: s.id.to_string(),
                created_at: s.created_at.into(),
                last_seen_at: s.last_seen_at.into(),
                ip: s.ip.clone(),
                user_agent: s.user_agent.clone(),
                current: s.id == auth.session_id,
                location: LocationView::of(s, state.geoip.is_some()),
            })
            .collect(),
    };
    let mut res = Json(body).into_response();
    no_store(&mut res);
    Ok(res)
}

#[utoipa::path(delete, path = "/v1/sessions/{session_id}", tag = "public", params(("session_id" = String, Path)), responses((status = 204), (status = 401, description = "invalid_token"), (status = 404, description = "not the caller's, or unknown")))]
pub(crate) async fn revoke_own(
    State(state): State<AppState>,
    Client(client): Client,
    dpop: DpopRequest,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Result<Response, ApiError> {
    let (auth, source) = authenticate(&state, &headers, false, &dpop, DpopTarget::This).await?;
    if source == Source::Cookie {
        state
            .guard
            .check_csrf_live(&headers, &auth.session_id)
            .await?;
    }
    let not_found = || ApiError::not_found("no such session");
    let target: SessionId = session_id.parse().map_err(|_| not_found())?;
    let session = state
        .service
        .get_active(&target)
        .await?
        .ok_or_else(not_found)?;
    if session.user_id != auth.claims.sub {
        return Err(not_found());
    }
    state
        .service
        .revoke(&target, RevokeReason::UserRevoked, Actor::User, &client)
        .await?
        .ok_or_else(not_found)?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    no_store(&mut res);
    Ok(res)
}

#[utoipa::path(get, path = "/v1/auth/verify", tag = "public", responses((status = 200, description = "Headers X-Session-User and X-Session-Id"), (status = 401, description = "invalid_token")))]
pub(crate) async fn verify(
    State(state): State<AppState>,
    dpop: DpopRequest,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (auth, _) = authenticate(&state, &headers, false, &dpop, DpopTarget::Original).await?;
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&auth.claims.sub) {
        h.insert("x-session-user", v);
    } else {
        // A user id that cannot travel in a header cannot be forwarded.
        return Err(ApiError::invalid_token());
    }
    if let Ok(v) = HeaderValue::from_str(&auth.claims.sid) {
        h.insert("x-session-id", v);
    }
    no_store(&mut res);
    log_session(&mut res, &auth.session_id);
    Ok(res)
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "public", responses((status = 200, description = "RFC 7517 key set")))]
pub(crate) async fn jwks(State(state): State<AppState>) -> Response {
    let mut res = Json(state.service.keys().jwks(state.service.now())).into_response();
    let max_age = crate::keyring::jwks_max_age(&state.service.keys().schedule());
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        res.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    res
}
