//! The OpenAPI 3.1 document of both listeners, generated from the code,
//! and the admin route that serves it. It sits above the routers (it names
//! their handlers); the app mounts its route behind the admin token.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};
use session_core::wire::{
    AdminSessionView, CheckpointList, CheckpointView, DeviceList, DeviceView, LocationView,
    SessionView, TokenResponse,
};
use utoipa::OpenApi;

use crate::admin::{CreateSessionRequest, CreateUserRequest, IntrospectRequest, PasswordRequest};
use crate::public::{LoginRequest, RefreshRequest};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "session-server",
        description = "Session security service: public listener (/v1, /.well-known, health) and admin listener (/admin/v1, /metrics)."
    ),
    paths(
        crate::public::login,
        crate::public::refresh,
        crate::public::logout,
        crate::public::whoami,
        crate::public::list_sessions,
        crate::public::revoke_own,
        crate::public::verify,
        crate::public::jwks,
        crate::health::healthz,
        crate::health::readyz,
        crate::ui::page,
        crate::admin::create_session,
        crate::admin::introspect,
        crate::admin::get_session,
        crate::admin::revoke_session,
        crate::admin::list_user_sessions,
        crate::admin::revoke_user_sessions,
        crate::admin::create_user,
        crate::admin::delete_user,
        crate::admin::set_password,
        crate::admin::audit,
        crate::admin::verify_audit,
        crate::admin::list_checkpoints,
        crate::admin::take_checkpoint,
        crate::admin::list_keys,
        crate::admin::rotate_keys,
        crate::admin::metrics,
        serve,
    ),
    modifiers(&AdminToken),
    tags(
        (name = "public", description = "Public listener (default 127.0.0.1:8080)"),
        (name = "admin", description = "Admin listener (default 127.0.0.1:8081), admin bearer token on every route but /healthz")
    ),
    components(schemas(
        LoginRequest,
        RefreshRequest,
        TokenResponse,
        SessionView,
        DeviceView,
        LocationView,
        DeviceList,
        CreateSessionRequest,
        IntrospectRequest,
        AdminSessionView,
        CreateUserRequest,
        PasswordRequest,
        CheckpointView,
        CheckpointList,
    ))
)]
struct ApiDoc;

/// The route of the document, for the admin router (which puts it behind
/// the admin token).
pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/admin/v1/openapi.json", get(serve))
}

#[utoipa::path(get, path = "/admin/v1/openapi.json", operation_id = "openapi", tag = "admin", responses((status = 200, description = "this document")), security(("admin_token" = [])))]
pub(crate) async fn serve() -> Response {
    Json(document()).into_response()
}

struct AdminToken;

impl utoipa::Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON, completed: both listeners as `servers`, the
/// security schemes on every operation, the error body on every error
/// response, query parameters where the code's extractors read them.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete(&mut doc);
    doc
}

/// The listeners' default addresses, as OpenAPI `servers`.
const PUBLIC_SERVER: &str = "http://127.0.0.1:8080";
const ADMIN_SERVER: &str = "http://127.0.0.1:8081";

/// Public routes that need no credential at all.
const OPEN_PUBLIC: &[&str] = &[
    "/v1/auth/login",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/ui/",
];

fn is_admin(path: &str) -> bool {
    path.starts_with("/admin/") || path == "/metrics"
}

/// Who may call `path`: the OpenAPI security requirement list.
fn security_for(path: &str) -> Value {
    if is_admin(path) {
        json!([{ "admin_token": [] }])
    } else if path == "/v1/auth/refresh" {
        json!([{ "refresh_cookie": [] }, {}])
    } else if OPEN_PUBLIC.contains(&path) {
        json!([{}])
    } else {
        json!([{ "session_cookie": [] }, { "bearer": [] }, { "dpop": [] }])
    }
}

fn complete(doc: &mut Value) {
    doc["servers"] = json!([
        { "url": PUBLIC_SERVER, "description": "public listener (browsers, apps, reverse proxies)" },
        { "url": ADMIN_SERVER, "description": "admin listener (trusted backends, operators)" },
    ]);
    let schemes = &mut doc["components"]["securitySchemes"];
    schemes["session_cookie"] = json!({
        "type": "apiKey", "in": "cookie", "name": crate::extract::ACCESS_COOKIE,
        "description": "cookie transport: the access token; state changes also need X-CSRF-Token",
    });
    schemes["refresh_cookie"] = json!({
        "type": "apiKey", "in": "cookie", "name": crate::extract::REFRESH_COOKIE,
        "description": "cookie transport: the refresh token (path /v1/auth, or the public URL's prefix + /v1/auth)",
    });
    schemes["bearer"] = json!({
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "bearer transport: Authorization: Bearer <access token>",
    });
    schemes["dpop"] = json!({
        "type": "http", "scheme": "DPoP",
        "description": "DPoP-bound access token (RFC 9449) with a DPoP proof header",
    });
    schemes["admin_token"] = json!({
        "type": "http", "scheme": "bearer",
        "description": "the admin token (admin listener only)",
    });
    doc["components"]["schemas"]["Error"] = json!({
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": { "type": "string", "description": "snake_case code, e.g. invalid_token" },
            "message": { "type": "string", "description": "text for humans" },
        },
        "additionalProperties": true,
    });
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let server = if is_admin(path) {
            ADMIN_SERVER
        } else {
            PUBLIC_SERVER
        };
        item["servers"] = json!([{ "url": server }]);
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in ops.iter_mut() {
            if !["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                continue;
            }
            op["security"] = security_for(path);
            fix_parameters(path, op);
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                for (status, response) in responses.iter_mut() {
                    // OpenAPI 3.1 requires a description on every response;
                    // utoipa leaves an empty one out (3.2 made it optional):
                    // give those the status's reason phrase.
                    if response.get("description").is_none() && response.get("$ref").is_none() {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or_default();
                        response["description"] = json!(reason);
                    }
                    if status.starts_with('4') || status.starts_with('5') {
                        response["content"] = json!({
                            "application/json": { "schema": { "$ref": "#/components/schemas/Error" } }
                        });
                    }
                }
                if !responses.contains_key("401") && security_for(path) != json!([{}]) {
                    responses.insert(
                        "401".into(),
                        json!({
                            "description": "missing or invalid credentials",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
                        }),
                    );
                }
            }
        }
    }
}

/// A parameter declared `in: path` that is not in the path's template is
/// read from the query string by the code (`Query<…>`): say so.
fn fix_parameters(path: &str, op: &mut Value) {
    let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        if p["in"] == "path" && !path.contains(&format!("{{{name}}}")) {
            p["in"] = json!("query");
            p["required"] = json!(false);
        }
    }
}
