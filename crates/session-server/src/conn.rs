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
///
/// The watchdog is woken only when a deadline comes nearer than the one it
/// sleeps towards: when bytes start a request's head, or a request ends
/// and the keep-alive limit is the shorter one. Otherwise it finds out
/// what changed when it wakes, so with the default limits a busy keep-alive
/// connection costs it nothing per request.
#[derive(Debug)]
struct Activity {
    epoch: Instant,
    /// The header-read limit, in ms.
    head_limit: u64,
    /// The keep-alive limit, in ms.
    idle_limit: u64,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    head_started: AtomicU64,
    /// The deadline the watchdog sleeps towards; `NEVER` while it is
    /// working one out.
    wake_at: AtomicU64,
    /// Wakes the watchdog when a request's head starts.
    changed: Notify,
}

impl Activity {
    fn new(limits: ConnLimits) -> Self {
        Self {
            epoch: Instant::now(),
            head_limit: ms(limits.header_read),
            idle_limit: ms(limits.keepalive),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            // A new connection owes its first head at once: connecting and
            // sending nothing is the cheapest way to hold a connection.
            head_started: AtomicU64::new(0),
            wake_at: AtomicU64::new(NEVER),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NEVER - 1)
    }

    /// Bytes arrived: with no request in progress they start one's head,
    /// whose deadline may be nearer than the watchdog's.
    fn read(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            let now = self.now();
            if self
                .head_started
                .compare_exchange(NEVER, now, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.deadline_set(now.saturating_add(self.head_limit));
            }
        }
    }

    /// Wakes the watchdog if `deadline` is nearer than the one it sleeps
    /// towards (or it is working one out).
    fn deadline_set(&self, deadline: u64) {
        if deadline < self.wake_at.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// A whole head arrived: the request is in the handler's hands.
    fn begin(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_started.store(NEVER, Ordering::SeqCst);
    }

    /// A request was answered.
    fn end(&self) {
        let now = self.now();
        self.idle_since.store(now, Ordering::SeqCst);
        self.head_started.store(NEVER, Ordering::SeqCst);
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.deadline_set(now.saturating_add(self.idle_limit));
        }
    }

    /// Resolves when the connection has outstayed a limit.
    async fn expired(&self) {
        let (head, idle) = (self.head_limit, self.idle_limit);
        loop {
            // Any head started from here on notifies (see `read`).
            self.wake_at.store(NEVER, Ordering::SeqCst);
            let now = self.now();
            let deadline = if self.in_flight.load(Ordering::SeqCst) > 0 {
                // The request timeout bounds the handler; look again later.
                now + head.min(idle)
            } else {
                match self.head_started.load(Ordering::SeqCst) {
                    NEVER => self.idle_since.load(Ordering::SeqCst).saturating_add(idle),
                    started => started.saturating_add(head),
                }
            };
            if deadline <= now {
                return;
            }
            self.wake_at.store(deadline, Ordering::SeqCst);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(deadline - now)) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

/// A limit in milliseconds, capped far below [`NEVER`].
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis())
        .unwrap_or(NEVER / 2)
        .min(NEVER / 2)
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
        let activity = Arc::new(Activity::new(limits));
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
                () = activity.expired() => {
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
