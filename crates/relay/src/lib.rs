//! `rollwave relay`: serves a region's feature flags over OFREP (the OpenFeature Remote
//! Evaluation Protocol) to the functions and services near it.
//!
//! - [`served`]: what is served (a stable set, perhaps a canary set, salt and share) and
//!   the choice of a set per request, by the router's sticky hash or a carried track.
//! - [`ofrep`]: the protocol without I/O; [`serve`] the hyper shell around it, with
//!   change notifications over Server-Sent Events, `/metrics` and `/healthz`.
//! - [`counters`]: evaluations per flag, variant and flag-set version.
//! - [`follow`], [`push`]: server mode, the sets from the control plane (kept on disk)
//!   and the counts back to it. [`standalone`]: one set from a file.
//!
//! **Invariant:** a request never waits on the control plane or the disk: it is answered
//! from the last good sets, which only a set that parsed ever replaces.
//!
//! Embedding (the agent serves its host's one set this way):
//!
//! ```no_run
//! use rollwave_relay::{Counters, Served, Set, serve};
//! use std::sync::Arc;
//!
//! # async fn run(flags: rollwave_flags::FlagSet) {
//! let (_tx, rx) = tokio::sync::watch::channel(Arc::new(Served::single(Arc::new(Set::new("v1", flags)))));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8016").await.unwrap();
//! serve(listener, rx, Counters::new(), std::future::pending()).await;
//! # }
//! ```

pub mod counters;
pub mod follow;
mod http;
pub mod ofrep;
pub mod push;
pub mod served;
pub mod standalone;

pub use counters::{Counters, FollowerStatus};
pub use http::serve;
pub use served::{Canary, Served, Set};

use anyhow::Context as _;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Options of `rollwave relay`.
#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    /// Address to serve OFREP (and /metrics, /healthz) on.
    #[arg(long, env = "ROLLWAVE_RELAY_LISTEN", default_value = "127.0.0.1:8016")]
    pub listen: String,

    /// Standalone mode: serve the flag set in this flagd file (JSON or YAML), reloaded
    /// when it changes (a bad file is reported and the previous set stays).
    #[arg(long, value_name = "FILE")]
    pub flags: Option<PathBuf>,

    /// Control-plane URL: follow the region's flag sets from it (server mode).
    #[arg(long, env = "ROLLWAVE_SERVER", value_name = "URL")]
    pub server: Option<String>,

    /// Service whose flags to serve (server mode).
    #[arg(long, env = "ROLLWAVE_SERVICE")]
    pub service: Option<String>,

    /// Environment of the service (server mode).
    #[arg(long, env = "ROLLWAVE_ENVIRONMENT")]
    pub environment: Option<String>,

    /// Region this relay serves (server mode).
    #[arg(long, env = "ROLLWAVE_REGION")]
    pub region: Option<String>,

    /// Where the last good flag sets are kept across restarts (server mode); default:
    /// `rollwave-relay/SERVICE-ENVIRONMENT-REGION` in the temporary directory.
    #[arg(long, env = "ROLLWAVE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// A router token of this service, environment and region (server mode): sent on
    /// every poll and push. Without one, evaluation counts are not pushed.
    #[arg(long, env = "ROLLWAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// How often to push evaluation counts to the control plane (server mode).
    #[arg(long, default_value = "5s", value_parser = rollwave_router::parse_duration_arg)]
    pub push_every: Duration,

    /// With --server: a PEM file of the certificate authorities `https` to the server
    /// trusts, instead of the WebPKI roots built in (a private CA).
    #[arg(long, value_name = "FILE", value_parser = rollwave_api::tls::parse_ca_bundle)]
    pub ca_bundle: Option<rollwave_api::tls::Roots>,

    /// How often the flags file is read for changes (standalone mode).
    #[arg(long, default_value = "500ms", value_parser = rollwave_router::parse_duration_arg)]
    pub reload_every: Duration,

    /// Worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    pub workers: Option<usize>,
}

/// What feeds the served sets: a file, or the control plane.
enum Mode {
    Standalone { path: PathBuf, text: String, set: Arc<Set> },
    Server { source: follow::Source, state_dir: PathBuf },
}

impl RelayArgs {
    fn mode(&self) -> anyhow::Result<Mode> {
        match (&self.flags, &self.server) {
            (Some(path), server) => {
                if server.is_some() {
                    tracing::warn!("--flags is given, so --server is ignored");
                }
                let (text, set) = standalone::load(path)?;
                Ok(Mode::Standalone { path: path.clone(), text, set })
            }
            (None, Some(server)) => {
                let (Some(service), Some(environment), Some(region)) = (&self.service, &self.environment, &self.region)
                else {
                    anyhow::bail!("with --server, name the --service, --environment and --region whose flags to serve");
                };
                let state_dir = self.state_dir.clone().unwrap_or_else(|| {
                    std::env::temp_dir().join("rollwave-relay").join(format!("{service}-{environment}-{region}"))
                });
                let source = follow::Source {
                    server: server.clone(),
                    service: service.clone(),
                    environment: environment.clone(),
                    region: region.clone(),
                    token: self.token.clone(),
                    roots: self.ca_bundle.clone().unwrap_or_default(),
                };
                Ok(Mode::Server { source, state_dir })
            }
            (None, None) => {
                anyhow::bail!(
                    "give --flags FILE (standalone) or --server URL with --service, --environment and --region"
                )
            }
        }
    }
}

/// Runs the relay until SIGINT or SIGTERM.
pub fn main(args: RelayArgs) -> anyhow::Result<()> {
    let mode = args.mode()?;
    let counters = Counters::new();
    let initial = match &mode {
        Mode::Standalone { set, .. } => Served::single(set.clone()),
        Mode::Server { .. } => Served::single(Arc::new(Set::empty("none"))),
    };
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(initial));
    let mut pusher = None;
    let mut _follower = None;
    let mut watcher = None;
    match mode {
        Mode::Standalone { path, text, set } => {
            tracing::info!(file = %path.display(), flags = set.flags().len(), version = set.version(), "serving a flags file");
            watcher = Some((path, text));
        }
        Mode::Server { source, state_dir } => {
            let status = Arc::new(FollowerStatus::default());
            counters.attach_follower(status.clone());
            if source.token.is_some() {
                pusher = Some(push::start(
                    push::PushTarget {
                        server: source.server.clone(),
                        service: source.service.clone(),
                        environment: source.environment.clone(),
                        region: source.region.clone(),
                        token: source.token.clone(),
                        every: args.push_every,
                        roots: source.roots.clone(),
                    },
                    counters.clone(),
                ));
            } else {
                tracing::warn!("no --token (or ROLLWAVE_TOKEN): evaluation counts are not pushed to the control plane");
            }
            _follower = Some(follow::start(source, &state_dir, tx.clone(), status)?);
        }
    }
    let runtime = runtime(args.workers)?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
        tracing::info!(listen = %listener.local_addr().context("the listener has no address")?, "serving OFREP");
        if let Some((path, text)) = watcher {
            tokio::spawn(standalone::watch(standalone::FileWatch::new(path, text), args.reload_every, tx));
        }
        serve(listener, rx, counters, async {
            if let Err(e) = shutdown_signal().await {
                tracing::warn!("{e:#}");
                std::future::pending::<()>().await;
            }
            tracing::info!("stopping");
        })
        .await;
        anyhow::Ok(())
    })?;
    if let Some(pusher) = pusher {
        pusher.finish();
    }
    Ok(())
}

fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = workers.or_else(|| std::thread::available_parallelism().ok().map(|n| n.get())).unwrap_or(1);
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build().context("cannot start the async runtime")
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
