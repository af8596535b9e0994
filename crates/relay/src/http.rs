//! The HTTP shell around [`ofrep`](crate::ofrep): hyper serving OFREP, the change
//! notifications, `/metrics` and `/healthz` on one listener.

use crate::counters::Counters;
use crate::ofrep::{self, Answer, Current, EVENTS_PATH, MAX_BODY};
use crate::served::Served;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rollwave_router::track;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};

/// Most client connections open at once (change-notification streams among them);
/// further clients wait to be accepted.
const MAX_CONNECTIONS: usize = 10_000;

/// Largest buffer per connection, which bounds a request head (hyper answers 431 beyond).
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// How long a client may take to send a request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle change-notification stream gets a comment, so proxies keep it.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// How long, after `shutdown` resolves, connections get to finish their requests.
const GRACE: Duration = Duration::from_secs(5);

/// Serves OFREP on `listener` until `shutdown` resolves, evaluating against whatever
/// `flags` holds at each request and counting into `counters`:
///
/// - `POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags` (see
///   [`ofrep`](crate::ofrep)), the set chosen per request by [`Served::select`];
/// - `GET /ofrep/v1/events`: Server-Sent Events, one `refetchEvaluation` message each time
///   what `flags` holds changes (OFREP ADR-0008);
/// - `GET /metrics` ([`Counters::encode`]) and `GET /healthz`.
///
/// An agent serving its host's one set passes a channel holding [`Served::single`].
pub async fn serve(
    listener: TcpListener,
    flags: watch::Receiver<Arc<Served>>,
    counters: Arc<Counters>,
    shutdown: impl Future<Output = ()>,
) {
    let first = Current::new(flags.borrow().clone(), &counters);
    let shared = Arc::new(Shared { flags, current: ArcSwap::from_pointee(first), counters });
    let (stop, stopped) = watch::channel(false);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_CONNECTION_BUFFER);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit,
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Usually out of file descriptors: wait for some to be released.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        while connections.try_join_next().is_some() {}
        let (shared, http, mut stop) = (shared.clone(), http.clone(), stopped.clone());
        connections.spawn(async move {
            let _permit = permit;
            let service_stop = stop.clone();
            let service = service_fn(move |request| {
                let (shared, stop) = (shared.clone(), service_stop.clone());
                async move { Ok::<_, Infallible>(shared.handle(request, stop).await) }
            });
            let connection = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(GRACE, async { while connections.join_next().await.is_some() {} }).await;
}

#[derive(Debug)]
struct Shared {
    flags: watch::Receiver<Arc<Served>>,
    /// What `flags` held when last looked at, with its counters.
    current: ArcSwap<Current>,
    counters: Arc<Counters>,
}

impl Shared {
    /// What is served now; rebuilt (counters found or made) only when `flags` changed.
    fn current(&self) -> Arc<Current> {
        let served = self.flags.borrow().clone();
        let current = self.current.load_full();
        if Arc::ptr_eq(&current.served, &served) {
            return current;
        }
        let fresh = Arc::new(Current::new(served, &self.counters));
        self.current.store(fresh.clone());
        fresh
    }

    async fn handle(&self, request: Request<Incoming>, stop: watch::Receiver<bool>) -> Response<RelayBody> {
        const BULK: &str = "/ofrep/v1/evaluate/flags";
        let path = request.uri().path();
        let route = match path {
            BULK => Route::Bulk,
            EVENTS_PATH => Route::Events,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Health,
            _ => match path.strip_prefix(BULK).and_then(|rest| rest.strip_prefix('/')) {
                Some(key) => Route::One(percent_decode(key)),
                None => return plain(StatusCode::NOT_FOUND, "not found: see /ofrep/v1/evaluate/flags\n"),
            },
        };
        let method = request.method().clone();
        match (route, method) {
            (Route::Bulk, Method::POST) => {
                let carried = track::from_headers(request.headers());
                let if_none_match = request.headers().get(header::IF_NONE_MATCH).cloned();
                let body = match read_body(request).await {
                    Ok(body) => body,
                    Err(details) => return json(ofrep::invalid_context(None, &details)),
                };
                let current = self.current();
                let answer =
                    ofrep::evaluate_bulk(&current, carried, &body, if_none_match.as_ref().map(HeaderValue::as_bytes));
                json(answer)
            }
            (Route::One(key), Method::POST) => {
                let Some(key) = key else {
                    return plain(StatusCode::NOT_FOUND, "not found: a flag key is percent-encoded UTF-8\n");
                };
                let carried = track::from_headers(request.headers());
                let body = match read_body(request).await {
                    Ok(body) => body,
                    Err(details) => return json(ofrep::invalid_context(Some(&key), &details)),
                };
                json(ofrep::evaluate_one(&self.current(), &self.counters, &key, carried, &body))
            }
            (Route::Events, Method::GET) => {
                let last = request.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                self.events(last, stop)
            }
            (Route::Metrics, Method::GET) => {
                let mut response = plain(StatusCode::OK, "");
                *response.body_mut() = RelayBody::full(self.counters.encode());
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(rollwave_exposition::CONTENT_TYPE));
                response
            }
            (Route::Health, Method::GET) => plain(StatusCode::OK, "ok\n"),
            (route, _) => {
                let allow = if matches!(route, Route::Bulk | Route::One(_)) { "POST" } else { "GET" };
                let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                response
            }
        }
    }

    /// A change-notification stream: a `refetchEvaluation` message whenever what is
    /// served changes, and at once when the client's `Last-Event-ID` names another state.
    fn events(&self, last_event_id: Option<String>, mut stop: watch::Receiver<bool>) -> Response<RelayBody> {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        let mut flags = self.flags.clone();
        // Read now, not in the task: a change made once the client has the response
        // head must be told.
        let mut sent = flags.borrow_and_update().fingerprint().to_owned();
        tokio::spawn(async move {
            let mut first = String::from("retry: 2000\n: rollwave relay flag-set changes\n\n");
            if last_event_id.is_some_and(|id| id != sent) {
                first.push_str(&refetch_event(&sent));
            }
            if tx.send(Bytes::from(first)).await.is_err() {
                return;
            }
            loop {
                let message = tokio::select! {
                    changed = flags.changed() => {
                        if changed.is_err() {
                            // The sets can no longer change: nothing more to say.
                            return;
                        }
                        let now = flags.borrow_and_update().fingerprint().to_owned();
                        if now == sent {
                            continue;
                        }
                        let message = refetch_event(&now);
                        sent = now;
                        message
                    }
                    _ = tokio::time::sleep(KEEPALIVE) => ": keepalive\n\n".to_owned(),
                    _ = tx.closed() => return,
                    _ = stop.changed() => return,
                };
                if tx.send(Bytes::from(message)).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::new(RelayBody::Events(rx));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        response
    }
}

/// One OFREP change notification (ADR-0008): `event: message`, the JSON type
/// `refetchEvaluation`, the state's fingerprint as id and as flag-configuration etag.
pub(crate) fn refetch_event(fingerprint: &str) -> String {
    format!(
        "id: {fingerprint}\nevent: message\ndata: {{\"type\":\"refetchEvaluation\",\"etag\":\"\\\"{fingerprint}\\\"\"}}\n\n"
    )
}

enum Route {
    Bulk,
    /// `None`: the key is not percent-encoded UTF-8.
    One(Option<String>),
    Events,
    Metrics,
    Health,
}

/// The body, at most [`MAX_BODY`] bytes, or why it cannot be read.
async fn read_body(request: Request<Incoming>) -> Result<Bytes, String> {
    match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(format!("the request body is over {MAX_BODY} bytes"))
        }
        Err(e) => Err(format!("the request body could not be read: {e}")),
    }
}

/// `%XX` sequences decoded; `None` if the result is not UTF-8 or a sequence is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn json(answer: Answer) -> Response<RelayBody> {
    let mut response = Response::new(RelayBody::Full(Some(answer.body)));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    if answer.status != StatusCode::NOT_MODIFIED {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    if let Some(etag) = answer.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        headers.insert(header::ETAG, etag);
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<RelayBody> {
    let mut response = Response::new(RelayBody::full(text.to_owned()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A response body: whole, or a change-notification stream.
#[derive(Debug)]
pub enum RelayBody {
    Full(Option<Bytes>),
    Events(mpsc::Receiver<Bytes>),
}

impl RelayBody {
    fn full(text: String) -> RelayBody {
        RelayBody::Full(Some(Bytes::from(text)))
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            RelayBody::Full(bytes) => Poll::Ready(bytes.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            RelayBody::Events(rx) => rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RelayBody::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            RelayBody::Events(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RelayBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            RelayBody::Events(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded() {
        assert_eq!(percent_decode("new-checkout").as_deref(), Some("new-checkout"));
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%E2%9C%93").as_deref(), Some("✓"));
        for broken in ["%", "%2", "%zz", "%FF"] {
            assert_eq!(percent_decode(broken), None, "{broken}");
        }
    }
}
