//! Both routers with their layers, and serving them until shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration as StdDuration, Instant};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::catch_panic::CatchPanicLayer;

use crate::conn::ConnLimits;
use crate::error::ApiError;
use crate::startup::StartupError;
use crate::state::{AppState, Opened, Pending};
use crate::telemetry::LoggedSession;

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this method is not allowed on this route",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::internal().into_response()
}

/// Security headers on every response, and one log line per request with
/// method, route template, status and latency (never a header value).
async fn observe(State(listener): State<&'static str>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let session_id = res.extensions().get::<LoggedSession>().map(|s| s.0.clone());
    tracing::info!(
        listener,
        method = %method,
        route = %route,
        status,
        latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        session_id = session_id.as_deref().unwrap_or("-"),
        "request"
    );
    metrics::counter!("session_http_requests_total", "listener" => listener, "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!("session_http_request_duration_seconds", "listener" => listener, "route" => route).record(elapsed.as_secs_f64());
    res
}

/// A request body the handler reads through while the server keeps hold
/// of it, to finish it once the handler is done.
struct Shared(Arc<Mutex<Body>>);

impl Shared {
    fn body(&self) -> std::sync::MutexGuard<'_, Body> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl HttpBody for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut *self.body()).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body().is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body().size_hint()
    }
}

/// How long the server waits for the rest of a body its handler refused
/// without reading (a 415, a 429, a CSRF failure…).
const DRAIN_WAIT: StdDuration = StdDuration::from_secs(1);

/// A request answered before its body was read must not leave the
/// connection half-read: the rest of the body is read and dropped (up to
/// the body limit, for at most [`DRAIN_WAIT`]) so the connection can carry
/// the next request, or else the answer says `Connection: close`. Left to
/// itself, hyper would close such a connection without saying so, and a
/// client reusing it would see it drop without an answer.
async fn finish_body(State(limit): State<usize>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() || req.version() >= Version::HTTP_2 {
        return next.run(req).await;
    }
    // A client waiting for `100 Continue` sends nothing more unless asked.
    let expects_continue = req.headers().contains_key(header::EXPECT);
    let (parts, body) = req.into_parts();
    let slot = Arc::new(Mutex::new(body));
    let req = Request::from_parts(parts, Body::new(Shared(slot.clone())));
    let mut res = next.run(req).await;
    if res.headers().contains_key(header::CONNECTION) {
        // Already closing (a request timeout): nothing to keep reusable.
        return res;
    }
    let body = std::mem::replace(
        &mut *slot.lock().unwrap_or_else(PoisonError::into_inner),
        Body::empty(),
    );
    if body.is_end_stream() {
        return res;
    }
    let fits = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= u64::try_from(limit).unwrap_or(u64::MAX));
    let drained = fits
        && !expects_continue
        && tokio::time::timeout(DRAIN_WAIT, axum::body::to_bytes(body, limit))
            .await
            .is_ok_and(|r| r.is_ok());
    if !drained {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// A handler that has not answered within `request_timeout` (a body that
/// never finishes arriving, a store that hangs) is dropped and the client
/// gets 503 `request_timeout`, and the connection is closed.
async fn deadline(State(limit): State<StdDuration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            metrics::counter!("session_http_request_timeouts_total").increment(1);
            let mut res = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_timeout",
                "the request was not completed in time",
            )
            .into_response();
            res.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            res
        }
    }
}

fn finish(router: Router<AppState>, state: AppState, listener: &'static str) -> Router {
    let body_limit = state.settings.body_limit;
    let request_timeout = std_duration(state.settings.request_timeout);
    let app = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            deadline,
        ));
    // CORS for the allowed browser origins, on the public listener only.
    let app = if listener == "public" {
        let cors = session_axum::cors::Cors::new(
            state.guard.origins().clone(),
            crate::browser::route_methods,
        );
        app.layer(axum::middleware::from_fn_with_state(
            cors,
            session_axum::cors::cors,
        ))
    } else {
        app
    };
    app.layer(axum::middleware::from_fn_with_state(listener, observe))
        .layer(axum::middleware::from_fn(crate::telemetry::trace_request))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            body_limit,
            finish_body,
        ))
}

/// The public listener's app.
pub fn public_app(state: AppState) -> Router {
    let mut router = crate::public::router();
    if state.settings.ui {
        router = router.merge(crate::ui::router());
    }
    finish(router, state, "public")
}

/// The admin listener's app.
pub fn admin_app(state: AppState) -> Router {
    let router = crate::admin::router(state.clone(), crate::openapi::router());
    finish(router, state, "admin")
}

/// Serves both listeners until `shutdown` resolves, then lets in-flight
/// requests finish.
pub async fn serve(
    state: AppState,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    serve_opened(Opened::Ready(state), public, admin, shutdown).await
}

/// [`serve`] for what [`AppState::try_open`] found. A state still waiting
/// for its shared store is served at once: `/healthz` answers 200,
/// `/readyz` and every other route 503 `store_unavailable`, until the
/// store answers; from then on the full apps serve on the same listeners,
/// without a restart (contract v1.1, "Starting and failing"). An error
/// other than an unreachable store while waiting (a wrong master key)
/// stops the server.
pub async fn serve_opened(
    opened: Opened,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartupError> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let tx = Arc::new(tx);
    let stopper = tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopper.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let settings = match &opened {
        Opened::Ready(state) => state.settings.clone(),
        Opened::Waiting(pending) => Arc::new(pending.settings().clone()),
    };
    let public_addr = public
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let admin_addr = admin
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let limits = ConnLimits {
        header_read: std_duration(settings.header_read_timeout),
        keepalive: std_duration(settings.keepalive_timeout),
        max_connections: usize::try_from(settings.max_connections).unwrap_or(usize::MAX),
    };
    let (public_router, admin_router, readiness) = match opened {
        Opened::Ready(state) => (
            public_app(state.clone()),
            admin_app(state.clone()),
            Readiness::Ready(state),
        ),
        Opened::Waiting(pending) => {
            let public_slot = Arc::new(OnceLock::new());
            let admin_slot = Arc::new(OnceLock::new());
            (
                gate(public_slot.clone()),
                gate(admin_slot.clone()),
                Readiness::Waiting {
                    pending,
                    public_slot,
                    admin_slot,
                },
            )
        }
    };
    let ready_rx = rx.clone();
    let ready = async move {
        let state = match readiness {
            Readiness::Ready(state) => state,
            Readiness::Waiting {
                pending,
                public_slot,
                admin_slot,
            } => match pending.wait(wait(ready_rx)).await {
                Ok(Some(state)) => {
                    let _ = public_slot.set(public_app(state.clone()));
                    let _ = admin_slot.set(admin_app(state.clone()));
                    state
                }
                Ok(None) => return Ok((Vec::new(), None)),
                Err(e) => {
                    let _ = tx.send(true);
                    return Err(e);
                }
            },
        };
        state.guard.origins().log_accepted();
        let mut tasks = vec![
            tokio::spawn(housekeeping(state.clone())),
            tokio::spawn(crate::metrics::upkeep(
                state.metrics.clone(),
                crate::metrics::UPKEEP_EVERY,
            )),
            tokio::spawn(crate::keyring::run_schedule(
                state.keys.clone(),
                state.service.clone(),
            )),
        ];
        if let Some(geoip) = state.geoip.clone() {
            tasks.push(tokio::spawn(geoip.watch(StdDuration::from_secs(1))));
        }
        Ok((tasks, state.info.audit_outbox.clone()))
    };
    let p = crate::conn::serve(public, public_router, limits, "public", wait(rx.clone()));
    let a = crate::conn::serve(admin, admin_router, limits, "admin", wait(rx));
    let (pr, ar, background) = tokio::join!(p, a, ready);
    let (tasks, outbox) = background?;
    for task in &tasks {
        task.abort();
    }
    if let Some(outbox) = outbox {
        drain_outbox(&*outbox).await;
    }
    pr.map_err(|source| StartupError::Listen {
        addr: public_addr,
        source,
    })?;
    ar.map_err(|source| StartupError::Listen {
        addr: admin_addr,
        source,
    })?;
    Ok(())
}

/// How long a stopping server waits for its audit outbox to deliver what
/// it holds.
const OUTBOX_DRAIN: StdDuration = StdDuration::from_secs(5);

/// Once the listeners are closed and the last requests answered, gives
/// the audit outbox a moment to deliver its backlog, so that a stopped
/// server's audit log (`audit.db`, PostgreSQL) holds every event it
/// answered for. What it cannot deliver in time stays in the outbox file
/// for the next start.
async fn drain_outbox(outbox: &dyn crate::state::AuditOutbox) {
    if !outbox.flush(OUTBOX_DRAIN).await {
        tracing::warn!(
            backlog = outbox.backlog(),
            "stopping with audit events still in the outbox; the next start delivers them"
        );
    }
}

/// What [`serve_opened`] still has to do before the full apps serve.
enum Readiness {
    Ready(AppState),
    Waiting {
        pending: Box<Pending>,
        public_slot: Arc<OnceLock<Router>>,
        admin_slot: Arc<OnceLock<Router>>,
    },
}

/// A router that hands every request to the app in `slot` once there is
/// one, and until then answers as a server whose store is unreachable.
fn gate(slot: Arc<OnceLock<Router>>) -> Router {
    Router::new().fallback(move |req: Request| {
        let slot = slot.clone();
        async move {
            match slot.get() {
                Some(app) => match app.clone().oneshot(req).await {
                    Ok(res) => res,
                    Err(never) => match never {},
                },
                None => not_ready_yet(req.uri().path()),
            }
        }
    })
}

/// The answer of a server still waiting for its shared store. The request
/// body is not read, so the connection is closed after the answer.
fn not_ready_yet(path: &str) -> Response {
    let mut res = match path {
        "/healthz" => Json(serde_json::json!({ "status": "ok" })).into_response(),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "error": "store_unavailable",
                "message": "a store cannot be reached",
                "status": "not_ready",
            })),
        )
            .into_response(),
        _ => ApiError::store_unavailable().into_response(),
    };
    let ok = res.status() == StatusCode::OK;
    let headers = res.headers_mut();
    if !ok {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn std_duration(d: time::Duration) -> StdDuration {
    StdDuration::try_from(d).unwrap_or(StdDuration::ZERO)
}

async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(StdDuration::from_secs(60));
    let mut minutes = 0u64;
    loop {
        tick.tick().await;
        minutes += 1;
        if let Some(chain) = &state.info.audit_chain
            && minutes.is_multiple_of(5)
            && let Err(e) = chain
                .checkpoint(state.service.keys(), state.service.now())
                .await
        {
            tracing::warn!(error = %e, "audit chain checkpoint failed; will retry");
        }
        state.limits.shrink();
        let now = state.service.now();
        match state.service.sessions().purge_expired(now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired sessions removed"),
            Err(e) => tracing::warn!(error = %e, "purge of expired sessions failed"),
        }
    }
}
