//! Response bodies: an upstream body that keeps its request's deadline and accounting,
//! or a short body the router writes itself.

use crate::table::Upstream;
use crate::upstream::ResponseBody;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request to one host, from the moment it was sent until its response body ends
/// or is dropped: counted in flight, and timed into the latency histogram.
#[derive(Debug)]
pub struct Exchange {
    upstream: Arc<Upstream>,
    started: Instant,
}

impl Exchange {
    pub fn begin(upstream: Arc<Upstream>, started: Instant) -> Self {
        upstream.state.begin_request();
        Exchange { upstream, started }
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Hands the connection of a body that has ended back to its host's pool (a body
    /// cut short keeps it, and it closes).
    fn release(&self, body: &mut ResponseBody) {
        if let Some(conn) = body.finish() {
            self.upstream.pool.put_back(conn, self.started);
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.upstream.state.end_request();
        self.upstream.metrics.finished(self.started.elapsed());
    }
}

/// The upstream body outlived the request's timeout.
#[derive(Debug)]
struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream response body did not finish within the request timeout")
    }
}

impl std::error::Error for BodyTimeout {}

pin_project! {
    /// The body of a response the router returns.
    #[project = ProxyBodyProj]
    pub enum ProxyBody {
        Upstream {
            body: ResponseBody,
            // Armed only when the body is not ready at once, so that small responses
            // never touch the timer.
            #[pin]
            sleep: Option<Sleep>,
            deadline: tokio::time::Instant,
            exchange: Exchange,
        },
        Local {
            data: Option<Bytes>,
        },
    }
}

impl ProxyBody {
    pub fn upstream(mut body: ResponseBody, deadline: tokio::time::Instant, exchange: Exchange) -> Self {
        if body.is_end_stream() {
            exchange.release(&mut body);
        }
        ProxyBody::Upstream { body, sleep: None, deadline, exchange }
    }

    pub fn local(text: &'static str) -> Self {
        ProxyBody::Local { data: Some(Bytes::from_static(text.as_bytes())) }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ProxyBodyProj::Upstream { body, mut sleep, deadline, exchange } => {
                if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(cx) {
                    if body.is_end_stream() {
                        exchange.release(body);
                    }
                    return Poll::Ready(frame);
                }
                if sleep.is_none() {
                    sleep.set(Some(tokio::time::sleep_until(*deadline)));
                }
                if let Some(sleep) = sleep.as_pin_mut() {
                    ready!(sleep.poll(cx));
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                }
                Poll::Pending
            }
            ProxyBodyProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// The body of a request sent upstream: the client's, or empty when the router resends
/// a request that had none.
#[derive(Debug)]
pub enum UpstreamBody {
    Client(Incoming),
    Empty,
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Both variants are Unpin (Incoming is), so the enum can be matched in place.
        match self.get_mut() {
            UpstreamBody::Client(body) => Pin::new(body).poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Client(body) => body.is_end_stream(),
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Client(body) => body.size_hint(),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}
