//! Accepting and serving connections within limits, so that no client can hold the
//! server's descriptors: a request's head must arrive in time, a connection on which
//! nothing moves is closed, and there is a ceiling on connections served at once.
//!
//! Over the ceiling a new connection is still accepted, but only answered: one request
//! is read (within a short head timeout), `/healthz` answers as usual and anything else
//! gets a 503 `too_many_connections`, and the connection is closed. Leaving it in the
//! kernel's backlog instead would make clients, health checks included, wait with no
//! answer until they time out, and a full backlog drops connections silently. A small
//! pool bounds these answered connections too; beyond it a connection is closed at once.

use crate::error::ApiError;
use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower_service::Service;

/// Connections over the limit that are read and answered at once.
pub const OVERFLOW_CONNECTIONS: usize = 64;
/// How long a connection over the limit has to send its request's head.
pub const OVERFLOW_HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// Connections the kernel may hold for the server before it accepts them (it caps this
/// at `net.core.somaxconn`): a burst of new connections waits there instead of being
/// dropped and retried a second later.
pub const LISTEN_BACKLOG: u32 = 4096;
/// How long connections being served get to finish when the server stops.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits on the connections the server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A request's head must arrive within this long of the connection opening or of
    /// the previous response: a half-sent head is closed, and so is a kept-alive
    /// connection that sends nothing.
    pub header_timeout: Duration,
    /// A connection on which no byte moves for this long is closed, unless a request
    /// has been received whole and its answer is still being made: a long poll waiting
    /// for a change, an event stream. A stalled upload is closed, and so is a client
    /// that stopped reading a whole answer.
    pub idle_timeout: Duration,
}

/// The longest head or idle timeout (a longer one is this one).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for Limits {
    /// The connection ceiling leaves a quarter of the descriptor limit, at most 1024,
    /// for the store, outgoing requests and commands' pipes.
    fn default() -> Self {
        Limits {
            max_connections: connections_for(descriptor_limit()),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The process's soft limit on open descriptors.
pub fn descriptor_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
}

/// Raises the soft limit on open descriptors to the hard limit; returns the new limit.
pub fn raise_descriptor_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or_else(|_| descriptor_limit())
}

/// The connection ceiling for a descriptor limit.
pub fn connections_for(descriptors: u64) -> usize {
    let reserve = (descriptors / 4).min(1024);
    usize::try_from(descriptors.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1)
}

/// Listens on `addr` with a backlog of [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` until `shutdown` completes, then lets open connections
/// finish for up to [`DRAIN_TIMEOUT`].
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let limits = Limits {
        header_timeout: limits.header_timeout.min(MAX_TIMEOUT),
        idle_timeout: limits.idle_timeout.min(MAX_TIMEOUT),
        ..limits
    };
    // At least one, and no more than a semaphore can count and a drain can wait for.
    let ceiling = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let served = Arc::new(Semaphore::new(ceiling));
    let overflow = Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        if let Ok(permit) = Arc::clone(&served).try_acquire_owned() {
            let (app, stopping) = (app.clone(), stopping.clone());
            tokio::spawn(async move {
                serve_connection(stream, app, limits, stopping).await;
                drop(permit);
            });
        } else if let Ok(permit) = Arc::clone(&overflow).try_acquire_owned() {
            let app = app.clone();
            tokio::spawn(async move {
                answer_overflow(stream, app, limits).await;
                drop(permit);
            });
        }
        // Else the stream is dropped here: closed at once.
    }
    let _ = stop.send(true);
    let everyone = u32::try_from(ceiling).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, served.acquire_many(everyone)).await;
}

/// After a failed accept: a connection reset before it was accepted is nothing; out of
/// descriptors, wait a little for some to be freed rather than spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
        return;
    }
    tracing::warn!("accepting a connection failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

fn http1(limits: Limits) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    builder
}

/// Serves one connection within its head and idle timeouts; on shutdown it finishes
/// the request in progress and closes.
async fn serve_connection(stream: TcpStream, app: Router, limits: Limits, mut stopping: watch::Receiver<bool>) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Tracked { inner: stream, activity: Arc::clone(&activity) });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let answering = Answering::begin(&activity, &request);
            let request = request.map(|body| Body::new(Received { inner: body, activity: Arc::clone(&activity) }));
            let mut app = app.clone();
            async move {
                let response = app.call(request).await?;
                // Answering lasts as long as the answer's body, which a stream makes as it goes.
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                        let _ = &answering;
                        frame
                    }))
                }))
            }
        })
    };
    let connection = http1(limits).serve_connection(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = activity.until_idle(limits.idle_timeout) => return,
        _ = stopping.wait_for(|&stop| stop) => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection => {}
        _ = activity.until_idle(limits.idle_timeout) => {}
    }
}

/// Reads one request on a connection over the limit and answers it, then closes.
async fn answer_overflow(stream: TcpStream, app: Router, limits: Limits) {
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut app = app.clone();
        async move {
            if request.uri().path() == "/healthz" {
                return app.call(request.map(Body::new)).await;
            }
            Ok::<_, Infallible>(axum::response::IntoResponse::into_response(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                "the server is serving as many connections as it may; try again later",
            )))
        }
    });
    let mut builder = http1(Limits { header_timeout: limits.header_timeout.min(OVERFLOW_HEAD_TIMEOUT), ..limits });
    builder.keep_alive(false);
    let _ =
        tokio::time::timeout(OVERFLOW_HEAD_TIMEOUT * 2, builder.serve_connection(TokioIo::new(stream), service)).await;
}

/// When bytes last moved on a connection, and whether a request received whole is
/// being answered. HTTP/1 answers one request at a time, so one flag is enough.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    answering: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Activity { opened: Instant::now(), last_ms: AtomicU64::new(0), answering: AtomicBool::new(false) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once nothing has moved for `idle` while no request is being answered.
    async fn until_idle(&self, idle: Duration) {
        loop {
            let now = Instant::now();
            let due = if self.answering.load(Ordering::Relaxed) { now + idle } else { self.last() + idle };
            if due <= now {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    }
}

/// Marks a request as being answered from when its body has been received whole until
/// its answer's body has been made (or it is dropped).
struct Answering(Arc<Activity>);

impl Answering {
    fn begin(activity: &Arc<Activity>, request: &hyper::Request<Incoming>) -> Self {
        use hyper::body::Body as _;
        activity.touch();
        activity.answering.store(request.body().is_end_stream(), Ordering::Relaxed);
        Answering(Arc::clone(activity))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.store(false, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A request body that marks its request as being answered once it has been read.
struct Received {
    inner: Incoming,
    activity: Arc<Activity>,
}

impl hyper::body::Body for Received {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.activity.answering.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that notes when bytes move on it.
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::connections_for;

    #[test]
    fn the_ceiling_leaves_descriptors_for_the_rest() {
        assert_eq!(connections_for(1024), 768);
        assert_eq!(connections_for(20_000), 18_976);
        assert_eq!(connections_for(0), 1);
    }
}
