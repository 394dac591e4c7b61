//! The OpenAPI 3.1 document of both listeners, generated from the code.

use utoipa::OpenApi;

use crate::admin::{
    AdminSessionView, CreateSessionRequest, CreateUserRequest, IntrospectRequest, PasswordRequest,
};
use crate::public::{
    DeviceList, DeviceView, LoginRequest, RefreshRequest, SessionView, TokenResponse,
};

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
        crate::public::healthz,
        crate::public::readyz,
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
        crate::admin::list_keys,
        crate::admin::rotate_keys,
        crate::admin::metrics,
        crate::admin::openapi,
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
        DeviceList,
        CreateSessionRequest,
        IntrospectRequest,
        AdminSessionView,
        CreateUserRequest,
        PasswordRequest,
    ))
)]
struct ApiDoc;

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

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
