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

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
