//! A server in this process, with a real SQLite file, reached over real HTTP.
#![allow(dead_code)]

use rollwave_server::api::*;
use rollwave_server::client::Client;
use rollwave_server::{Config, Driver};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "rw_admin_secret_for_tests";

pub struct TestServer {
    pub base: String,
    pub runtime: tokio::runtime::Runtime,
    pub node: std::sync::Arc<rollwave_server::Node>,
    pub _dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start(driver: Driver) -> Self {
        Self::start_with(driver, Duration::from_secs(30))
    }

    pub fn start_with(driver: Driver, host_timeout: Duration) -> Self {
        Self::start_configured(driver, |c| c.host_timeout = host_timeout)
    }

    /// A server whose reads need no token (`--anonymous-read`).
    pub fn start_anonymous_read(driver: Driver) -> Self {
        Self::start_configured(driver, |c| c.anonymous_read = true)
    }

    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.base, token.map(str::to_owned))
    }

    pub fn wait_until(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let start = Instant::now();
        while !ok() {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
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

/// A plain HTTP/1.1 responder on a free port, one connection at a time, for the other
/// side of what the server talks to (webhooks, hosts, exporters). `respond` gets the
/// request's number (from 0) and body, and gives the status line's code and text, the
/// content type and the body. Returns `host:port`.
pub fn responder(respond: impl Fn(usize, &[u8]) -> (&'static str, &'static str, String) + Send + 'static) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let (status, content_type, reply) = respond(n, &body);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    address
}

impl TestServer {
    /// A server whose configuration `edit` changes from the one [`TestServer::start`] uses.
    pub fn start_configured(driver: Driver, edit: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let mut config = Config {
            db: format!("sqlite://{}", dir.path().join("api.db").display()),
            listen: "127.0.0.1:0".parse().unwrap(),
            node_id: "test".into(),
            driver,
            lease_ttl: Duration::from_secs(5),
            bootstrap_token: Some(ADMIN.into()),
            anonymous_read: false,
            host_timeout: Duration::from_secs(30),
            datapoint_bin: rollwave_server::node::DATAPOINT_BIN,
            prometheus: None,
        };
        edit(&mut config);
        let running = runtime.block_on(rollwave_server::start(config)).unwrap();
        let server = TestServer { base: format!("http://{}", running.addr), node: running.node, runtime, _dir: dir };
        server.wait_until("the replica leads", || server.node.is_leader());
        server
    }
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
        }
    });
    (address, accepted)
}
