//! A server in this process for tests, with a real SQLite file, reached over real HTTP,
//! in virtual time unless a test needs the wall's; and stand-ins for the outside world it
//! talks to. Compiled only with the `testing` feature, which only dev-dependencies turn
//! on: the server's own integration tests and the agent's, which drive agents against it.
//! (`rollwave-testkit` cannot hold this: the store's tests depend on it, and the server
//! on the store.)

use crate::api::*;
use crate::client::Client;
use crate::clock::{Clock, VirtualClock};
use crate::leader::SWEEP;
use crate::{Config, Driver};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long [`TestServer::wait_for`] waits, at most, in real time: a guard against a
/// test that would hang, never a pace.
const WAIT_AT_MOST: Duration = Duration::from_secs(30);

/// The bootstrap admin token of every [`TestServer`].
pub const ADMIN: &str = "rw_admin_secret_for_tests";

pub struct TestServer {
    pub base: String,
    pub node: Arc<crate::Node>,
    /// The server's clock, unless it keeps the wall's time.
    pub clock: Option<Arc<VirtualClock>>,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
}

/// The one way to start a [`TestServer`]: in virtual time unless told otherwise.
/// A change to the test server's configuration, made before it starts.
type ConfigEdit = Box<dyn FnOnce(&mut Config)>;

pub struct Builder {
    driver: Driver,
    wall_clock: bool,
    edits: Vec<ConfigEdit>,
}

impl Builder {
    pub fn driver(mut self, driver: Driver) -> Self {
        self.driver = driver;
        self
    }

    pub fn host_timeout(self, timeout: Duration) -> Self {
        self.configure(move |c| c.host_timeout = timeout)
    }

    /// Reads need no token (`--anonymous-read`).
    pub fn anonymous_read(self) -> Self {
        self.configure(|c| c.anonymous_read = true)
    }

    /// Changes the configuration further.
    pub fn configure(mut self, edit: impl FnOnce(&mut Config) + 'static) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// The server reads the wall clock: for tests whose point is real processes, sockets
    /// or a real browser, where time has to pass as it does for them.
    pub fn wall_clock(mut self) -> Self {
        self.wall_clock = true;
        self
    }

    pub fn start(self) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = config(&dir, "test", self.driver);
        for edit in self.edits {
            edit(&mut config);
        }
        let virtual_clock = (!self.wall_clock).then(VirtualClock::at_fixed_start);
        let clock: Arc<dyn Clock> = match &virtual_clock {
            Some(c) => Arc::clone(c) as Arc<dyn Clock>,
            None => crate::clock::system(),
        };
        let running = runtime.block_on(crate::start_clocked(config, crate::listen::Limits::default(), clock)).unwrap();
        let server = TestServer {
            base: format!("http://{}", running.addr),
            node: running.node,
            clock: virtual_clock,
            runtime: Some(runtime),
            dir,
        };
        server.wait_for("the replica leads", || server.node.is_leader());
        server
    }
}

fn config(dir: &tempfile::TempDir, node_id: &str, driver: Driver) -> Config {
    Config {
        db: format!("sqlite://{}", dir.path().join("api.db").display()),
        listen: "127.0.0.1:0".parse().unwrap(),
        node_id: node_id.into(),
        driver,
        lease_ttl: Duration::from_secs(5),
        bootstrap_token: Some(ADMIN.into()),
        anonymous_read: false,
        host_timeout: Duration::from_secs(30),
        datapoint_bin: crate::node::DATAPOINT_BIN,
        function_traffic_every: Duration::from_secs(60),
        cloudwatch_delay: Duration::from_secs(60),
        prometheus: None,
    }
}

/// Bumped by the stand-ins for the outside world in this file ([`responder`],
/// [`silent_listener`]) and by tests' own ([`nudge`]) whenever something reaches them:
/// [`TestServer::wait_for`] wakes on it.
fn world() -> &'static tokio::sync::watch::Sender<u64> {
    static WORLD: std::sync::OnceLock<tokio::sync::watch::Sender<u64>> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| tokio::sync::watch::channel(0).0)
}

/// Tells waiters that something outside the server changed.
pub fn nudge() {
    world().send_modify(|n| *n += 1);
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder { driver: Driver::Noop { delay: Duration::from_millis(50) }, wall_clock: false, edits: Vec::new() }
    }

    /// A server in virtual time with `driver` and nothing else changed.
    pub fn start(driver: Driver) -> Self {
        Self::builder().driver(driver).start()
    }

    /// A second replica on this one's database and clock; returns its base URL.
    pub fn replica(&self, node_id: &str) -> (String, crate::Running) {
        let config = config(&self.dir, node_id, Driver::Noop { delay: Duration::from_millis(20) });
        let clock: Arc<dyn Clock> = match &self.clock {
            Some(c) => Arc::clone(c) as Arc<dyn Clock>,
            None => crate::clock::system(),
        };
        let running = self.block_on(crate::start_clocked(config, crate::listen::Limits::default(), clock)).unwrap();
        (format!("http://{}", running.addr), running)
    }

    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.base, token.map(str::to_owned))
    }

    /// A client with the [`ADMIN`] token.
    pub fn admin(&self) -> Client {
        self.client(Some(ADMIN))
    }

    /// A directory of the test's own (the database's), removed with the server.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs `future` to completion on the server's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.as_ref().expect("a runtime until dropped").block_on(future)
    }

    /// Waits until `ok`, checking it again whenever the read model changes, the leader
    /// sweeps, a webhook is attempted or the outside world is reached. In virtual time
    /// nothing else can make `ok` true; on the wall clock time passing can (a token
    /// expires, a cache entry ages), so there it is checked again every 20 ms as well.
    pub fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let mut changed = self.node.changed.subscribe();
        let mut swept = self.node.swept.subscribe();
        let mut attempted = self.node.notifier.attempted.subscribe();
        let mut world = world().subscribe();
        let deadline = Instant::now() + WAIT_AT_MOST;
        let wall_clock = self.clock.is_none();
        while !ok() {
            let left = deadline.saturating_duration_since(Instant::now());
            let woke = self.block_on(async {
                tokio::time::timeout(left, async {
                    tokio::select! {
                        _ = changed.changed() => {}
                        _ = swept.changed() => {}
                        _ = attempted.changed() => {}
                        _ = world.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(20)), if wall_clock => {}
                    }
                })
                .await
            });
            assert!(woke.is_ok(), "timed out waiting until {what}");
        }
    }

    /// The virtual clock. Panics for a server on the wall clock.
    pub fn virtual_clock(&self) -> &VirtualClock {
        self.clock.as_deref().expect("a server in virtual time")
    }

    /// Moves virtual time forward by `by`, one leader sweep at a time, and returns once the
    /// leader has swept at the time reached and applied what it decided then.
    pub fn advance(&self, by: Duration) {
        let clock = self.virtual_clock();
        let mut left = by;
        while !left.is_zero() {
            let step = left.min(SWEEP);
            left -= step;
            clock.advance(step);
            if step < SWEEP {
                // Shorter than a sweep's interval: it may wake no sweep, so none is awaited.
                continue;
            }
            // A whole interval always passes the time the leader's next sweep is due.
            let now = clock.now().as_millisecond();
            let mut swept = self.node.swept.subscribe();
            let caught_up = self
                .block_on(async { tokio::time::timeout(WAIT_AT_MOST, swept.wait_for(|at| *at >= now)).await.is_ok() });
            assert!(caught_up, "the leader never swept at {now}");
        }
    }

    pub fn applied_seq(&self) -> i64 {
        self.node.read(|m| m.applied_seq)
    }

    /// Sends a body of `len` bytes by hand, so that the answer is read even though the
    /// server stops reading at its limit (one byte over the limit is all it has to read).
    pub fn oversized(&self, path: &str, len: usize) -> (u16, ErrorBody) {
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let _ = stream.write_all(&vec![b' '; len]);
        // Read until the body is complete; the server may keep the connection open.
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut response = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            response.push_str(&String::from_utf8_lossy(&buf[..n]));
            if response.contains("\r\n\r\n") && response.trim_end().ends_with('}') {
                break;
            }
        }
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        (
            status,
            serde_json::from_str(body).unwrap_or(ErrorBody {
                code: body.into(),
                message: response.clone(),
                details: serde_json::Value::Null,
            }),
        )
    }

    pub fn raw(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, ErrorBody) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let url = format!("{}{path}", self.base);
        let mut response = match method {
            "GET" => {
                let mut r = agent.get(&url);
                if let Some(t) = token {
                    r = r.header("Authorization", format!("Bearer {t}"));
                }
                r.call().unwrap()
            }
            _ => {
                let mut r = agent.post(&url).header("Content-Type", "application/json");
                if let Some(t) = token {
                    r = r.header("Authorization", format!("Bearer {t}"));
                }
                r.send(body).unwrap()
            }
        };
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(ErrorBody {
            code: text,
            message: String::new(),
            details: serde_json::Value::Null,
        });
        (status, body)
    }
}

impl Drop for TestServer {
    /// Leaves the calls to the outside world still under way (a webhook or a check that
    /// hangs until its timeout) to end on their own: the test is over, and nothing of
    /// them is asked any more.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A plain HTTP/1.1 responder on a free port, one connection at a time, for the other
/// side of what the server talks to (webhooks, hosts, exporters). `respond` gets the
/// request's number (from 0) and body, and gives the status line's code and text, the
/// content type and the body. Returns `host:port`.
pub fn responder(respond: impl Fn(usize, &[u8]) -> (&'static str, &'static str, String) + Send + 'static) -> String {
    receiver(move |n, request| respond(n, &request.body))
}

/// A request as a [`receiver`] took it: the bytes of its body exactly as they came.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    /// The first value of the header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// [`responder`], where `respond` sees the whole request: path, headers and body.
pub fn receiver(respond: impl Fn(usize, &Received) -> (&'static str, &'static str, String) + Send + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let path = request_line.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
            let length = headers
                .iter()
                .find(|(name, _)| name == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, content_type, reply) = respond(n, &Received { path, headers, body });
            nudge();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    address
}

/// A TCP listener that accepts connections and never answers: it holds every socket
/// open. Returns `host:port` and the number of connections accepted so far.
pub fn silent_listener() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            held.push(stream);
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            nudge();
        }
    });
    (address, accepted)
}

/// What a replica's `/metrics` answered, read as a scraper reads it.
pub struct Scrape(pub String);

impl Scrape {
    /// Scrapes the replica at `base` (`http://HOST:PORT`).
    pub fn of(base: &str) -> Scrape {
        let text = ureq::get(format!("{base}/metrics")).call().unwrap().body_mut().read_to_string().unwrap();
        Scrape(text)
    }

    /// The value of the sample written exactly as `series` (`name{label="…",…}`), if any.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }
}
