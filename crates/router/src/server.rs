//! The running router: the proxy listener, the admin listener and the routes watcher.

use crate::balance::HealthPolicy;
use crate::metrics::Metrics;
use crate::pool::Connector;
use crate::proxy::{ProxyOptions, Shared};
use crate::routes::{Routes, parse_routes};
use crate::table::TableBuilder;
use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Largest buffer per client connection; bounds memory per connection and the size of
/// a request head (hyper answers 431 beyond it).
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// How long a client may take to send a request head, and how long an idle keep-alive
/// connection is kept.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the router needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub routes: PathBuf,
    pub reload_every: Duration,
    /// From a request's arrival to the end of its response.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub eject_after: u32,
    pub cooldown: Duration,
    pub trust_incoming_track: bool,
    pub max_connections: usize,
}

impl Config {
    /// The defaults of `rollwave router`, reading `routes`.
    pub fn new(routes: impl Into<PathBuf>) -> Self {
        Config {
            routes: routes.into(),
            reload_every: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            eject_after: 5,
            cooldown: Duration::from_secs(10),
            trust_incoming_track: true,
            max_connections: 25_000,
        }
    }
}

/// A running router; dropping it stops it at once, [`Router::shutdown`] gracefully.
#[derive(Debug)]
pub struct Router {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Router {
    /// Reads the routes file (an invalid one is an error) and starts serving on the
    /// given listeners. Must be called within a tokio runtime.
    pub async fn start(config: Config, listener: TcpListener, admin: TcpListener) -> anyhow::Result<Router> {
        let local_addr = listener.local_addr().context("the proxy listener has no address")?;
        let admin_addr = admin.local_addr().context("the admin listener has no address")?;
        let stamp = stamp(&config.routes).await;
        let routes = load_routes(&config.routes).await?;
        let metrics = Arc::new(Metrics::new());
        let mut tables = TableBuilder::new(metrics.clone());
        let table = tables.build(routes);

        let shared = Arc::new(Shared {
            table: ArcSwap::from_pointee(table),
            connector: Connector { connect_timeout: config.connect_timeout },
            metrics,
            options: ProxyOptions {
                timeout: config.timeout,
                health: HealthPolicy { eject_after: config.eject_after.max(1), cooldown: config.cooldown },
                trust_incoming_track: config.trust_incoming_track,
            },
            epoch: Instant::now(),
        });

        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(serve_proxy(listener, shared.clone(), config.max_connections, stopped.clone())),
            tokio::spawn(serve_admin(admin, shared.clone(), stopped.clone())),
            tokio::spawn(watch_routes(shared.clone(), tables, config.routes, config.reload_every, stamp, stopped)),
        ];
        Ok(Router { local_addr, admin_addr, shared, stop, tasks })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The metrics in the Prometheus text format: what `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.encode()
    }

    /// The metrics themselves, for the push to the control plane ([`crate::push`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// The current table, as `/routes` shows it.
    pub fn routes_text(&self) -> String {
        self.shared.table.load().describe()
    }

    /// Stops accepting, asks every connection to close after its current request, and
    /// waits for them for at most `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        // The proxy task returns once every connection it started has ended.
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_proxy(listener: TcpListener, shared: Arc<Shared>, max_connections: usize, stop: watch::Receiver<bool>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_CONNECTION_BUFFER);
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let mut stopping = stop.clone();
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit,
            _ = stopping.changed() => break,
        };
        let Ok(permit) = permit else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Usually out of file descriptors: wait for some to be released.
                    tracing::warn!("cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopping.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let http = http.clone();
        let mut stop = stop.clone();
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _permit = permit;
            let ip = peer.ip();
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(shared.handle(ip, request).await) }
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
    while connections.join_next().await.is_some() {}
}

async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(admin_response(&shared, &request)) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn admin_response(shared: &Shared, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, crate::metrics::CONTENT_TYPE, shared.metrics.encode()),
        (&Method::GET, "/routes") => (StatusCode::OK, "text/plain; charset=utf-8", shared.table.load().describe()),
        (&Method::GET, "/healthz") => (StatusCode::OK, "text/plain; charset=utf-8", "ok\n".to_owned()),
        _ => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "try /metrics, /routes or /healthz\n".to_owned()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

/// What identifies a version of the routes file: modification time, length and inode
/// (a file moved into place is a new inode even within one tick of the clock).
type Stamp = Option<(SystemTime, u64, u64)>;

async fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let meta = tokio::fs::metadata(path).await.ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

async fn load_routes(path: &Path) -> anyhow::Result<Routes> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("cannot read the routes file {}", path.display()))?;
    Ok(parse_routes(&path.display().to_string(), &text)?)
}

/// Polls the routes file and swaps in a new table whenever it changes and parses; closes
/// the idle connections to hosts that have aged out on the way.
async fn watch_routes(
    shared: Arc<Shared>,
    mut tables: TableBuilder,
    path: PathBuf,
    every: Duration,
    mut last: Stamp,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        for host in &shared.table.load().hosts {
            host.pool.sweep();
        }
        let now = stamp(&path).await;
        if now == last {
            continue;
        }
        last = now;
        match load_routes(&path).await {
            Ok(routes) => {
                let (hosts, share) = (routes.hosts.len(), routes.canary_share);
                shared.table.store(Arc::new(tables.build(routes)));
                shared.metrics.reload(true);
                tracing::info!(hosts, canary_share = %share, "routes reloaded");
            }
            Err(err) => {
                tracing::warn!("keeping the previous routes: {err:#}");
                shared.metrics.reload(false);
            }
        }
    }
}
