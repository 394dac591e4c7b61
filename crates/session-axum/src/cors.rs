//! CORS for the origins an [`OriginPolicy`] lists: preflights answered
//! 204, and allow-origin + allow-credentials on their responses. Other
//! origins (the own origin too: it needs none) get no CORS header. `Vary:
//! Origin` goes on every response while any origin is listed, so no cache
//! mixes the answers.
//!
//! ```
//! use axum::{Router, middleware, routing::post};
//! use session_axum::OriginPolicy;
//! use session_axum::cors::{Cors, cors};
//!
//! let policy = OriginPolicy::new(None, vec!["https://app.example".into()]);
//! let methods = |path: &str| (path == "/change").then_some("POST");
//! let app: Router = Router::new()
//!     .route("/change", post(|| async { "changed" }))
//!     .layer(middleware::from_fn_with_state(Cors::new(policy, methods), cors));
//! # let _ = app;
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};

use crate::csrf::OriginPolicy;

/// The request headers a cross-origin page may send (preflight answer).
pub const ALLOW_HEADERS: &str =
    "Authorization, Content-Type, X-CSRF-Token, X-Session-Transport, DPoP";
/// How long a browser may cache a preflight answer (seconds).
pub const MAX_AGE: &str = "600";

/// The methods of the route at a path (`"GET, HEAD"`), for a preflight
/// answer; `None` for a path that is not a route (no preflight answer).
pub type RouteMethods = fn(&str) -> Option<&'static str>;

/// The state of [`cors`]: the listed origins and the routes' methods.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Arc<OriginPolicy>,
    methods: RouteMethods,
}

impl Cors {
    /// CORS for the origins `origins` lists ([`OriginPolicy::allowed`]),
    /// on the routes `methods` knows.
    pub fn new(origins: OriginPolicy, methods: RouteMethods) -> Self {
        Self {
            origins: Arc::new(origins),
            methods,
        }
    }
}

/// The middleware (`axum::middleware::from_fn_with_state(cors_state, cors)`).
pub async fn cors(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| cors.origins.is_listed(o))
        .and_then(|o| HeaderValue::from_str(o).ok());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = match (&origin, (cors.methods)(req.uri().path())) {
        (Some(_), Some(methods)) if preflight => {
            let mut res = StatusCode::NO_CONTENT.into_response();
            let h = res.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(methods),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
            res
        }
        _ => next.run(req).await,
    };
    let h = res.headers_mut();
    if !cors.origins.allowed().is_empty() {
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = origin {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    res
}
