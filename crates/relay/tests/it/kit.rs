//! A relay served in-process on a port of its own, a blocking client for it, and a fake
//! control plane answering the two paths a relay uses.

#![allow(dead_code)]

use rollwave_flags::FlagSet;
use rollwave_relay::{Counters, Served, Set};
pub use rollwave_testkit::wait_for;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A set parsed from a flagd document.
pub fn set(version: &str, doc: Value) -> Arc<Set> {
    Arc::new(Set::new(version, FlagSet::from_value(version, &doc).expect("a valid flag set")))
}

/// One boolean-ish flag `which` whose only variant names the set: tells which set answered.
pub fn named_set(version: &str) -> Arc<Set> {
    set(
        version,
        serde_json::json!({"flags": {"which": {"state": "ENABLED", "variants": {version: version}, "defaultVariant": version}}}),
    )
}

/// A relay serving what its sender holds, until dropped.
pub struct Relay {
    pub addr: SocketAddr,
    pub flags: watch::Sender<Arc<Served>>,
    pub counters: Arc<Counters>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    agent: ureq::Agent,
}

impl Relay {
    pub fn start(served: Served) -> Relay {
        let (flags, rx) = watch::channel(Arc::new(served));
        Relay::start_with(flags, rx)
    }

    pub fn start_with(flags: watch::Sender<Arc<Served>>, rx: watch::Receiver<Arc<Served>>) -> Relay {
        let counters = Counters::new();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = counters.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                rollwave_relay::serve(listener, rx, serving, async {
                    let _ = stopped.await;
                })
                .await;
            });
        });
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Relay { addr, flags, counters, stop: Some(stop), thread: Some(thread), agent }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to `path` with `headers`: status, headers, body.
    pub fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut request = self.agent.post(self.url(path)).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::read(request.send(body).expect("the relay answers"))
    }

    pub fn get(&self, path: &str) -> Answer {
        Answer::read(self.agent.get(self.url(path)).call().expect("the relay answers"))
    }

    /// The single evaluation of `key` for `context`.
    pub fn evaluate(&self, key: &str, context: Value) -> Answer {
        self.post(
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            &[],
            &serde_json::json!({ "context": context }).to_string(),
        )
    }

    /// The bulk evaluation for `context` with extra headers.
    pub fn bulk(&self, context: Value, headers: &[(&str, &str)]) -> Answer {
        self.post("/ofrep/v1/evaluate/flags", headers, &serde_json::json!({ "context": context }).to_string())
    }

    /// Which set answered for this key (see [`named_set`]), with extra headers.
    pub fn which(&self, key: &str, headers: &[(&str, &str)]) -> String {
        let answer = self.post(
            "/ofrep/v1/evaluate/flags/which",
            headers,
            &serde_json::json!({"context": {"targetingKey": key}}).to_string(),
        );
        assert_eq!(answer.status, 200, "{}", answer.text);
        answer.json()["value"].as_str().unwrap().to_owned()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Answer {
    fn read(mut response: ureq::http::Response<ureq::Body>) -> Answer {
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Answer { status, headers, text }
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A change-notification stream opened on a relay, read line by line.
pub struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    pub fn open(addr: SocketAddr, last_event_id: Option<&str>) -> Events {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let last = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
        write!(stream, "GET /ofrep/v1/events HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\n{last}\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
        Events { reader }
    }

    /// The next event with data (chunked framing skipped): its fields.
    pub fn next_event(&mut self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("no event within 10 s ({e}); read {fields:?}"));
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if fields.iter().any(|(k, _): &(String, String)| k == "data") {
                    return fields;
                }
                fields.clear();
                continue;
            }
            // Chunk sizes of the chunked transfer coding are hex digits alone.
            if line.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            if let Some((name, value)) = line.split_once(':')
                && !name.is_empty()
            {
                fields.push((name.to_owned(), value.trim_start().to_owned()));
            }
        }
    }
}

/// What the fake control plane answers, and what it heard.
#[derive(Default)]
pub struct PlaneState {
    pub flags: Option<rollwave_api::RegionFlags>,
    /// Statuses to answer the next pushes with, before answering 200.
    pub push_failures: Vec<u16>,
    pub pushes: Vec<rollwave_api::FlagEvaluationsPush>,
    pub polls: Vec<String>,
    pub tokens: Vec<Option<String>>,
}

/// A control plane answering `GET /v1/services/{s}/flags/{e}/{r}` (a long-poll with
/// `after`) and `POST /v1/flag-evaluations`, on a thread per connection; stopped when
/// dropped.
pub struct FakePlane {
    pub url: String,
    pub state: Arc<(Mutex<PlaneState>, Condvar)>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FakePlane {
    pub fn start(flags: rollwave_api::RegionFlags) -> FakePlane {
        FakePlane::start_on(TcpListener::bind("127.0.0.1:0").unwrap(), flags)
    }

    pub fn start_on(listener: TcpListener, flags: rollwave_api::RegionFlags) -> FakePlane {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new((Mutex::new(PlaneState { flags: Some(flags), ..PlaneState::default() }), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || answer(stream, &shared));
            }
        });
        FakePlane { url: format!("http://{addr}"), state, addr, stop }
    }

    /// Changes what the region serves (a new generation) and wakes the long-polls.
    pub fn publish(&self, change: impl FnOnce(&mut rollwave_api::RegionFlags)) {
        let (lock, wake) = &*self.state;
        let mut state = lock.lock().unwrap();
        let flags = state.flags.as_mut().unwrap();
        change(flags);
        flags.generation += 1;
        wake.notify_all();
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut PlaneState) -> T) -> T {
        f(&mut self.state.0.lock().unwrap())
    }
}

impl Drop for FakePlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag and ends, closing the listener.
        let _ = TcpStream::connect(self.addr);
        let (lock, wake) = &*self.state;
        lock.lock().unwrap().flags = None;
        wake.notify_all();
    }
}

fn answer(stream: TcpStream, shared: &(Mutex<PlaneState>, Condvar)) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0usize;
    let mut token = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => token = value.trim().strip_prefix("Bearer ").map(str::to_owned),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_owned());
    let (lock, wake) = shared;
    let (status, text) = if method == "POST" && target == "/v1/flag-evaluations" {
        let mut state = lock.lock().unwrap();
        state.tokens.push(token);
        if state.push_failures.is_empty() {
            match serde_json::from_slice(&body) {
                Ok(push) => {
                    state.pushes.push(push);
                    (200, "{\"ok\":true}".to_owned())
                }
                Err(e) => (400, format!("{{\"error\":{{\"code\":\"bad_request\",\"message\":\"{e}\"}}}}")),
            }
        } else {
            let status = state.push_failures.remove(0);
            (status, "{\"error\":{\"code\":\"unavailable\",\"message\":\"try again\"}}".to_owned())
        }
    } else if method == "GET" && target.starts_with("/v1/services/") {
        let after: Option<i64> =
            target.split(['?', '&']).find_map(|p| p.strip_prefix("after=")).and_then(|g| g.parse().ok());
        let mut state = lock.lock().unwrap();
        state.polls.push(target.clone());
        state.tokens.push(token);
        // A long-poll: wait (a little, for the tests' sake) for a newer generation.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while let (Some(after), Some(flags)) = (after, &state.flags) {
            let now = std::time::Instant::now();
            if flags.generation != after || now >= deadline {
                break;
            }
            state = wake.wait_timeout(state, deadline - now).unwrap().0;
        }
        match &state.flags {
            Some(flags) => (200, serde_json::to_string(flags).unwrap()),
            None => (503, "{\"error\":{\"code\":\"unavailable\",\"message\":\"stopping\"}}".to_owned()),
        }
    } else {
        (404, "{\"error\":{\"code\":\"not_found\",\"message\":\"no such path\"}}".to_owned())
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}
