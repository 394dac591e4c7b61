//! The built-in account page at `/ui/`: sign in, "your devices", sign out
//! one device, all others, or this one. Three files embedded in the
//! binary (no build step at run time); the script is the reference
//! integration of cookie transport. `SESSION_UI=off` leaves the routes
//! out (404).

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::state::AppState;

/// The page's Content-Security-Policy: its own files only, no inline
/// script or style, never in a frame.
pub const CSP: &str = "default-src 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// The page's routes (added to the public router when `ui` is on).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(redirect))
        .route("/ui/", get(page))
        .route("/ui/index.html", get(index))
        .route("/ui/app.js", get(script))
        .route("/ui/app.css", get(style))
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut res = (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[utoipa::path(get, path = "/ui/", tag = "public", responses((status = 200, description = "the account page (text/html); its script app.js and style app.css next to it", content_type = "text/html"), (status = 404, description = "not_found: SESSION_UI=off")))]
pub(crate) async fn page() -> Response {
    index().await
}

async fn index() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

async fn script() -> Response {
    file("text/javascript; charset=utf-8", SCRIPT)
}

async fn style() -> Response {
    file("text/css; charset=utf-8", STYLE)
}

/// `/ui` → `/ui/`, relative so that it also works under a path prefix.
async fn redirect() -> Response {
    (
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, HeaderValue::from_static("ui/"))],
    )
        .into_response()
}
