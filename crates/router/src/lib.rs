//! `rollwave router`: an L7 proxy in front of the hosts of one service in one region,
//! splitting traffic between a stable and a canary track.
//!
//! - [`track`]: the sticky hash (`murmur3_x86_32("{salt}:{key}") % 10000`) and the
//!   headers that carry a decision along the call chain; usable on its own by services.
//! - [`baggage`]: the W3C `baggage` header, read and rewritten within its limits.
//! - [`routes`]: the routes file, parsed with located errors.
//! - [`balance`]: host health (ejection, probes) and power-of-two-choices, without I/O.
//! - `table`, `proxy`, `pool`, `upstream`, `body`, `server`: the running proxy (hyper
//!   serves the clients; `upstream` speaks HTTP/1.1 to the hosts on the same task).
//! - [`sync`], [`push`]: server mode, the table from the control plane and the traffic
//!   per host back to it.
//!
//! **Invariant:** a request is never refused because of what it carries (a malformed
//! baggage, an unknown track): unreadable decisions are ignored and the key is hashed.
//! The listener is never restarted: a routes reload swaps an immutable table.

pub mod baggage;
pub mod balance;
mod body;
pub mod messages;
pub mod metrics;
mod pool;
mod proxy;
pub mod push;
mod rng;
pub mod routes;
mod server;
pub mod sync;
mod table;
pub mod track;
mod upstream;

pub use server::{Config, Router};

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// How often, in server mode, the router pushes its traffic per host to the control
/// plane (the default of `--push-every`; see [`push`]).
pub const CONTROL_PLANE_PUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Options of `rollwave router`.
#[derive(Args, Debug, Clone)]
pub struct RouterArgs {
    /// Address to listen on for proxied traffic.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,

    /// Address of the admin endpoint: /metrics (Prometheus), /routes, /healthz.
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub admin: String,

    /// Standalone mode: read the routing table from this YAML file, reloaded when it
    /// changes (a bad file is reported and the previous table stays).
    #[arg(long, value_name = "FILE")]
    pub routes: Option<PathBuf>,

    /// Control-plane URL: learn the routing table from it (server mode) instead of --routes.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,

    /// Service this router fronts (server mode).
    #[arg(long)]
    pub service: Option<String>,

    /// Environment of the service (server mode).
    #[arg(long)]
    pub environment: Option<String>,

    /// Region of the hosts (server mode).
    #[arg(long)]
    pub region: Option<String>,

    /// Where clients reach this router (`host:port`), told to the server so its synthetic
    /// monitors probe the region through it (server mode); default: --listen.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Option<String>,

    /// A router token of this service, environment and region (server mode): sent on
    /// every poll and push. Without one, the table is read only where the server allows
    /// anonymous reads, the router is not probed through, and nothing is pushed.
    #[arg(long, env = "ROLLWAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// How often to push traffic per host to the control plane (server mode).
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub push_every: Duration,

    /// Longest time a request may take, from its arrival to the end of its response.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub timeout: Duration,

    /// Longest time to open a connection to a host.
    #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
    pub connect_timeout: Duration,

    /// Consecutive failures (connect errors, timeouts, 5xx) that take a host out.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_after: u32,

    /// How long an ejected host stays out before one request probes it.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub cooldown: Duration,

    /// How often the routes file's modification time is checked.
    #[arg(long, default_value = "500ms", value_parser = parse_duration_arg)]
    pub reload_every: Duration,

    /// Ignore x-rollwave-track and baggage on incoming requests (for a router that
    /// faces untrusted clients); every request is then assigned by its key.
    #[arg(long)]
    pub ignore_incoming_track: bool,

    /// Most client connections open at once; further clients wait to be accepted.
    #[arg(long, default_value_t = 25_000)]
    pub max_connections: usize,

    /// Worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    pub workers: Option<usize>,

    /// With --server: a PEM file of the certificate authorities `https` to the server
    /// trusts, instead of the WebPKI roots built in (a private CA).
    #[arg(long, value_name = "FILE", value_parser = rollwave_api::tls::parse_ca_bundle)]
    pub ca_bundle: Option<rollwave_api::tls::Roots>,
}

impl RouterArgs {
    /// The router's configuration, given the routes file.
    pub fn config(&self, routes: PathBuf) -> Config {
        Config {
            routes,
            reload_every: self.reload_every,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            eject_after: self.eject_after,
            cooldown: self.cooldown,
            trust_incoming_track: !self.ignore_incoming_track,
            max_connections: self.max_connections.max(1),
        }
    }
}

/// Runs the router until SIGINT or SIGTERM, then lets requests in flight finish (for
/// at most the request timeout).
pub fn main(args: RouterArgs) -> anyhow::Result<()> {
    let mut push = None;
    let routes = match (&args.routes, &args.server) {
        (Some(routes), server) => {
            if server.is_some() {
                tracing::warn!("--routes is given, so --server is ignored");
            }
            routes.clone()
        }
        (None, Some(server)) => {
            let (Some(service), Some(environment), Some(region)) = (&args.service, &args.environment, &args.region)
            else {
                anyhow::bail!("with --server, name the --service, --environment and --region this router fronts");
            };
            let source = sync::Source {
                server: server.clone(),
                service: service.clone(),
                environment: environment.clone(),
                region: region.clone(),
                advertise: Some(args.advertise.clone().unwrap_or_else(|| args.listen.clone())),
                token: args.token.clone(),
                roots: args.ca_bundle.clone().unwrap_or_default(),
            };
            match &args.token {
                Some(token) => {
                    push = Some(push::PushTarget {
                        server: server.clone(),
                        service: service.clone(),
                        environment: environment.clone(),
                        token: token.clone(),
                        every: args.push_every,
                        roots: args.ca_bundle.clone().unwrap_or_default(),
                    })
                }
                None => tracing::warn!("no --token (or ROLLWAVE_TOKEN): traffic is not pushed to the control plane"),
            }
            let dir = std::env::temp_dir().join(format!("rollwave-router-{}", std::process::id()));
            sync::start(source, &dir)?
        }
        (None, None) => {
            anyhow::bail!("give --routes FILE (standalone) or --server URL with --service, --environment and --region")
        }
    };
    let workers = args.workers.or_else(|| std::thread::available_parallelism().ok().map(|n| n.get())).unwrap_or(1);
    let mut runtime = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    let runtime = runtime.enable_all().build().context("cannot start the async runtime")?;
    let pusher = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
        let admin = tokio::net::TcpListener::bind(&args.admin)
            .await
            .with_context(|| format!("cannot listen on {} (--admin)", args.admin))?;
        let config = args.config(routes);
        let grace = config.timeout;
        let router = Router::start(config, listener, admin).await?;
        tracing::info!(listen = %router.local_addr(), admin = %router.admin_addr(), "proxying (admin: /metrics, /routes)");
        let pusher = push.map(|target| push::start(target, router.metrics()));
        shutdown_signal().await?;
        tracing::info!("stopping; letting requests in flight finish");
        router.shutdown(grace).await;
        anyhow::Ok(pusher)
    })?;
    // The traffic of the last interval, requests in flight included.
    if let Some(pusher) = pusher {
        pusher.finish();
    }
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}

/// `500ms`, or a duration as manifests write it: `30s`, `2m`, `1h30m`.
pub fn parse_duration_arg(text: &str) -> Result<Duration, String> {
    if let Some(ms) = text.strip_suffix("ms")
        && !ms.is_empty()
        && ms.bytes().all(|b| b.is_ascii_digit())
    {
        return ms.parse().map(Duration::from_millis).map_err(|_| format!("duration {text:?} is too long"));
    }
    rollwave_manifest::yaml::parse_duration(text).map_err(|e| format!("{e}; milliseconds are written 500ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_milliseconds_too() {
        assert_eq!(parse_duration_arg("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration_arg("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration_arg("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration_arg("ms").is_err());
        assert!(parse_duration_arg("1.5s").is_err());
    }
}
