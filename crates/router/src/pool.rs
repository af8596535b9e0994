//! Connections to the hosts: HTTP/1.1 over TCP (`TCP_NODELAY`), kept per host and
//! reused.
//!
//! A connection is on loan to one request from the moment it is taken until its
//! response body ends; then it goes back on top of its host's stack of idle ones (last
//! in, first out, so the busy few stay warm and the rest age out). A connection whose
//! response was cut short is closed, never reused. Idle connections older than
//! [`IDLE_TIMEOUT`] are closed by [`HostPool::sweep`], or when found on the stack.

use crate::body::UpstreamBody;
use http::Request;
use http::uri::Authority;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an idle connection to a host is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many idle connections are kept per host: enough for bursts, without holding
/// thousands of sockets after one.
pub const MAX_IDLE_PER_HOST: usize = 512;

/// The sending half of one connection.
pub type Connection = http1::SendRequest<UpstreamBody>;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened, so nothing was sent: here is the request, whole.
    Connect(Box<Request<UpstreamBody>>),
    /// The connection failed during the exchange.
    Exchange,
}

/// Opens connections.
#[derive(Clone, Debug)]
pub struct Connector {
    pub connect_timeout: Duration,
}

impl Connector {
    /// Sends `request` to the host on an idle connection, else on a new one. Returns the
    /// response and its connection, to hand back with [`HostPool::put_back`] once the
    /// response body has ended.
    pub async fn send(
        &self,
        pool: &Arc<HostPool>,
        address: &Authority,
        mut request: Request<UpstreamBody>,
    ) -> Result<(hyper::Response<Incoming>, Connection), SendError> {
        // An idle connection may have been closed by the host meanwhile: hyper gives
        // back a request it could not start to send, which then goes on the next one.
        while let Some(mut connection) = pool.take() {
            match connection.try_send_request(request).await {
                Ok(response) => return Ok((response, connection)),
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Exchange),
                },
            }
        }
        let Some(mut connection) = self.connect(address).await else {
            return Err(SendError::Connect(Box::new(request)));
        };
        match connection.try_send_request(request).await {
            Ok(response) => Ok((response, connection)),
            // Not even started on a new connection: as good as not connected.
            Err(mut err) => Err(err.take_message().map_or(SendError::Exchange, |r| SendError::Connect(Box::new(r)))),
        }
    }

    async fn connect(&self, address: &Authority) -> Option<Connection> {
        let stream = tokio::time::timeout(self.connect_timeout, open(address)).await.ok()??;
        let _ = stream.set_nodelay(true);
        let (connection, driver) =
            http1::Builder::new().handshake::<_, UpstreamBody>(TokioIo::new(stream)).await.ok()?;
        tokio::spawn(async move {
            // The connection ends when the host closes it or every handle is dropped.
            let _ = driver.await;
        });
        Some(connection)
    }
}

/// A TCP connection to the first address of `address` that accepts one.
async fn open(address: &Authority) -> Option<tokio::net::TcpStream> {
    if let Ok(ip) = address.as_str().parse::<SocketAddr>() {
        return tokio::net::TcpStream::connect(ip).await.ok();
    }
    for ip in tokio::net::lookup_host(address.as_str()).await.ok()? {
        if let Ok(stream) = tokio::net::TcpStream::connect(ip).await {
            return Some(stream);
        }
    }
    None
}

/// The idle connections to one host.
#[derive(Debug, Default)]
pub struct HostPool {
    /// Oldest first; taken and put back at the end.
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    connection: Connection,
    since: Instant,
}

impl HostPool {
    /// The most recently used idle connection that can take a request.
    fn take(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { connection, since }) = idle.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                // Everything below is older still.
                idle.clear();
                return None;
            }
            if connection.is_ready() {
                return Some(connection);
            }
        }
        None
    }

    /// Hands back the connection of a response whose body has ended. It is kept once
    /// hyper is done with that response (at once, nearly always).
    pub fn put_back(self: &Arc<Self>, mut connection: Connection) {
        if connection.is_ready() {
            self.keep(connection);
        } else if !connection.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let pool = self.clone();
            runtime.spawn(async move {
                if std::future::poll_fn(|cx| connection.poll_ready(cx)).await.is_ok() {
                    pool.keep(connection);
                }
            });
        }
    }

    fn keep(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(Idle { connection, since: Instant::now() });
        }
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] or closed by the host.
    pub fn sweep(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.retain(|i| i.since.elapsed() <= IDLE_TIMEOUT && !i.connection.is_closed());
    }

    /// Idle connections now.
    pub fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}
