//! Support for tests, kept out of the crates that ship: only dev-dependencies name it.
//!
//! `fresh_postgres` gives each test a database of its own on the PostgreSQL server named by
//! `ROLLWAVE_TEST_POSTGRES_URL`, or says on stderr that the test is skipped. `wait_for` is
//! the one way a test waits for a real process or thread to reach a condition
//! (`wait_for_async` in a tokio runtime, for its tasks), `Proc` a
//! child process that cannot outlive its test, `free_port` a port to give one,
//! `HttpsServer` a real HTTPS file server (Python's) with a certificate of a private CA.

mod process;

pub use process::{Condition, Proc, free_port, wait_for, wait_for_async};

use sqlx::Connection;

/// The environment variable naming a PostgreSQL server for tests.
pub const POSTGRES_ENV: &str = "ROLLWAVE_TEST_POSTGRES_URL";

/// A fresh, empty PostgreSQL database on the server named by `ROLLWAVE_TEST_POSTGRES_URL`,
/// as a URL; `None` (after saying so on stderr) when the variable is not set, so the
/// caller can skip.
pub async fn fresh_postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_ENV) else {
        // Written straight to stderr, past the test harness's capture, so a skip is seen.
        use std::io::Write;
        let _ =
            writeln!(std::io::stderr(), "SKIPPED {test}: set {POSTGRES_ENV}=postgres://… to run it against PostgreSQL");
        return None;
    };
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={base} is set but unreachable: {e}"));
    let name = format!(
        "rollwave_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    );
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    // Replace the database part of the URL (after the last '/', before any '?').
    let (without_query, query) = match base.split_once('?') {
        Some((b, q)) => (b.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let prefix = match without_query.rfind('/') {
        Some(i) if without_query[..i].contains("://") && i > without_query.find("://").unwrap_or(0) + 2 => {
            &without_query[..i]
        }
        _ => without_query.as_str(),
    };
    Some(format!("{prefix}/{name}{query}"))
}

/// The TLS fixtures (see `fixtures/tls/make.sh`): a private CA, a certificate it issued
/// for 127.0.0.1 with its key, and a CA that issued nothing.
pub fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tls").join(name)
}

/// Python's HTTP file server behind TLS with the fixture's certificate, serving `dir`;
/// killed on drop.
pub struct HttpsServer {
    child: std::process::Child,
    pub base: String,
}

impl HttpsServer {
    pub fn start(dir: &std::path::Path) -> HttpsServer {
        const SERVE: &str = "\
import http.server, ssl, sys
handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=sys.argv[1])
httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[2], sys.argv[3])
httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
print(httpd.server_address[1], flush=True)
httpd.serve_forever()
";
        let mut child = std::process::Command::new("python3")
            .args(["-c", SERVE])
            .arg(dir)
            .arg(tls_fixture("server.pem"))
            .arg(tls_fixture("server.key"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs the test's HTTPS server");
        let mut port = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut port).unwrap();
        let port: u16 = port.trim().parse().expect("the HTTPS server says its port");
        HttpsServer { child, base: format!("https://127.0.0.1:{port}") }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
