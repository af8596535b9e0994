//! `rollwave sample-app`: a tiny HTTP service. `GET /health` answers `ok`; every other
//! request answers the version, the host and the track it came on, after `--latency-ms`,
//! and fails with a 500 for `--error-rate` of requests. With `--failing-flag KEY`, a code
//! path behind that boolean flag fails `--flag-error-rate` of requests while the flag is
//! on; the app reads it from its host's agent over OFREP, as any process on a host would.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use clap::Args;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct SampleAppArgs {
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The version this process plays.
    #[arg(long, env = "ROLLWAVE_VERSION", default_value = "dev")]
    pub version: String,
    #[arg(long, env = "ROLLWAVE_HOST_ID", default_value = "local")]
    pub host_id: String,
    /// Share of requests (0 to 1) answered with a 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Added to every answer.
    #[arg(long, default_value_t = 2)]
    pub latency_ms: u64,
    /// A latent defect: `--error-rate` applies only this many seconds after start; before
    /// then every answer succeeds.
    #[arg(long, value_name = "SECONDS")]
    pub fail_after: Option<u64>,
    /// A latent defect that someone switches on: `--error-rate` applies only while this
    /// file exists.
    #[arg(long, value_name = "FILE")]
    pub fail_while: Option<std::path::PathBuf>,
    /// A boolean flag guarding a failing code path, evaluated for this host through the
    /// agent's OFREP endpoint (its address is in `$ROLLWAVE_FLAGS_DIR/address`).
    #[arg(long, value_name = "KEY")]
    pub failing_flag: Option<String>,
    /// Share of requests (0 to 1) the flagged code path fails.
    #[arg(long, default_value_t = 0.2)]
    pub flag_error_rate: f64,
    /// Where the host's agent keeps its flag sets (set in hooks' environment).
    #[arg(long, env = "ROLLWAVE_FLAGS_DIR", value_name = "DIR")]
    pub flags_dir: Option<std::path::PathBuf>,
    /// Exit when the process with this id is gone, so nothing outlives the demo that
    /// started it even when that demo is killed.
    #[arg(long, value_name = "PID")]
    pub exit_with: Option<u32>,
}

struct App {
    args: SampleAppArgs,
    started: std::time::Instant,
    /// A splitmix64 sequence: which requests fail, spread evenly over time.
    draws: AtomicU64,
    /// Whether `--failing-flag` is on for this host, as last read.
    flag_on: AtomicBool,
}

impl App {
    fn fails(&self) -> bool {
        if self.flag_on.load(Ordering::Relaxed) && self.draw() <= self.args.flag_error_rate {
            return true;
        }
        if self.args.fail_after.is_some_and(|s| self.started.elapsed() < Duration::from_secs(s)) {
            return false;
        }
        if self.args.fail_while.as_ref().is_some_and(|f| !f.exists()) {
            return false;
        }
        self.args.error_rate > 0.0 && self.draw() <= self.args.error_rate
    }

    /// The next number of the sequence, in [0, 1).
    fn draw(&self) -> f64 {
        let mut z = self.draws.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Whether the boolean flag `key` is on for `host`, asked of the agent over OFREP. No
/// agent endpoint yet, an error or a non-boolean: off, the flag's safe side.
fn flag_is_on(agent: &ureq::Agent, flags_dir: &std::path::Path, key: &str, host: &str) -> bool {
    let Ok(address) = std::fs::read_to_string(flags_dir.join("address")) else { return false };
    let url = format!("{}/ofrep/v1/evaluate/flags/{key}", address.trim());
    let body = serde_json::json!({ "context": { "targetingKey": host } });
    let Ok(mut response) = agent.post(&url).send_json(&body) else { return false };
    let Ok(answer) = response.body_mut().read_json::<serde_json::Value>() else { return false };
    answer["value"].as_bool().unwrap_or(false)
}

async fn health() -> &'static str {
    "ok\n"
}

async fn answer(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    tokio::time::sleep(Duration::from_millis(app.args.latency_ms)).await;
    let track = headers.get("x-rollwave-track").and_then(|v| v.to_str().ok()).unwrap_or("none").to_owned();
    let body = serde_json::json!({ "version": app.args.version, "host": app.args.host_id, "track": track });
    if app.fails() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": "injected failure", "version": app.args.version })),
        )
            .into_response();
    }
    axum::Json(body).into_response()
}

/// Serves until the process is stopped.
pub fn main(args: SampleAppArgs) -> anyhow::Result<()> {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    let app = Arc::new(App {
        args: args.clone(),
        started: std::time::Instant::now(),
        draws: AtomicU64::new(seed),
        flag_on: AtomicBool::new(false),
    });
    if let (Some(key), Some(dir)) = (args.failing_flag.clone(), args.flags_dir.clone()) {
        let app = Arc::clone(&app);
        std::thread::spawn(move || {
            let agent: ureq::Agent =
                ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(1))).build().into();
            // Polled, as an SDK's provider would; a flag set changes a few times a day.
            loop {
                app.flag_on.store(flag_is_on(&agent, &dir, &key, &app.args.host_id), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(250));
            }
        });
    }
    if let Some(pid) = args.exit_with {
        std::thread::spawn(move || {
            while crate::world::alive(pid) {
                std::thread::sleep(Duration::from_millis(500));
            }
            std::process::exit(0);
        });
    }
    let router = axum::Router::new().route("/health", axum::routing::get(health)).fallback(answer).with_state(app);
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        axum::serve(listener, router).await?;
        Ok(())
    })
}
