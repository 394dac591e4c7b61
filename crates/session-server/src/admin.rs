//! The admin listener: trusted backends and operators, behind the admin
//! bearer token (every route but `/healthz`).

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use session_core::audit::AuditEvent;
use session_core::keys::{KeyInfo, RotateError};
use session_core::rotation::RefreshStanding;
use session_core::wire::{AdminSessionView, CheckpointList, CheckpointView, TokenResponse};
use session_core::{Actor, AuditKind, AuditQuery, ClientInfo, RevokeReason, SessionId};
use time::OffsetDateTime;

use crate::error::ApiError;
use crate::extract::{Client, StrictJson, bearer};
use crate::health;
use crate::keyring::RingError;
use crate::state::{AppState, SignedHead};
use crate::wire::{issued_response, no_store};

/// The admin router (state applied by the caller). `more` are routes served
/// behind the admin token as well whose handlers cannot live here: the
/// OpenAPI document's, which names this module's handlers.
pub fn router(state: AppState, more: Router<AppState>) -> Router<AppState> {
    let protected = Router::new()
        .route("/admin/v1/sessions", post(create_session))
        .route("/admin/v1/introspect", post(introspect))
        .route(
            "/admin/v1/sessions/{id}",
            get(get_session).delete(revoke_session),
        )
        .route(
            "/admin/v1/users/{user_id}/sessions",
            get(list_user_sessions).delete(revoke_user_sessions),
        )
        .route("/admin/v1/users", post(create_user))
        .route(
            "/admin/v1/users/{username}",
            axum::routing::delete(delete_user),
        )
        .route("/admin/v1/users/{username}/password", post(set_password))
        .route("/admin/v1/audit", get(audit))
        .route("/admin/v1/audit/verify", post(verify_audit))
        .route(
            "/admin/v1/audit/checkpoints",
            get(list_checkpoints).post(take_checkpoint),
        )
        .route("/admin/v1/keys", get(list_keys))
        .route("/admin/v1/keys/rotate", post(rotate_keys))
        .route("/metrics", get(metrics))
        .route("/readyz", get(health::readyz))
        .merge(more)
        .layer(axum::middleware::from_fn_with_state(state, require_admin));
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(protected)
}

async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match bearer(req.headers()) {
        Some(t) if state.is_admin_token(t) => next.run(req).await,
        _ => {
            let mut res = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid admin bearer token is required",
            )
            .into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
            res
        }
    }
}

/// `POST /admin/v1/sessions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The user the backend authenticated.
    pub user_id: String,
    /// Free-form JSON object kept with the session.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The end user's IP, as the backend saw it.
    pub ip: Option<String>,
    /// The end user's user agent.
    pub user_agent: Option<String>,
    /// (v1.1) The RFC 7638 thumbprint of the DPoP key the backend checked:
    /// binds the session to it (43 characters of base64url).
    pub dpop_jkt: Option<String>,
}

fn valid_user_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "user_id must be 1 to 256 printable characters",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/admin/v1/sessions", tag = "admin", request_body = CreateSessionRequest, responses((status = 201, body = TokenResponse), (status = 401, description = "unauthorized"), (status = 422, description = "invalid_field")), security(("admin_token" = [])))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    Client(caller): Client,
    StrictJson(req): StrictJson<CreateSessionRequest>,
) -> Result<Response, ApiError> {
    state.limits.create_ip.check_client(caller.ip.as_deref())?;
    valid_user_id(&req.user_id)?;
    if let Some(m) = &req.metadata {
        if !m.is_object() {
            return Err(ApiError::unprocessable("metadata must be a JSON object"));
        }
        if serde_json::to_vec(m).map_or(true, |v| v.len() > 8192) {
            return Err(ApiError::unprocessable("metadata over 8 KiB"));
        }
    }
    if let Some(ip) = &req.ip
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        return Err(ApiError::unprocessable(
            "ip must be an IPv4 or IPv6 address",
        ));
    }
    if req.user_agent.as_ref().is_some_and(|ua| ua.len() > 512) {
        return Err(ApiError::unprocessable("user_agent over 512 bytes"));
    }
    let dpop_jkt = req
        .dpop_jkt
        .as_deref()
        .map(|j| {
            session_core::dpop::Jkt::parse(j).ok_or_else(|| {
                ApiError::unprocessable(
                    "dpop_jkt must be an RFC 7638 SHA-256 thumbprint: 43 characters of base64url",
                )
            })
        })
        .transpose()?;
    let client = ClientInfo {
        location: state.locate(req.ip.as_deref()),
        ip: req.ip,
        user_agent: req.user_agent,
        dpop_jkt,
    };
    let issued = state
        .service
        .open_session(&req.user_id, req.metadata, &client, Actor::Admin)
        .await?;
    metrics::counter!("session_sessions_created_total", "via" => "admin").increment(1);
    Ok(issued_response(&state, &issued, true, StatusCode::CREATED))
}

/// `POST /admin/v1/introspect`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectRequest {
    /// An access or refresh token.
    pub token: String,
}

#[utoipa::path(post, path = "/admin/v1/introspect", tag = "admin", request_body = IntrospectRequest, responses((status = 200, description = "{\"active\": bool, ...}")), security(("admin_token" = [])))]
pub(crate) async fn introspect(
    State(state): State<AppState>,
    StrictJson(req): StrictJson<IntrospectRequest>,
) -> Result<Response, ApiError> {
    let inactive = || {
        let mut res = Json(serde_json::json!({ "active": false })).into_response();
        no_store(&mut res);
        res
    };
    let now = state.service.now();
    if state.service.refresh_token_session(&req.token).is_some() {
        // Active only as the live token, by the rule refresh itself uses: a
        // rotated-away token (even one a grace replay would still answer)
        // cannot be used as itself.
        let Some((session, _, RefreshStanding::Live)) =
            state.service.refresh_standing(&req.token).await?
        else {
            return Ok(inactive());
        };
        let mut res = Json(serde_json::json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": session.user_id,
            "sid": session.id.to_string(),
            "exp": session.expires_at().unix_timestamp(),
            "iat": session.last_seen_at.unix_timestamp(),
        }))
        .into_response();
        no_store(&mut res);
        return Ok(res);
    }
    let Ok(claims) = state.service.verify_access(&req.token) else {
        return Ok(inactive());
    };
    let Ok(sid) = claims.sid.parse::<SessionId>() else {
        return Ok(inactive());
    };
    let active = state
        .service
        .get_active(&sid)
        .await?
        .is_some_and(|s| s.user_id == claims.sub && claims.exp > now.unix_timestamp());
    if !active {
        return Ok(inactive());
    }
    let mut body = serde_json::json!({
        "active": true,
        "token_type": "access_token",
        "iss": claims.iss,
        "aud": claims.aud,
        "sub": claims.sub,
        "sid": claims.sid,
        "iat": claims.iat,
        "exp": claims.exp,
        "jti": claims.jti,
    });
    if let Some(cnf) = &claims.cnf {
        // RFC 9449 §6.2: introspection of a bound token reports its key.
        body["cnf"] = serde_json::json!({ "jkt": cnf.jkt.as_str() });
    }
    let mut res = Json(body).into_response();
    no_store(&mut res);
    Ok(res)
}

/// An operator's note on a revocation (`?reason=…`), kept in the audit
/// event's details; the event's `reason` stays the contract's value.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RevokeNote {
    /// Free text, at most 500 characters.
    pub reason: Option<String>,
}

fn revoke_note(
    q: Result<Query<RevokeNote>, axum::extract::rejection::QueryRejection>,
) -> Result<Option<String>, ApiError> {
    let Query(q) =
        q.map_err(|_| ApiError::invalid_request("unknown or repeated query parameter"))?;
    match q.reason.filter(|r| !r.is_empty()) {
        Some(r) if r.chars().count() > 500 || r.chars().any(char::is_control) => Err(
            ApiError::unprocessable("reason must be at most 500 printable characters"),
        ),
        other => Ok(other),
    }
}

fn parse_sid(id: &str) -> Result<SessionId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found("no such session"))
}

#[utoipa::path(get, path = "/admin/v1/sessions/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 200, body = AdminSessionView), (status = 404)), security(("admin_token" = [])))]
pub(crate) async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sid = parse_sid(&id)?;
    let now = state.service.now();
    let session = state
        .service
        .get(&sid)
        .await?
        .filter(|s| !s.is_expired(now))
        .ok_or_else(|| ApiError::not_found("no such session"))?;
    Ok(Json(AdminSessionView::new(&session, now, state.geoip.is_some())).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/sessions/{id}", tag = "admin", params(("id" = String, Path)), responses((status = 204), (status = 404)), security(("admin_token" = [])))]
pub(crate) async fn revoke_session(
    State(state): State<AppState>,
    Client(client): Client,
    Path(id): Path<String>,
    note: Result<Query<RevokeNote>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let note = revoke_note(note)?;
    let sid = parse_sid(&id)?;
    let revoked = state
        .service
        .revoke_noted(
            &sid,
            RevokeReason::Admin,
            Actor::Admin,
            &client,
            note.as_deref(),
        )
        .await?;
    if revoked.is_none() {
        // Revoking a revoked session is done already; an unknown (or
        // expired) one is 404.
        let now = state.service.now();
        state
            .service
            .get(&sid)
            .await?
            .filter(|s| !s.is_expired(now))
            .ok_or_else(|| ApiError::not_found("no such session"))?;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(get, path = "/admin/v1/users/{user_id}/sessions", tag = "admin", params(("user_id" = String, Path)), responses((status = 200, description = "{\"sessions\": [...]}")), security(("admin_token" = [])))]
pub(crate) async fn list_user_sessions(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    valid_user_id(&user_id)?;
    let now = state.service.now();
    let sessions = state.service.list(&user_id).await?;
    let views: Vec<_> = sessions
        .iter()
        .map(|s| AdminSessionView::new(s, now, state.geoip.is_some()))
        .collect();
    Ok(Json(serde_json::json!({ "sessions": views })).into_response())
}

#[utoipa::path(delete, path = "/admin/v1/users/{user_id}/sessions", tag = "admin", params(("user_id" = String, Path)), responses((status = 200, description = "{\"revoked\": n}")), security(("admin_token" = [])))]
pub(crate) async fn revoke_user_sessions(
    State(state): State<AppState>,
    Client(client): Client,
    Path(user_id): Path<String>,
    note: Result<Query<RevokeNote>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let note = revoke_note(note)?;
    valid_user_id(&user_id)?;
    let n = state
        .service
        .revoke_user_noted(
            &user_id,
            RevokeReason::RevokeAll,
            Actor::Admin,
            &client,
            note.as_deref(),
        )
        .await?;
    Ok(Json(serde_json::json!({ "revoked": n })).into_response())
}

/// `POST /admin/v1/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// Login name (also the user id).
    pub username: String,
    /// Password (1 to 1024 bytes; the contract sets no minimum, so the
    /// length policy is the operator's).
    pub password: String,
}

/// `POST /admin/v1/users/{username}/password`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    /// The new password.
    pub password: String,
}

fn valid_password(p: &str) -> Result<(), ApiError> {
    if p.is_empty() || p.len() > 1024 {
        return Err(ApiError::unprocessable("password must be 1 to 1024 bytes"));
    }
    Ok(())
}

#[utoipa::path(post, path = "/admin/v1/users", tag = "admin", request_body = CreateUserRequest, responses((status = 201), (status = 409, description = "user_exists"), (status = 422)), security(("admin_token" = [])))]
pub(crate) async fn create_user(
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateUserRequest>,
) -> Result<Response, ApiError> {
    valid_user_id(&req.username)?;
    valid_password(&req.password)?;
    let _hashing = state.limits.password_work.wait_turn().await?;
    state
        .service
        .create_user(&req.username, &req.password)
        .await
        .map_err(|e| match e {
            session_core::service::ServiceError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "user_exists",
                "a user with this name exists",
            ),
            other => other.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "username": req.username, "user_id": req.username })),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/admin/v1/users/{username}", tag = "admin", params(("username" = String, Path)), responses((status = 204), (status = 404)), security(("admin_token" = [])))]
pub(crate) async fn delete_user(
    State(state): State<AppState>,
    Client(client): Client,
    Path(username): Path<String>,
) -> Result<Response, ApiError> {
    if !state.service.delete_user(&username, &client).await? {
        return Err(ApiError::not_found("no such user"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/password", tag = "admin", params(("username" = String, Path)), request_body = PasswordRequest, responses((status = 200, description = "{\"revoked\": n}"), (status = 404)), security(("admin_token" = [])))]
pub(crate) async fn set_password(
    State(state): State<AppState>,
    Client(client): Client,
    Path(username): Path<String>,
    StrictJson(req): StrictJson<PasswordRequest>,
) -> Result<Response, ApiError> {
    valid_password(&req.password)?;
    let _hashing = state.limits.password_work.wait_turn().await?;
    let n = state
        .service
        .set_password(&username, &req.password, &client)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(serde_json::json!({ "revoked": n })).into_response())
}

/// `GET /admin/v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only this user's events.
    pub user_id: Option<String>,
    /// Only this session's events.
    pub session_id: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only events at or after this RFC 3339 instant.
    pub since: Option<String>,
    /// Page size (1 to 1000; default 100).
    pub limit: Option<String>,
    /// Keyset cursor: only events older than this event id.
    pub before: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "admin", params(AuditParams), responses((status = 200, description = "{\"events\": [...], \"next_before\": id}"), (status = 422)), security(("admin_token" = [])))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) =
        query.map_err(|_| ApiError::invalid_request("unknown or repeated query parameter"))?;
    let empty = |o: Option<String>| o.filter(|s| !s.is_empty());
    let kind = empty(p.kind)
        .map(|k| k.parse::<AuditKind>())
        .transpose()
        .map_err(ApiError::unprocessable)?;
    // No event is older than 1970 or newer than 2200; clamping keeps every
    // store's time range safe without changing the answer.
    let since = empty(p.since)
        .map(|s| OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339))
        .transpose()
        .map_err(|_| ApiError::unprocessable("since must be an RFC 3339 time"))?
        .map(|t| {
            t.clamp(
                OffsetDateTime::UNIX_EPOCH,
                time::macros::datetime!(2200-01-01 00:00 UTC),
            )
        });
    let limit = match empty(p.limit) {
        None => 0,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=AuditQuery::MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::unprocessable("limit must be 1 to 1000")),
        },
    };
    let before = empty(p.before)
        .map(|b| b.parse::<uuid::Uuid>())
        .transpose()
        .map_err(|_| ApiError::unprocessable("before must be an event id"))?;
    let q = AuditQuery {
        user_id: empty(p.user_id),
        session_id: empty(p.session_id),
        kind,
        since,
        before,
        limit,
    };
    let events: Vec<AuditEvent> = state.service.audit(&q).await?;
    let next = (events.len() == usize::try_from(q.effective_limit()).unwrap_or(usize::MAX))
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(serde_json::json!({ "events": events, "next_before": next })).into_response())
}

fn audit_chain(state: &AppState) -> Result<&Arc<dyn crate::state::AuditChain>, ApiError> {
    state
        .info
        .audit_chain
        .as_ref()
        .ok_or_else(|| ApiError::not_found("the configured audit log has no hash chain"))
}

/// Walks the chain and checks every stored checkpoint's signature against
/// the key ring (live keys and the archive of dropped ones); with a body,
/// the exported checkpoints in it as well, so that a database that lost
/// its tail, or rewrote it after an export, is found.
#[utoipa::path(post, path = "/admin/v1/audit/verify", tag = "admin", request_body(content = Option<CheckpointList>, description = "optional: checkpoints exported earlier (`GET /admin/v1/audit/checkpoints`)"), responses((status = 200, description = "{\"intact\": bool, \"events\": n, \"checkpoints\": n, \"exported_checkpoints\": n, \"head\": {seq, hash}|null, \"broken\": {seq, id, problem, kid, exported}|null}; problem is one of prev_hash_mismatch, hash_mismatch, checkpoint_mismatch, checkpointed_event_missing, truncated_tail, checkpoint_signature_invalid, checkpoint_key_unknown"), (status = 400, description = "a malformed exported checkpoint"), (status = 404, description = "the audit log has no hash chain (SQLite)")), security(("admin_token" = [])))]
pub(crate) async fn verify_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let chain = audit_chain(&state)?;
    // No body (no Content-Type) is the plain check.
    let exported = if headers.contains_key(header::CONTENT_TYPE) {
        let list: CheckpointList =
            crate::extract::read_json(&headers, body, state.settings.body_limit).await?;
        list.checkpoints
            .iter()
            .map(SignedHead::try_from)
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    Ok(Json(chain.verify(state.service.keys(), &exported).await?).into_response())
}

/// Every stored checkpoint, oldest first: what `session-admin audit
/// checkpoints --export` keeps outside the database.
#[utoipa::path(get, path = "/admin/v1/audit/checkpoints", tag = "admin", responses((status = 200, body = CheckpointList), (status = 404, description = "the audit log has no hash chain (SQLite)")), security(("admin_token" = [])))]
pub(crate) async fn list_checkpoints(State(state): State<AppState>) -> Result<Response, ApiError> {
    let list = CheckpointList {
        checkpoints: audit_chain(&state)?
            .checkpoints()
            .await?
            .iter()
            .map(CheckpointView::from)
            .collect(),
    };
    Ok(Json(list).into_response())
}

/// Signs the chain's head now (the server also does so every five
/// minutes), for an export that covers everything written so far.
#[utoipa::path(post, path = "/admin/v1/audit/checkpoints", tag = "admin", responses((status = 201, body = CheckpointView, description = "the checkpoint of the current head (the same one again if nothing was written since)"), (status = 404, description = "no hash chain (SQLite), or an empty log")), security(("admin_token" = [])))]
pub(crate) async fn take_checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    let checkpoint = audit_chain(&state)?
        .checkpoint(state.service.keys(), state.service.now())
        .await?
        .ok_or_else(|| ApiError::not_found("the audit log is empty: nothing to sign"))?;
    Ok((StatusCode::CREATED, Json(CheckpointView::from(&checkpoint))).into_response())
}

#[utoipa::path(get, path = "/admin/v1/keys", tag = "admin", responses((status = 200, description = "{\"keys\": [...], \"archived\": [...]}: the ring's keys with their states, and the public halves of the keys dropped from it (kept to verify audit checkpoints they signed)")), security(("admin_token" = [])))]
pub(crate) async fn list_keys(State(state): State<AppState>) -> Response {
    let ring = state.service.keys();
    let keys: Vec<KeyInfo> = ring.keys(state.service.now());
    Json(serde_json::json!({ "keys": keys, "archived": ring.archived() })).into_response()
}

/// `?immediate=true`: a suspected compromise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateQuery {
    #[serde(default)]
    immediate: bool,
}

#[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "admin", params(("immediate" = Option<bool>, Query, description = "activate the new key now and take the signing key out of the JWKS now")), responses((status = 201, description = "{\"key\": {...}}: the new key (state next, or active when immediate)"), (status = 409, description = "rotation_pending (a next key is already scheduled) or rotation_not_supported (HS256)")), security(("admin_token" = [])))]
pub(crate) async fn rotate_keys(
    State(state): State<AppState>,
    query: Result<Query<RotateQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| {
        ApiError::invalid_request("the only parameter is immediate=true or immediate=false")
    })?;
    let info = state
        .keys
        .rotate(query.immediate)
        .await
        .map_err(|e| match e {
            RingError::Rotate(RotateError::Pending) => ApiError::new(
                StatusCode::CONFLICT,
                "rotation_pending",
                "a next key is already scheduled; it signs from its activation time",
            ),
            RingError::Rotate(RotateError::NotSupported) => ApiError::new(
                StatusCode::CONFLICT,
                "rotation_not_supported",
                "HS256 keys come from configuration (jwt_hs256_secret) and do not rotate",
            ),
            RingError::Io { .. } | RingError::Contended => {
                tracing::error!(error = %e, "rotation could not be saved; nothing changed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "keys_not_writable",
                    "the signing keys cannot be saved; nothing changed (see the runbook)",
                )
            }
            other => {
                tracing::error!(error = %other, "rotation failed");
                ApiError::internal()
            }
        })?;
    state
        .service
        .key_rotated(&info, Actor::Admin, query.immediate)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "key": info })),
    )
        .into_response())
}

#[utoipa::path(get, path = "/metrics", tag = "admin", responses((status = 200, description = "Prometheus text format")), security(("admin_token" = [])))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(outbox) = &state.info.audit_outbox {
        metrics::gauge!("session_audit_backlog").set(outbox.backlog() as f64);
    }
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
