//! Logging and OpenTelemetry: the process-wide `tracing` subscriber, the
//! optional OTLP/HTTP trace export, and the per-request span.
//!
//! Export is off unless `otlp_endpoint` is set: then no exporter is built
//! and no background task runs. When it is set, finished spans are batched
//! by a Tokio task and POSTed as OTLP/HTTP JSON to `<endpoint>/v1/traces`,
//! under `service.name` `session-server`; the stderr log layer (text or
//! JSON) stays as it is.
//!
//! **Invariant:** span attributes are a fixed list — method, route
//! *template*, status code, outcome, session id. No URI, header, cookie,
//! token, password or body is ever recorded. Events logged inside a request
//! span are exported as span events, so the crate-wide rule "never log a
//! secret" covers them too.

use std::io::IsTerminal as _;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};
use tracing::field::Empty;
use tracing::{Instrument as _, Span};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{Layer as _, fmt};

use crate::config::{LogFormat, Settings};

/// The `service.name` resource attribute of every exported span.
pub const SERVICE_NAME: &str = "session-server";

/// The `tracing` target of the per-request span.
pub const REQUEST_SPAN_TARGET: &str = module_path!();

/// How long one export (retries included) may take before its batch is
/// dropped. It also bounds how long a stopping server waits for an
/// unreachable collector.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `otlp_endpoint` is not an absolute `http://` or `https://` URL.
    #[error("invalid otlp_endpoint: {reason}")]
    Endpoint {
        /// What is wrong with it (the value itself is not repeated).
        reason: &'static str,
    },
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP trace exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// A global `tracing` subscriber was already installed.
    #[error("cannot install the tracing subscriber")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
}

/// What a handler wants recorded as the request span's `outcome`, inserted
/// as a response extension: `res.extensions_mut().insert(Outcome("rotated"))`.
/// Without it the outcome is `ok` below status 400 and `error` from 400 on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub &'static str);

/// A session id a handler wants in the request's log line and span,
/// inserted as a response extension (a session id is not a secret).
#[derive(Debug, Clone)]
pub struct LoggedSession(pub String);

/// The installed subscriber's export side. Keep it until the server has
/// stopped, then call [`Telemetry::shutdown`] so buffered spans are sent.
#[derive(Debug)]
#[must_use = "hold it until exit and call shutdown, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are being exported.
    pub fn is_exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is still buffered and stops the exporter. Waits at most
    /// a few seconds; a failure is logged, not returned (the server has
    /// already stopped).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks the calling thread until the export task answers;
        // doing that on a runtime worker could starve the task it waits for.
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace export shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "trace export shutdown panicked"),
        }
    }
}

/// Installs the process-wide subscriber: the stderr log layer in
/// `settings.log_format` (level from `RUST_LOG`, default `info`), plus the
/// OpenTelemetry layer when `settings.otlp_endpoint` is set.
///
/// Must run inside a Tokio runtime when export is on (the batch exporter is
/// a Tokio task).
pub fn init(settings: &Settings) -> Result<Telemetry, TelemetryError> {
    let provider = tracer_provider(settings.otlp_endpoint.as_deref())?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = use_ansi(
        settings.log_format,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let log = match settings.log_format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    // The request span repeats what the `request` log line already says;
    // keep it out of the log output.
    .with_filter(filter_fn(|m| {
        !(m.is_span() && m.target() == REQUEST_SPAN_TARGET)
    }));
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(SERVICE_NAME))
            .with_threads(false)
            .with_tracked_inactivity(false)
            // The exporter's own HTTP client must not feed spans back in.
            .with_filter(filter_fn(|m| !is_exporter_internal(m.target())))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(log)
        .with(otel)
        .try_init()
        .map_err(TelemetryError::Subscriber)?;
    Ok(Telemetry { provider })
}

/// Whether the log layer writes ANSI colour codes: only for text logs on a
/// terminal (the log goes to stderr), where a person reads them. A file, a
/// pipe or a log collector gets plain text, JSON never carries them (an
/// escape code inside a JSON string breaks parsers downstream), and a
/// non-empty `NO_COLOR` (<https://no-color.org>) turns them off even on a
/// terminal, as `tracing_subscriber` does when colour is not set
/// explicitly.
fn use_ansi(format: LogFormat, stderr_is_terminal: bool, no_color: bool) -> bool {
    match format {
        LogFormat::Json => false,
        LogFormat::Text => stderr_is_terminal && !no_color,
    }
}

fn is_exporter_internal(target: &str) -> bool {
    ["hyper", "h2", "opentelemetry", "tower", "reqwest"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// The tracer provider for `endpoint`, or `None` (nothing built, nothing
/// running) when it is unset or blank.
///
/// Must run inside a Tokio runtime when `endpoint` is set.
pub fn tracer_provider(
    endpoint: Option<&str>,
) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(traces_url(endpoint)?)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(TelemetryError::Exporter)?;
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_export_timeout(EXPORT_TIMEOUT)
                .build(),
        )
        .build();
    let resource = Resource::builder()
        .with_service_name(SERVICE_NAME)
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build(),
    ))
}

/// The traces URL for an OTLP/HTTP base endpoint: `http://host:4318` and
/// `http://host:4318/` become `http://host:4318/v1/traces`; a URL already
/// ending in `/v1/traces` is kept.
pub fn traces_url(endpoint: &str) -> Result<String, TelemetryError> {
    let uri: axum::http::Uri = endpoint.parse().map_err(|_| TelemetryError::Endpoint {
        reason: "not a URL",
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(TelemetryError::Endpoint {
            reason: "expected an absolute http:// or https:// URL",
        });
    }
    if uri.query().is_some() {
        return Err(TelemetryError::Endpoint {
            reason: "a query string is not supported",
        });
    }
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        Ok(base.to_owned())
    } else {
        Ok(format!("{base}/v1/traces"))
    }
}

/// The span of one HTTP request: method, route template (never the raw
/// path), and empty slots that [`record_outcome`] fills in.
pub fn request_span(method: &Method, route: Option<&str>) -> Span {
    let method = known_method(method);
    let span = tracing::info_span!(
        target: REQUEST_SPAN_TARGET,
        "http.request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = method,
        http.route = Empty,
        http.response.status_code = Empty,
        outcome = Empty,
        session.id = Empty,
    );
    if span.is_disabled() {
        // No subscriber wants it (no exporter, the log filters it out):
        // build nothing for it.
        return span;
    }
    match route {
        Some(route) => {
            span.record("http.route", route);
            span.record("otel.name", format!("{method} {route}"));
        }
        None => {
            span.record("otel.name", method);
        }
    }
    span
}

/// Fills in the status code and outcome of a request span; 5xx marks the
/// span as failed.
pub fn record_outcome(span: &Span, status: StatusCode, outcome: Option<Outcome>) {
    span.record("http.response.status_code", status.as_u16());
    let outcome = outcome.map_or_else(|| default_outcome(status), |o| o.0);
    span.record("outcome", outcome);
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

fn default_outcome(status: StatusCode) -> &'static str {
    if status.is_client_error() || status.is_server_error() {
        "error"
    } else {
        "ok"
    }
}

/// The method as a span attribute: one of the standard methods, or
/// `_OTHER` (a client-chosen token is not worth a new attribute value).
fn known_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Middleware: runs the request inside its [`request_span`] and records the
/// status, the handler's [`Outcome`] and the [`LoggedSession`] id.
pub async fn trace_request(req: Request, next: Next) -> Response {
    let span = request_span(
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let res = next.run(req).instrument(span.clone()).await;
    record_outcome(
        &span,
        res.status(),
        res.extensions().get::<Outcome>().copied(),
    );
    if let Some(session) = res.extensions().get::<LoggedSession>() {
        span.record("session.id", session.0.as_str());
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_endpoint_no_exporter_is_built() {
        // No Tokio runtime here: building an exporter would panic.
        assert!(tracer_provider(None).unwrap().is_none());
        assert!(tracer_provider(Some("  ")).unwrap().is_none());
    }

    #[tokio::test]
    async fn with_an_endpoint_an_exporter_is_built() {
        let provider = tracer_provider(Some("http://127.0.0.1:4318")).unwrap();
        let provider = provider.expect("an exporter");
        tokio::task::spawn_blocking(move || provider.shutdown())
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn the_traces_path_is_appended_to_a_base_endpoint_once() {
        for (given, want) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example/otlp",
                "https://otel.example/otlp/v1/traces",
            ),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap(), want, "{given}");
        }
    }

    #[test]
    fn an_endpoint_that_is_not_an_http_url_is_refused() {
        for bad in [
            "127.0.0.1:4318",
            "grpc://c:4317",
            "/v1/traces",
            "http://c/?a=b",
        ] {
            assert!(traces_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        assert!(use_ansi(LogFormat::Text, true, false));
        assert!(!use_ansi(LogFormat::Text, false, false), "file or pipe");
        assert!(!use_ansi(LogFormat::Text, true, true), "NO_COLOR");
        assert!(!use_ansi(LogFormat::Text, false, true));
        for (terminal, no_color) in [(true, false), (false, false), (true, true), (false, true)] {
            assert!(
                !use_ansi(LogFormat::Json, terminal, no_color),
                "json, terminal={terminal}, no_color={no_color}"
            );
        }
    }

    #[test]
    fn the_outcome_defaults_to_the_status_class() {
        assert_eq!(default_outcome(StatusCode::OK), "ok");
        assert_eq!(default_outcome(StatusCode::SEE_OTHER), "ok");
        assert_eq!(default_outcome(StatusCode::UNAUTHORIZED), "error");
        assert_eq!(default_outcome(StatusCode::SERVICE_UNAVAILABLE), "error");
    }

    #[test]
    fn an_unknown_method_is_not_recorded_verbatim() {
        let m = Method::from_bytes(b"SECRETVERB").unwrap();
        assert_eq!(known_method(&m), "_OTHER");
        assert_eq!(known_method(&Method::POST), "POST");
    }
}
