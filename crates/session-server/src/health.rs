//! Health checks, on both listeners: `/healthz` (the process answers) and
//! `/readyz` (every store answers; on the admin listener behind the admin
//! token).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "public", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// Readiness: every store answers. The body says which store and which
/// validation mode are in force.
#[utoipa::path(get, path = "/readyz", tag = "public", responses((status = 200, description = "stores reachable"), (status = 503, description = "store_unavailable")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let mode = state.guard.validator().effective_mode().as_str();
    let backlog = state.info.audit_outbox.as_ref().map(|o| o.backlog());
    match state.service.ready().await {
        Ok(()) => Json(serde_json::json!({
            "status": "ready",
            "store": state.info.store_kind,
            "audit": state.info.audit_kind,
            "validation_mode": mode,
            "configured_validation_mode": state.guard.validator().mode().as_str(),
            "audit_backlog": backlog,
            // "stale": the shared key ring cannot be re-read; this
            // instance signs and verifies with its last good copy.
            "keys": if state.keys.is_stale() { "stale" } else { "current" },
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({
                    "error": "store_unavailable",
                    "message": "a store cannot be reached",
                    "status": "not_ready",
                    "store": state.info.store_kind,
                    "audit": state.info.audit_kind,
                    "validation_mode": mode,
                })),
            )
                .into_response()
        }
    }
}
