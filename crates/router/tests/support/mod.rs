//! Test fixtures: backends run as tokio tasks, routers on ephemeral ports, a client.
#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client as LegacyClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollwave_router::track;
use rollwave_router::{Config, Router};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// How a backend answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    Fail = 1,
    Hang = 2,
}

/// A backend serving on 127.0.0.1 until dropped or killed.
///
/// Every response names the backend (`x-backend`) and echoes the decision it received
/// (`x-seen-track`, `x-seen-baggage`). `GET /slow` waits for [`Backend::release`];
/// `/echo` answers the request's body.
/// With a `next` router, it is a service that calls the next service: it forwards the
/// decision with [`track::from_headers`] and [`track::inject`] and reports which
/// backend answered there (`x-next-backend`, `x-next-seen-baggage`).
pub struct Backend {
    pub addr: SocketAddr,
    hits: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    mode: Arc<AtomicU8>,
    release: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with_next(name, None).await
    }

    pub async fn start_with_next(name: &str, next: Option<SocketAddr>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let accepted = connections.clone();
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let release = Arc::new(Notify::new());
        let state = Arc::new(BackendState {
            name: name.to_owned(),
            hits: hits.clone(),
            mode: mode.clone(),
            release: release.clone(),
            next,
            client: client(),
        });
        let task = tokio::spawn(async move {
            // Owning the connections here means aborting this task closes them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                while connections.try_join_next().is_some() {}
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.respond(request).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Backend { addr, hits, connections, mode, release, task }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Lets every waiting `/slow` request answer.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    /// Closes the listener and every open connection, as if the process died.
    pub async fn kill(&self) {
        self.task.abort();
        // Its sockets are closed once the task is gone.
        wait_until("the backend's task is gone", async || self.task.is_finished()).await;
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct BackendState {
    name: String,
    hits: Arc<AtomicU64>,
    mode: Arc<AtomicU8>,
    release: Arc<Notify>,
    next: Option<SocketAddr>,
    client: LegacyClient<HttpConnector, Full<Bytes>>,
}

impl BackendState {
    async fn respond(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let mode = self.mode.load(Ordering::SeqCst);
        if mode == Mode::Hang as u8 {
            std::future::pending::<()>().await;
        }
        if request.uri().path() == "/slow" {
            self.release.notified().await;
        }
        if request.uri().path() == "/echo" {
            // The request body, whole, with its length and digest in headers.
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut response = Response::new(Full::new(body.clone()));
            response.headers_mut().insert("x-backend", HeaderValue::from_str(&self.name).unwrap());
            response.headers_mut().insert("x-echo-length", HeaderValue::from(body.len()));
            return response;
        }
        let mut response = Response::new(Full::new(Bytes::from(self.name.clone())));
        if mode == Mode::Fail as u8 {
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        let headers = response.headers_mut();
        headers.insert("x-backend", HeaderValue::from_str(&self.name).unwrap());
        let seen = |name: &str| request.headers().get(name).cloned().unwrap_or(HeaderValue::from_static(""));
        headers.insert("x-seen-track", seen("x-rollwave-track"));
        headers.insert("x-seen-baggage", seen("baggage"));
        if let Some(next) = self.next {
            // What a service does: pass the decision (and its other baggage) along.
            let mut call = Request::new(Full::new(Bytes::new()));
            *call.uri_mut() = format!("http://{next}/").parse().unwrap();
            if let Some(baggage) = request.headers().get("baggage") {
                call.headers_mut().insert("baggage", baggage.clone());
            }
            if let Some(track) = track::from_headers(request.headers()) {
                track::inject(call.headers_mut(), track);
            }
            let reply = self.client.request(call).await.unwrap();
            let next_headers = reply.headers().clone();
            headers.insert("x-next-backend", next_headers["x-backend"].clone());
            headers.insert("x-next-seen-baggage", next_headers["x-seen-baggage"].clone());
        }
        response
    }
}

pub fn client<B>() -> LegacyClient<HttpConnector, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    LegacyClient::builder(TokioExecutor::new()).build_http()
}

/// One host line of a routes file.
pub struct Host<'a> {
    pub backend: &'a Backend,
    pub version: &'a str,
    pub track: &'a str,
    pub draining: bool,
}

pub fn host<'a>(backend: &'a Backend, version: &'a str, track: &'a str) -> Host<'a> {
    Host { backend, version, track, draining: false }
}

pub fn routes_yaml(salt: &str, share: &str, hosts: &[Host]) -> String {
    let mut text = format!("salt: {salt}\ncanary_share: {share}\nhosts:\n");
    if hosts.is_empty() {
        text = format!("salt: {salt}\ncanary_share: {share}\nhosts: []\n");
    }
    for h in hosts {
        text.push_str(&format!(
            "  - {{ address: {}, version: {}, track: {}, draining: {} }}\n",
            h.backend.addr, h.version, h.track, h.draining
        ));
    }
    text
}

/// A router on an ephemeral port, reading a routes file of its own.
pub struct TestRouter {
    pub router: Router,
    pub routes: PathBuf,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
}

impl TestRouter {
    pub async fn start(routes_text: &str) -> TestRouter {
        Self::start_with(routes_text, |_| {}).await
    }

    pub async fn start_with(routes_text: &str, configure: impl FnOnce(&mut Config)) -> TestRouter {
        let routes = scratch_file("routes.yaml");
        std::fs::write(&routes, routes_text).unwrap();
        let mut config = Config::new(&routes);
        config.reload_every = Duration::from_millis(20);
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let router = Router::start(config, listener, admin).await.unwrap();
        let (addr, admin) = (router.local_addr(), router.admin_addr());
        TestRouter { router, routes, addr, admin }
    }

    /// Replaces the routes file at once (write and rename), then waits until the
    /// router has read it: the reload counter of `outcome` has gone up.
    pub async fn rewrite_routes(&self, text: &str, outcome: &str) {
        let before = self.reloads(outcome);
        let temp = self.routes.with_extension("tmp");
        std::fs::write(&temp, text).unwrap();
        std::fs::rename(&temp, &self.routes).unwrap();
        wait_until("the router reads its routes file", async || self.reloads(outcome) > before).await;
    }

    pub fn reloads(&self, outcome: &str) -> u64 {
        metric(&self.router.metrics_text(), &format!("rollwave_router_table_reloads_total{{outcome=\"{outcome}\"}}"))
    }

    pub fn metrics(&self) -> String {
        self.router.metrics_text()
    }
}

/// A fresh path under the test's temporary directory.
pub fn scratch_file(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "router-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Until `condition` holds, through the testkit's one wait; a failure after 20 s, so a
/// broken router fails the test instead of hanging it.
pub async fn wait_until(what: &str, condition: impl AsyncFnMut() -> bool) {
    rollwave_testkit::wait_for_async(what, Duration::from_secs(20), condition).await;
}

/// The value of one sample line of the metrics text, 0 when absent.
pub fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0, |value| value.trim().parse::<f64>().unwrap() as u64)
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    pub fn backend(&self) -> &str {
        self.header("x-backend")
    }

    pub fn track(&self) -> &str {
        self.header("x-rollwave-track")
    }
}

/// A pooled HTTP client.
#[derive(Clone)]
pub struct Http(LegacyClient<HttpConnector, Empty<Bytes>>);

impl Http {
    pub fn new() -> Http {
        Http(client())
    }

    /// Sends `GET path` with `headers` (values may be any bytes a header allows).
    pub async fn get(&self, addr: SocketAddr, path: &str, headers: &[(&str, &[u8])]) -> Reply {
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = format!("http://{addr}{path}").parse().unwrap();
        for (name, value) in headers {
            request.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let response = self.0.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
    }
}

/// One client connection of its own (no pool), so that a connection the router closed
/// shows up as an error.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> Connection {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Connection { sender, addr }
    }

    /// `GET path`; `Err` when the connection failed.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, hyper::Error> {
        self.sender.ready().await?;
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = path.parse().unwrap();
        request.headers_mut().insert("host", HeaderValue::from_str(&self.addr.to_string()).unwrap());
        for (name, value) in headers {
            request
                .headers_mut()
                .append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply { status: parts.status, headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() })
    }
}
