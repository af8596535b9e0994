//! A load generator for the control plane: simulated hosts that register, long-poll for
//! their desired version and report each deployment, as `rollwave agent` does, while a
//! real rollout runs through them.
//!
//! It applies a manifest of `--hosts` hosts (one `prod` environment, 10 regions of 2
//! zones, in 4 waves), starts the hosts spread over `--stagger`, and after `--warmup`
//! measures for `--measure`: `--release-at` into that window it creates a release and
//! approves it. Every host then loops: long-poll `desired?after=<its command>&wait=N`;
//! when the command changes, "install" for about `--install-ms`, report, poll again. An
//! idle host thus completes one request every N seconds.
//!
//! Latency is reported per class: a long-poll that delivered a change, as its lag (from
//! the moment the change reached the first host, or the poll was sent if later, to its
//! arrival here: how fast a deployment fans out); a long-poll that timed out, as the time
//! beyond its wait (the server's overhead); a report, as its round trip.
//!
//! It prints `MEASURE start` and `MEASURE end` lines as the window opens and closes (for
//! whoever samples the server's CPU), then latency percentiles per request class, the
//! errors, how far the rollout got, and one `RESULT key=value…` line for scripts. It
//! talks only to a loopback address and stops by itself.
//!
//! ```text
//! ROLLWAVE_BOOTSTRAP_TOKEN=secret rollwave server --db sqlite:///tmp/b.db --listen 127.0.0.1:7070 &
//! cargo run --release -p rollwave-server --example loadgen -- --target 127.0.0.1:7070 --token secret
//! ```
//!
//! `bench/api/run.sh` drives it against SQLite and PostgreSQL.

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: loadgen --target 127.0.0.1:PORT [--token ADMIN_TOKEN] [options]
  --token T          an admin token (or set ROLLWAVE_TOKEN)
  --hosts N          simulated hosts, a multiple of 20 (default 10000)
  --wait S           long-poll wait in seconds, 1 to 60 (default 10)
  --stagger S        hosts start spread over this many seconds (default 10)
  --warmup S         seconds from the start to the measurement window, at least --stagger (default 15)
  --measure S        length of the measurement window in seconds (default 100)
  --release-at S     seconds into the window to create and approve the release (default 5)
  --install-ms MS    how long a simulated install takes; up to 20% more at random (default 1000)
  --service NAME     the service the manifest defines (default fleet)
  --version V        the release to roll out (default v2)
  --samples FILE     also write every measured request as CSV: class, ms since the window opened, latency ms";

/// Any single request but a long-poll must finish within this; a long-poll gets its wait more.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// Error messages printed per kind of failure, so that a broken run says why without flooding.
const ERRORS_SHOWN: usize = 3;

struct Options {
    target: SocketAddr,
    token: String,
    hosts: usize,
    wait: Duration,
    stagger: Duration,
    warmup: Duration,
    measure: Duration,
    release_at: Duration,
    install: Duration,
    service: String,
    version: String,
    samples: Option<std::path::PathBuf>,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut o = Options {
            target: SocketAddr::from(([127, 0, 0, 1], 7070)),
            token: std::env::var("ROLLWAVE_TOKEN").unwrap_or_default(),
            hosts: 10_000,
            wait: Duration::from_secs(10),
            stagger: Duration::from_secs(10),
            warmup: Duration::from_secs(15),
            measure: Duration::from_secs(100),
            release_at: Duration::from_secs(5),
            install: Duration::from_millis(1000),
            service: "fleet".into(),
            version: "v2".into(),
            samples: None,
        };
        let seconds = |flag: &str, v: &str| -> anyhow::Result<Duration> {
            let s: f64 = v.parse().with_context(|| format!("{flag} takes seconds, not {v:?}"))?;
            Duration::try_from_secs_f64(s).with_context(|| format!("{flag} takes a positive number of seconds"))
        };
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = args.next().with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--target" => o.target = value.parse().with_context(|| format!("--target {value:?}: use IP:PORT"))?,
                "--token" => o.token = value,
                "--hosts" => o.hosts = value.parse().with_context(|| format!("--hosts {value:?}"))?,
                "--wait" => o.wait = Duration::from_secs(value.parse().with_context(|| format!("--wait {value:?}"))?),
                "--stagger" => o.stagger = seconds(&flag, &value)?,
                "--warmup" => o.warmup = seconds(&flag, &value)?,
                "--measure" => o.measure = seconds(&flag, &value)?,
                "--release-at" => o.release_at = seconds(&flag, &value)?,
                "--install-ms" => {
                    o.install = Duration::from_millis(value.parse().with_context(|| format!("--install-ms {value:?}"))?)
                }
                "--service" => o.service = value,
                "--version" => o.version = value,
                "--samples" => o.samples = Some(value.into()),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        ensure!(
            o.target.ip().is_loopback(),
            "--target must be a loopback address such as 127.0.0.1:7070, not {}",
            o.target
        );
        ensure!(!o.token.is_empty(), "an admin token is needed: --token T or ROLLWAVE_TOKEN\n{USAGE}");
        ensure!(
            o.hosts >= 20 && o.hosts.is_multiple_of(20),
            "--hosts must be a positive multiple of 20 (10 regions of 2 zones)"
        );
        ensure!((1..=60).contains(&o.wait.as_secs()), "--wait must be 1 to 60 seconds: the server waits at most 60");
        ensure!(o.warmup >= o.stagger, "--warmup must be at least --stagger, so every host runs before the window");
        ensure!(o.release_at < o.measure, "--release-at must fall inside the window (--measure)");
        Ok(o)
    }
}

/// The pipeline under load: 10 regions of 2 equal zones in one environment, rolled out
/// in waves of 1, 2, 3 and 4 regions with short bakes, so that a release completes in
/// about 90 s when hosts install in a second and the server keeps up.
fn manifest(o: &Options) -> String {
    let per_zone = o.hosts / 20;
    let mut m = format!("service: {}\nenvironments:\n  prod:\n    regions:\n", o.service);
    for r in 1..=10 {
        let _ = writeln!(m, "      r{r:02}: {{ zones: {{ r{r:02}a: {per_zone}, r{r:02}b: {per_zone} }} }}");
    }
    m.push_str(
        "\
strategy:
  one_box: { hosts: 1, max_share: 1%, bake: 5s }
  rolling: { batch: 33%, zone_bake: 2s }
stages:
  - name: prod
    environment: prod
    approval: true
    waves:
      - { name: w1, regions: [r01], bake: 2s }
      - { name: w2, regions: [r02, r03], bake: 2s }
      - { name: w3, regions: [r04, r05, r06], bake: 2s }
      - { name: w4, regions: [r07, r08, r09, r10], bake: 2s }
",
    );
    m
}

/// Every host of [`manifest`]: (region, zone, host name).
fn fleet(o: &Options) -> Vec<(String, String, String)> {
    let per_zone = o.hosts / 20;
    let mut hosts = Vec::with_capacity(o.hosts);
    for r in 1..=10 {
        for z in ['a', 'b'] {
            for n in 1..=per_zone {
                hosts.push((format!("r{r:02}"), format!("r{r:02}{z}"), format!("r{r:02}{z}-{n}")));
            }
        }
    }
    hosts
}

/// xorshift64*: enough randomness for start times and install jitter, and repeatable.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// What the generator reads of the API's answers. Like an agent outside this workspace, it
/// keeps its own view of the wire types: only the fields it needs (others are ignored).
#[derive(Deserialize)]
struct Desired {
    command: u64,
    version: String,
}

/// A registration's answer: the host slot the agent took and its desired state, or (from
/// servers before slots) the desired state alone.
#[derive(Deserialize)]
#[serde(untagged)]
enum Registered {
    Slot { host: String, desired: Desired },
    Bare(Desired),
}

#[derive(Deserialize)]
struct ServiceSummary {
    name: String,
    hosts: usize,
}

#[derive(Deserialize)]
struct ReleaseView {
    version: String,
    outcome: String,
    #[serde(default)]
    at: Option<String>,
}

#[derive(Deserialize)]
struct ServiceStatus {
    environments: Vec<EnvironmentVersions>,
    releases: Vec<ReleaseView>,
}

#[derive(Deserialize)]
struct EnvironmentVersions {
    /// (version, hosts running it)
    versions: Vec<(String, u64)>,
}

/// A failed request: what kind of failure, for counting, and what was said.
struct Failure {
    kind: &'static str,
    message: String,
}

impl Failure {
    fn new(kind: &'static str, message: impl std::fmt::Display) -> Self {
        Failure { kind, message: message.to_string() }
    }
}

/// The API over a pooled HTTP/1.1 client: one connection per request in flight.
#[derive(Clone)]
struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    authorization: String,
}

impl Api {
    fn new(o: &Options) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(usize::MAX)
            .build(connector);
        Api { client, base: format!("http://{}", o.target), authorization: format!("Bearer {}", o.token) }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Vec<u8>>, limit: Duration) -> Result<Bytes, Failure> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, &self.authorization);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request =
            request.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| Failure::new("request", e))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| Failure::new("transport", e))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| Failure::new("transport", e))?.to_bytes();
            if !status.is_success() {
                let kind = if status.is_client_error() { "http_4xx" } else { "http_5xx" };
                return Err(Failure::new(kind, format!("{status}: {}", String::from_utf8_lossy(&bytes))));
            }
            Ok(bytes)
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| Failure::new("timeout", format!("no answer in {limit:?}")))?
    }

    async fn get<T: DeserializeOwned>(&self, path: &str, limit: Duration) -> Result<T, Failure> {
        let bytes = self.send(Method::GET, path, None, limit).await?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::new("decode", e))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        limit: Duration,
    ) -> Result<T, Failure> {
        let body = serde_json::to_vec(body).map_err(|e| Failure::new("request", e))?;
        let bytes = self.send(Method::POST, path, Some(body), limit).await?;
        serde_json::from_slice(&bytes).map_err(|e| Failure::new("decode", e))
    }
}

/// A long-poll that returned a command the host did not have.
struct Change {
    command: u64,
    sent: Instant,
    received: Instant,
}

/// Everything measured, with completion times; the window is cut out at the end.
#[derive(Default)]
struct Samples {
    registers: Vec<Duration>,
    /// Long-polls that ended at their wait, with the time beyond the wait.
    timed_out: Vec<(Instant, Duration)>,
    changes: Vec<Change>,
    reports: Vec<(Instant, Duration)>,
    errors: Vec<(Instant, &'static str)>,
    /// When each report of the release's version was accepted.
    reported: Vec<Instant>,
    shown: BTreeMap<&'static str, usize>,
}

/// What the status endpoint said last.
#[derive(Default)]
struct Progress {
    outcome: String,
    at: Option<String>,
    on_version: u64,
    completed: Option<Instant>,
}

struct Shared {
    options: Options,
    api: Api,
    stop: AtomicBool,
    samples: Mutex<Samples>,
    progress: Mutex<Progress>,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Samples)) {
        f(&mut self.samples.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn failed(&self, what: &str, failure: Failure) {
        self.record(|s| {
            s.errors.push((Instant::now(), failure.kind));
            let shown = s.shown.entry(failure.kind).or_default();
            if *shown < ERRORS_SHOWN {
                *shown += 1;
                eprintln!("loadgen: {what} failed ({}): {}", failure.kind, failure.message);
            }
        });
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// One simulated host, from its start until the run stops.
async fn host(shared: Arc<Shared>, (region, zone, name): (String, String, String), start: Instant, seed: u64) {
    tokio::time::sleep_until(start.into()).await;
    let o = &shared.options;
    let mut rng = Rng::new(seed);
    let register = json!({
        "service": o.service, "environment": "prod", "host": name, "region": region, "zone": zone
    });
    let (name, mut last) = loop {
        if shared.stopped() {
            return;
        }
        let sent = Instant::now();
        match shared.api.post::<Registered>("/v1/hosts/register", &register, REQUEST_LIMIT).await {
            Ok(registered) => {
                shared.record(|s| s.registers.push(sent.elapsed()));
                break match registered {
                    Registered::Slot { host, desired } => (host, desired.command),
                    Registered::Bare(desired) => (name, desired.command),
                };
            }
            Err(e) => {
                shared.failed("register", e);
                tokio::time::sleep(Duration::from_millis(1000 + rng.below(1000))).await;
            }
        }
    };
    let poll = format!("/v1/services/{}/hosts/prod/{name}/desired?wait={}&after=", o.service, o.wait.as_secs());
    let report_path = format!("/v1/services/{}/hosts/prod/{name}/report", o.service);
    while !shared.stopped() {
        let sent = Instant::now();
        let desired = match shared.api.get::<Desired>(&format!("{poll}{last}"), o.wait + REQUEST_LIMIT).await {
            Ok(desired) => desired,
            Err(e) => {
                shared.failed("long-poll", e);
                tokio::time::sleep(Duration::from_millis(1000 + rng.below(1000))).await;
                continue;
            }
        };
        let received = Instant::now();
        if desired.command == last {
            shared.record(|s| s.timed_out.push((received, (received - sent).saturating_sub(o.wait))));
            continue;
        }
        shared.record(|s| s.changes.push(Change { command: desired.command, sent, received }));
        let jitter = rng.below(o.install.as_millis() as u64 / 5 + 1);
        tokio::time::sleep(o.install + Duration::from_millis(jitter)).await;
        let report = json!({ "command": desired.command, "ok": true });
        for attempt in 1..=3 {
            let sent = Instant::now();
            match shared.api.post::<serde_json::Value>(&report_path, &report, REQUEST_LIMIT).await {
                Ok(_) => {
                    let done = Instant::now();
                    shared.record(|s| {
                        s.reports.push((done, done - sent));
                        if desired.version == o.version {
                            s.reported.push(done);
                        }
                    });
                    break;
                }
                Err(e) => {
                    shared.failed("report", e);
                    if attempt == 3 || shared.stopped() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        last = desired.command;
    }
}

/// Follows the release once a second: its outcome, position and hosts on its version.
async fn monitor(shared: Arc<Shared>) {
    let o = &shared.options;
    let path = format!("/v1/services/{}", o.service);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !shared.stopped() {
        tick.tick().await;
        let Ok(status) = shared.api.get::<ServiceStatus>(&path, REQUEST_LIMIT).await else { continue };
        let on_version: u64 =
            status.environments.iter().flat_map(|e| &e.versions).filter(|(v, _)| *v == o.version).map(|(_, n)| n).sum();
        let release = status.releases.iter().find(|r| r.version == o.version);
        let mut p = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
        p.on_version = on_version;
        if let Some(r) = release {
            p.outcome = r.outcome.clone();
            p.at = r.at.clone();
            if r.outcome == "completed" && p.completed.is_none() {
                p.completed = Some(Instant::now());
            }
        }
    }
}

/// Creates the release and approves it; returns when it was created.
async fn release(shared: &Shared) -> anyhow::Result<Instant> {
    let o = &shared.options;
    let body = json!({ "version": o.version });
    let sent = Instant::now();
    let path = format!("/v1/services/{}/releases", o.service);
    let created: ReleaseView = shared
        .api
        .post(&path, &body, REQUEST_LIMIT)
        .await
        .map_err(|e| anyhow::anyhow!("creating the release: {}", e.message))?;
    let create_took = sent.elapsed();
    let approved_at = Instant::now();
    let path = format!("/v1/services/{}/releases/{}/approve", o.service, o.version);
    let _: ReleaseView = shared
        .api
        .post(&path, &json!({}), REQUEST_LIMIT)
        .await
        .map_err(|e| anyhow::anyhow!("approving the release: {}", e.message))?;
    eprintln!(
        "loadgen: release {} created ({}) in {:.1} ms, approved in {:.1} ms",
        created.version,
        created.outcome,
        ms(create_took),
        ms(approved_at.elapsed())
    );
    Ok(sent)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Count and percentiles (in milliseconds) of a set of durations.
struct Summary {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Summary {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        let n = v.len();
        let at = |q: f64| v.get(((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1).map_or(0.0, |d| ms(*d));
        Summary { n, p50: at(0.50), p99: at(0.99), max: at(1.0) }
    }

    fn row(&self, name: &str, window: Duration) -> String {
        format!(
            "{name:<40} {:>8} {:>8.1} {:>9.2} {:>9.2} {:>9.2}",
            self.n,
            self.n as f64 / window.as_secs_f64(),
            self.p50,
            self.p99,
            self.max
        )
    }

    fn keys(&self, prefix: &str) -> String {
        format!(
            "{prefix}_n={} {prefix}_p50={:.2} {prefix}_p99={:.2} {prefix}_max={:.2}",
            self.n, self.p50, self.p99, self.max
        )
    }
}

/// Every request measured, as CSV, for plotting latency over time.
fn write_samples(path: &std::path::Path, samples: &Samples, window_start: Instant) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "class,at_ms,latency_ms")?;
    // Signed: the warm-up comes before the window.
    let at = |t: Instant| if t >= window_start { ms(t - window_start) } else { -ms(window_start - t) };
    for (t, d) in &samples.timed_out {
        writeln!(out, "timed_out,{:.1},{:.3}", at(*t), ms(*d))?;
    }
    for c in &samples.changes {
        writeln!(out, "changed,{:.1},{:.3}", at(c.received), ms(c.received - c.sent))?;
    }
    for (t, d) in &samples.reports {
        writeln!(out, "report,{:.1},{:.3}", at(*t), ms(*d))?;
    }
    out.flush()
}

/// This process's CPU time in clock ticks (USER_HZ, 100 a second on Linux).
fn own_cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse(std::env::args().skip(1))?;
    let api = Api::new(&options);
    let ready = Instant::now();
    while let Err(e) = api.send(Method::GET, "/readyz", None, Duration::from_secs(1)).await {
        ensure!(
            ready.elapsed() < Duration::from_secs(30),
            "the server at {} is not ready: {}",
            options.target,
            e.message
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let apply = json!({ "manifest": manifest(&options), "file": "loadgen.yaml" });
    let summary: ServiceSummary = api
        .post("/v1/services", &apply, REQUEST_LIMIT)
        .await
        .map_err(|e| anyhow::anyhow!("applying the manifest: {}", e.message))?;
    eprintln!(
        "loadgen: service {} has {} hosts; starting them over {:?}",
        summary.name, summary.hosts, options.stagger
    );

    let shared = Arc::new(Shared {
        options,
        api,
        stop: AtomicBool::new(false),
        samples: Mutex::default(),
        progress: Mutex::default(),
    });
    let o = &shared.options;
    let t0 = Instant::now();
    let mut rng = Rng::new(1);
    for (i, h) in fleet(o).into_iter().enumerate() {
        let start = t0 + o.stagger.mul_f64(rng.below(1_000_000) as f64 / 1_000_000.0);
        tokio::spawn(host(Arc::clone(&shared), h, start, i as u64 + 2));
    }

    let window_start = t0 + o.warmup;
    let window_end = window_start + o.measure;
    tokio::time::sleep_until(window_start.into()).await;
    println!("MEASURE start pid={}", std::process::id());
    let cpu_start = own_cpu_ticks();
    tokio::spawn(monitor(Arc::clone(&shared)));
    tokio::time::sleep_until((window_start + o.release_at).into()).await;
    let created = release(&shared).await?;
    tokio::time::sleep_until(window_end.into()).await;
    println!("MEASURE end");
    shared.stop.store(true, Ordering::Relaxed);
    let cpu_end = own_cpu_ticks();

    let samples = std::mem::take(&mut *shared.samples.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(path) = &o.samples {
        write_samples(path, &samples, window_start).with_context(|| format!("writing {}", path.display()))?;
    }
    let inside = |t: Instant| t >= window_start && t < window_end;
    // A change is visible from the moment the first host received it (or when this host
    // asked, if later): the lag is how long the change took to reach this host.
    let mut first: HashMap<u64, Instant> = HashMap::new();
    for c in &samples.changes {
        first.entry(c.command).and_modify(|t| *t = (*t).min(c.received)).or_insert(c.received);
    }
    let mut at_once = 0;
    let mut lags = Vec::new();
    for c in samples.changes.iter().filter(|c| inside(c.received)) {
        let visible = first[&c.command];
        if c.sent >= visible {
            at_once += 1;
        }
        lags.push(c.received - visible.max(c.sent));
    }
    let changed = Summary::of(lags);
    let timed_out = Summary::of(samples.timed_out.iter().filter(|(t, _)| inside(*t)).map(|(_, d)| *d).collect());
    let reports = Summary::of(samples.reports.iter().filter(|(t, _)| inside(*t)).map(|(_, d)| *d).collect());
    let registers = Summary::of(samples.registers);
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, kind) in samples.errors.iter().filter(|(t, _)| inside(*t)) {
        *errors.entry(kind).or_default() += 1;
    }
    let errors_in_window: usize = errors.values().sum();
    let requests = changed.n + timed_out.n + reports.n;
    let rps = requests as f64 / o.measure.as_secs_f64();
    let reported = samples.reported.iter().filter(|t| inside(**t)).count();
    let (outcome, position, on_version, lead) = {
        let p = shared.progress.lock().unwrap_or_else(|p| p.into_inner());
        (p.outcome.clone(), p.at.clone(), p.on_version, p.completed.map(|t| t - created))
    };
    let loadgen_cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => (b - a) as f64 / 100.0 / o.measure.as_secs_f64(),
        _ => f64::NAN,
    };

    let w = o.measure;
    println!();
    println!(
        "{} hosts against {}, long-poll wait {} s, {:.0} s window, release {} at +{:.0} s",
        o.hosts,
        o.target,
        o.wait.as_secs(),
        w.as_secs_f64(),
        o.version,
        o.release_at.as_secs_f64()
    );
    println!("{:<40} {:>8} {:>8} {:>9} {:>9} {:>9}", "request class", "count", "req/s", "p50 ms", "p99 ms", "max ms");
    println!("{}", changed.row("long-poll, change delivered (lag)", w));
    println!("{}", timed_out.row("long-poll, timed out (beyond the wait)", w));
    println!("{}", reports.row("report", w));
    println!("{}", registers.row("register (warm-up, whole run)", o.warmup));
    println!(
        "changes answered at once: {at_once} of {}; the rest woke parked long-polls (lag from first delivery)",
        changed.n
    );
    println!("requests in the window: {requests} ({rps:.1}/s); errors: {errors_in_window} {errors:?}");
    println!(
        "rollout: release {} {} (at {}), {} hosts on {}, {} reports of it; lead time {}",
        o.version,
        if outcome.is_empty() { "unknown" } else { &outcome },
        position.as_deref().unwrap_or("-"),
        on_version,
        o.version,
        reported,
        lead.map_or("-".to_owned(), |d| format!("{:.0} s", d.as_secs_f64()))
    );
    println!("loadgen CPU: {loadgen_cpu:.2} cores");
    println!(
        "RESULT rps={rps:.1} {} {} {} {} errors={errors_in_window} at_once={at_once} outcome={} \
         on_version={on_version} reported={reported} lead_s={} loadgen_cpu={loadgen_cpu:.2}",
        changed.keys("changed"),
        timed_out.keys("timedout"),
        reports.keys("report"),
        registers.keys("register"),
        if outcome.is_empty() { "unknown" } else { &outcome },
        lead.map_or("-".to_owned(), |d| format!("{:.0}", d.as_secs_f64())),
    );
    Ok(())
}
