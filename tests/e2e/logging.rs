//! The long-running commands' logs, from real processes: readable lines by default, JSON
//! objects with `--log-format json` (or `ROLLWAVE_LOG_FORMAT=json`), filtered by `RUST_LOG`.

use crate::kit::{BIN, free_port, wait_for};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// A child process whose stderr lines arrive on a channel; killed when dropped.
struct Logged {
    child: Child,
    lines: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Logged {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Logged {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(BIN);
        command.args(args).current_dir(dir.path()).env_remove("RUST_LOG").env_remove("ROLLWAVE_LOG_FORMAT");
        let mut child =
            command.envs(envs.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Logged { child, lines, _dir: dir }
    }

    /// A server keeping its database in its own directory (the working directory).
    fn server(port: u16, args: &[&str], envs: &[(&str, &str)]) -> Logged {
        let listen = format!("127.0.0.1:{port}");
        let mut all =
            vec!["server", "--data-dir", ".", "--listen", &listen, "--driver", "noop", "--node-id", "logs-test"];
        all.extend_from_slice(args);
        Logged::start(&all, envs)
    }

    /// Every line until the first that `wanted` accepts (which is last), or a panic
    /// naming what came, after [`WAIT`].
    fn until(&self, what: &str, mut wanted: impl FnMut(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let done = wanted(&line);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("no log line {what} within {WAIT:?}; stderr was:\n{}", seen.join("\n"))
                }
            }
        }
    }

    /// Stops the process and returns the lines it wrote that were not read yet.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The pipe closes with the process, which ends the reading thread's lines.
        self.lines.iter().collect()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON log line, checked to carry a level and a message.
fn json_line(line: &str) -> serde_json::Value {
    let value: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
    assert!(value["level"].is_string(), "no level: {line}");
    assert!(value["message"].is_string(), "no message: {line}");
    assert!(value["timestamp"].is_string(), "no timestamp: {line}");
    value
}

fn is_leading(value: &serde_json::Value) -> bool {
    value["level"] == "INFO" && value["message"].as_str().is_some_and(|m| m.contains("takes the lead"))
}

/// Until the server's own metrics say it holds the lease.
fn wait_leading(port: u16) {
    wait_for(&format!("the server on port {port} to take the lead"), WAIT, || {
        let scrape = ureq::get(format!("http://127.0.0.1:{port}/metrics")).call();
        scrape.is_ok_and(|mut r| r.body_mut().read_to_string().is_ok_and(|text| text.contains("\nrollwave_leader 1\n")))
    });
}

#[test]
fn a_server_with_log_format_json_writes_json_lines_and_says_when_it_takes_the_lead() {
    let server = Logged::server(free_port(), &["--log-format", "json"], &[]);
    let lines = server.until("saying the replica leads", |line| is_leading(&json_line(line)));
    let lead = json_line(lines.last().unwrap());
    assert_eq!(lead["target"], "rollwave_server::node", "{lead}");
    assert_eq!(lead["term"], 1, "the lease term is a field of its own: {lead}");
}

#[test]
fn rust_log_warn_leaves_the_info_lines_out() {
    let port = free_port();
    let server = Logged::server(port, &[], &[("ROLLWAVE_LOG_FORMAT", "json"), ("RUST_LOG", "warn")]);
    wait_leading(port);
    for line in server.stop() {
        let value = json_line(&line);
        assert!(value["level"] == "WARN" || value["level"] == "ERROR", "below warn: {line}");
    }
}

#[test]
fn logs_are_readable_lines_by_default() {
    let server = Logged::server(free_port(), &[], &[]);
    let lines = server.until("saying the replica leads", |line| line.contains("this replica takes the lead"));
    let lead = lines.last().unwrap();
    assert!(!lead.starts_with('{'), "{lead}");
    assert!(lead.contains(" INFO rollwave_server::node: this replica takes the lead term=1 node=logs-test"), "{lead}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused() {
    let server = Logged::server(free_port(), &[], &[("RUST_LOG", "rollwave=loud")]);
    let lines = server.until("refusing RUST_LOG", |line| line.contains("RUST_LOG"));
    assert!(lines.last().unwrap().contains("is not a log filter"), "{lines:?}");
    let mut child = server;
    assert_eq!(child.child.wait().unwrap().code(), Some(2));
}

#[test]
fn the_router_logs_as_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(&routes, "salt: s\ncanary_share: 0%\nhosts: []\n").unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let routes = routes.display().to_string();
    let router = Logged::start(
        &["router", "--routes", &routes, "--listen", &listen, "--admin", &admin, "--workers", "1"],
        &[("ROLLWAVE_LOG_FORMAT", "json")],
    );
    let lines = router.until("saying the router proxies", |line| {
        json_line(line)["message"].as_str().is_some_and(|m| m.starts_with("proxying"))
    });
    let started = json_line(lines.last().unwrap());
    assert_eq!(
        (started["level"].as_str(), started["listen"].as_str()),
        (Some("INFO"), Some(listen.as_str())),
        "{started}"
    );
}

#[test]
fn the_agent_logs_as_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().display().to_string();
    // No server answers on port 1: the agent says it started, then that it retries.
    let agent = Logged::start(
        &["--log-format", "json", "agent", "--server", "http://127.0.0.1:1", "--token", "rw_x", "--host-id", "h1"],
        &[
            ("ROLLWAVE_ENVIRONMENT", "prod"),
            ("ROLLWAVE_REGION", "r1"),
            ("ROLLWAVE_ZONE", "z1"),
            ("ROLLWAVE_WORKDIR", &workdir),
        ],
    );
    let lines = agent.until("saying the agent started", |line| json_line(line)["message"] == "agent started");
    assert!(json_line(lines.last().unwrap())["workdir"].is_string(), "{lines:?}");
}
