//! Connections: the accept loop of one listener, with a cap on open
//! connections and the timeouts that keep a slow or idle client from
//! holding one forever.
//!
//! - **Header read.** A new connection must send its first request's
//!   whole head within `header_read_timeout`; on a kept-alive connection
//!   the clock starts with the next request's first byte. Partial headers
//!   trickled in (slowloris) do not extend it.
//! - **Keep-alive.** A connection with no request in progress and nothing
//!   sent for `keepalive_timeout` is closed.
//! - **Request.** A handler (reading its body included) answers within
//!   `request_timeout` (see `app.rs`).
//! - **Cap.** At most `max_connections` are open per listener; further
//!   clients wait in the listen backlog until one closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt as _;

/// The connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Time to receive a request's head, from its first byte.
    pub header_read: Duration,
    /// Time an idle connection is kept open.
    pub keepalive: Duration,
    /// Open connections at most.
    pub max_connections: usize,
}

const NEVER: u64 = u64::MAX;

/// What one connection is doing, shared by its reader, its service and
/// its watchdog. Times are milliseconds since `epoch`.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    /// Wakes the watchdog when a request begins or ends.
    changed: Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first head at once: connecting and
            // sending nothing is the cheapest way to hold a connection.
            head_started: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// Bytes arrived: with no request in progress they start one's head.
    fn read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_started.compare_exchange(
                NEVER,
                self.now(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// A whole head arrived: the request is in the handler's hands.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NEVER, Ordering::Release);
        self.changed.notify_one();
    }

    /// A request was answered.
    fn end(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.head_started.store(NEVER, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// Resolves when the connection has outstayed a limit.
    async fn expired(&self, limits: ConnLimits) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NEVER / 2);
        let (head, idle) = (ms(limits.header_read), ms(limits.keepalive));
        loop {
            let now = self.now();
            let deadline = if self.in_flight.load(Ordering::Acquire) > 0 {
                // The request timeout bounds the handler; look again later.
                now + head.min(idle)
            } else {
                match self.head_started.load(Ordering::Acquire) {
                    NEVER => self.idle_since.load(Ordering::Acquire).saturating_add(idle),
                    started => started.saturating_add(head),
                }
            };
            if deadline <= now {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A connection's socket that reports arriving bytes to its [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Ends a request's [`Activity`] however its future ends.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the
/// open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(100);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => tokio::select! {
                    () = &mut shutdown => break,
                    accepted = listener.accept() => accepted.map(|a| (a, permit)),
                },
                Err(_) => break,
            },
        };
        let ((stream, peer), permit) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let service = {
            let activity = activity.clone();
            let app = app.clone();
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                activity.begin();
                let in_flight = InFlight(activity.clone());
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                let app = app.clone();
                async move {
                    let res = app.oneshot(req.map(axum::body::Body::new)).await;
                    drop(in_flight);
                    res
                }
            })
        };
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        tokio::spawn(async move {
            metrics::gauge!("session_http_open_connections", "listener" => name).increment(1);
            tokio::select! {
                _ = conn => {}
                () = activity.expired(limits) => {
                    metrics::counter!("session_http_connections_timed_out_total", "listener" => name)
                        .increment(1);
                }
            }
            metrics::gauge!("session_http_open_connections", "listener" => name).decrement(1);
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
