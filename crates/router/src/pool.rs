//! Connections to the hosts: HTTP/1.1 over TCP (`TCP_NODELAY`, see [`crate::upstream`]),
//! kept per host and reused.
//!
//! A connection is on loan to one request from the moment it is taken until its
//! response body ends; then it goes back on top of its host's stack of idle ones (last
//! in, first out, so the busy few stay warm and the rest age out). A connection whose
//! response was cut short is closed, never reused. Idle connections older than
//! [`IDLE_TIMEOUT`] are closed by [`HostPool::sweep`].

use crate::body::UpstreamBody;
use crate::upstream::{Conn, ExchangeError, ResponseBody};
use http::uri::Authority;
use http::{Request, Response};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an idle connection to a host is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many idle connections are kept per host: enough for bursts, without holding
/// thousands of sockets after one.
pub const MAX_IDLE_PER_HOST: usize = 512;

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
    /// Sends `request` to the host on an idle connection, else on a new one. The
    /// response body hands its connection back ([`ResponseBody::finish`] then
    /// [`HostPool::put_back`]) once it has ended.
    pub async fn send(
        &self,
        pool: &HostPool,
        address: &Authority,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, SendError> {
        // An idle connection may have been closed by the host meanwhile: a request none
        // of which could be written goes on the next one.
        while let Some(conn) = pool.take() {
            match conn.exchange(request).await {
                Ok(response) => return Ok(response),
                Err(ExchangeError::Unsent(unsent)) => request = *unsent,
                Err(ExchangeError::Failed) => return Err(SendError::Exchange),
            }
        }
        let Some(conn) = self.connect(address).await else {
            return Err(SendError::Connect(Box::new(request)));
        };
        match conn.exchange(request).await {
            Ok(response) => Ok(response),
            // Not a byte written on a new connection: as good as not connected.
            Err(ExchangeError::Unsent(unsent)) => Err(SendError::Connect(unsent)),
            Err(ExchangeError::Failed) => Err(SendError::Exchange),
        }
    }

    async fn connect(&self, address: &Authority) -> Option<Conn> {
        let stream = tokio::time::timeout(self.connect_timeout, open(address)).await.ok()??;
        let _ = stream.set_nodelay(true);
        Some(Conn::new(stream))
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
    conn: Conn,
    since: Instant,
}

impl HostPool {
    /// The most recently used idle connection that can take a request. (Age is left to
    /// [`HostPool::sweep`]: a connection a little past its time is as good as any.)
    fn take(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { mut conn, .. }) = idle.pop() {
            if conn.is_idle() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps the connection of a response that has ended, for the next request; `since`
    /// is when that request began (a clock already read), from which its idle time counts.
    pub fn put_back(&self, conn: Conn, since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(Idle { conn, since });
        }
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`] or closed by the host.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.retain_mut(|i| now.duration_since(i.since) <= IDLE_TIMEOUT && i.conn.is_idle());
    }
}
