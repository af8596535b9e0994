//! The host side of rollwave.
//!
//! `rollwave agent` registers a host with the server, long-polls for the version it
//! should run and installs it: download, sha256, unpack into `releases/VERSION`, the
//! lifecycle hooks the artifact declares in `rollwave-hooks.yaml`, then an atomic switch
//! of `current`; it reports each outcome, hook by hook. `rollwave fleet up` runs many
//! agents on one machine, for trials.
//!
//! Architecture invariant: the [`installer`] knows nothing of HTTP or the server; the
//! [`agent`] loop is the only part that speaks the API, converting at that edge. Every
//! step of a deployment is in `DIR/state.json` before it starts, so the agent tells the
//! truth after a crash, and `DIR/current` only ever points at a release that passed its
//! hooks.

pub mod agent;
pub mod artifact;
pub mod error;
pub mod flags;
pub mod fleet;
pub mod gauges;
pub mod hooks;
pub mod installer;
pub mod process;
pub mod signature;
pub mod state;

pub use agent::{Agent, AgentConfig};
pub use error::DeployError;
pub use fleet::{Fleet, FleetConfig, Stopped};
pub use hooks::{Hook, Hooks, Step};
pub use installer::{Deployment, HostIdentity, Installer, InstallerConfig};
pub use state::{HookRun, Outcome, State};

use anyhow::Context;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// `rollwave agent`: run the agent of one host.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The server's base URL.
    #[arg(long, env = "ROLLWAVE_SERVER")]
    pub server: String,
    /// An agent token bound to service/environment/host, or an admin token.
    #[arg(long, env = "ROLLWAVE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// This host's name in the manifest, e.g. use2-az1-3.
    #[arg(long, env = "ROLLWAVE_HOST_ID")]
    pub host_id: String,
    /// The manifest's environment this host is in.
    #[arg(long, env = "ROLLWAVE_ENVIRONMENT")]
    pub environment: String,
    /// The region of that environment this host is in.
    #[arg(long, env = "ROLLWAVE_REGION")]
    pub region: String,
    /// The zone of that region this host is in.
    #[arg(long, env = "ROLLWAVE_ZONE")]
    pub zone: String,
    /// Where releases, `current` and `state.json` live.
    #[arg(long, env = "ROLLWAVE_WORKDIR", default_value = ".")]
    pub workdir: PathBuf,
    /// The service; may be left out when only one has this environment, region and zone.
    #[arg(long, env = "ROLLWAVE_SERVICE")]
    pub service: Option<String>,
    /// Where this host's service answers (`host:port`), so routers can send it traffic.
    #[arg(long, env = "ROLLWAVE_ADDRESS")]
    pub address: Option<String>,
    /// How often to push this host's CPU, memory and restarts to the server (e.g. 10s or
    /// 500ms); 0s pushes none.
    #[arg(long, env = "ROLLWAVE_METRICS_EVERY", default_value = "10s", value_parser = parse_interval)]
    pub metrics_every: Duration,
    /// Where the host's processes read its flags over OFREP (opened once a flag release
    /// reaches the host).
    #[arg(long, env = "ROLLWAVE_OFREP_LISTEN", default_value = flags::DEFAULT_LISTEN)]
    pub ofrep_listen: std::net::SocketAddr,
    /// A PEM file of the certificate authorities `https` trusts, for the server and the
    /// artifacts alike, instead of the WebPKI roots built in (a private CA).
    #[arg(long, env = "ROLLWAVE_CA_BUNDLE", value_name = "FILE", value_parser = rollwave_api::tls::parse_ca_bundle)]
    pub ca_bundle: Option<rollwave_api::tls::Roots>,
}

/// `rollwave fleet up`: run many agents on this machine, `--hosts-per-zone` per zone.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// The server's base URL.
    #[arg(long, env = "ROLLWAVE_SERVER")]
    pub server: String,
    /// A token every agent may use (an admin token, as they speak for many hosts). With
    /// --service, an admin token that mints each agent a token of its own host instead.
    #[arg(long, env = "ROLLWAVE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[arg(long)]
    pub environment: String,
    #[arg(long)]
    pub region: String,
    /// Comma-separated zone names; hosts are named {zone}-{n}.
    #[arg(long, value_delimiter = ',', required = true)]
    pub zones: Vec<String>,
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub hosts_per_zone: u32,
    /// Each agent works in WORKDIR/{host id}.
    #[arg(long)]
    pub workdir: PathBuf,
    #[arg(long)]
    pub service: Option<String>,
    /// The rollwave binary the agents run; by default this one.
    #[arg(long, hide = true)]
    pub binary: Option<PathBuf>,
}

/// A duration as the manifest writes it (`10s`, `1m`), or milliseconds (`500ms`).
fn parse_interval(text: &str) -> Result<Duration, String> {
    if let Some(ms) = text.strip_suffix("ms").filter(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit())) {
        return ms.parse().map(Duration::from_millis).map_err(|_| format!("duration {text:?} is too long"));
    }
    rollwave_manifest::yaml::parse_duration(text).map_err(|e| format!("{e}; milliseconds are written 500ms"))
}

/// A name as the manifest allows: letters, digits, `-`, `_` and `.`.
fn check_name(what: &str, value: &str) -> anyhow::Result<()> {
    rollwave_manifest::yaml::check_name(value).map_err(|e| anyhow::anyhow!("--{what}: {e}"))
}

/// Runs the agent until the process is stopped. Fails only on bad arguments or a work
/// directory it cannot use; the server being away is waited out.
pub fn agent_main(args: AgentArgs) -> anyhow::Result<()> {
    check_name("host-id", &args.host_id)?;
    check_name("environment", &args.environment)?;
    check_name("region", &args.region)?;
    check_name("zone", &args.zone)?;
    if let Some(service) = &args.service {
        check_name("service", service)?;
    }
    let host = HostIdentity { id: args.host_id, region: args.region, zone: args.zone };
    let mut config = AgentConfig::new(args.server, args.token, args.environment, host, args.workdir);
    config.service = args.service;
    config.address = args.address;
    config.metrics_every = args.metrics_every;
    config.ofrep_listen = args.ofrep_listen;
    config.roots = args.ca_bundle.unwrap_or_default();
    let workdir = config.workdir.display().to_string();
    let mut agent = Agent::new(config).with_context(|| format!("cannot use the work directory {workdir}"))?;
    tracing::info!(
        workdir = %agent.installer().workdir().display(),
        current = agent.installer().current().unwrap_or("none"),
        "agent started"
    );
    agent.run(&AtomicBool::new(false));
    Ok(())
}

/// Starts the fleet, relays its output, and stops it on Ctrl-C or SIGTERM (or when every
/// agent has exited).
pub fn fleet_main(args: FleetArgs) -> anyhow::Result<()> {
    for zone in &args.zones {
        check_name("zones", zone)?;
    }
    check_name("environment", &args.environment)?;
    check_name("region", &args.region)?;
    let Some(token) = args.token.clone() else {
        anyhow::bail!("fleet up needs a token for its agents: pass --token or set ROLLWAVE_TOKEN");
    };
    let host_tokens = match &args.service {
        Some(service) => mint_host_tokens(&args, service, &token)?,
        None => Default::default(),
    };
    let binary = match args.binary {
        Some(b) => b,
        None => std::env::current_exe().context("cannot find this program's path to start the agents")?,
    };
    std::fs::create_dir_all(&args.workdir).with_context(|| format!("cannot create {}", args.workdir.display()))?;
    // With a token per host, the admin token stays here.
    let shared = if host_tokens.is_empty() { Some(token) } else { None };
    let config = FleetConfig {
        binary,
        server: args.server,
        token: shared,
        host_tokens,
        service: args.service,
        environment: args.environment,
        region: args.region,
        zones: args.zones,
        hosts_per_zone: args.hosts_per_zone,
        workdir: args.workdir,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Install the signal handlers before any agent starts, so none is missed.
    let (mut interrupt, mut terminate) = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let mut fleet = Fleet::start(&config)?;
    tracing::info!("{} agents started; Ctrl-C stops them", fleet.pids().len());
    let why = runtime.block_on(async {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = interrupt.recv() => break "interrupted",
                _ = terminate.recv() => break "terminated",
                _ = tick.tick() => {
                    for (host, status) in fleet.newly_exited() {
                        tracing::warn!("agent {host} exited ({status})");
                    }
                    if fleet.running() == 0 {
                        break "every agent exited";
                    }
                }
            }
        }
    });
    tracing::info!("{why}; stopping the agents");
    let stopped = fleet.stop(Duration::from_secs(10));
    tracing::info!(
        "stopped ({} on SIGTERM, {} killed, {} had exited)",
        stopped.terminated,
        stopped.killed,
        stopped.already_exited
    );
    Ok(())
}

/// An agent token of each host of the fleet (`service/environment/host`), made with the
/// admin token.
fn mint_host_tokens(
    args: &FleetArgs,
    service: &str,
    admin: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let client = rollwave_api::client::Client::new(&args.server, Some(admin.to_owned()));
    let mut tokens = std::collections::BTreeMap::new();
    for zone in &args.zones {
        for n in 1..=args.hosts_per_zone {
            let host = format!("{zone}-{n}");
            let request = rollwave_api::CreateToken {
                role: rollwave_api::Role::Agent.as_str().into(),
                host: Some(format!("{service}/{}/{host}", args.environment)),
                ..Default::default()
            };
            let created = client.create_token(&request).map_err(|e| {
                anyhow::anyhow!(
                    "fleet up --service gives each agent a token of its own host, made with an admin token: {e}"
                )
            })?;
            tokens.insert(host, created.token);
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct AgentCli {
        #[command(flatten)]
        args: AgentArgs,
    }

    #[derive(Parser)]
    struct FleetCli {
        #[command(flatten)]
        args: FleetArgs,
    }

    #[test]
    fn the_flags_parse() {
        AgentCli::command().debug_assert();
        FleetCli::command().debug_assert();
        let agent = AgentCli::try_parse_from([
            "agent",
            "--server",
            "http://s",
            "--token",
            "t",
            "--host-id",
            "z1-1",
            "--environment",
            "prod",
            "--region",
            "r1",
            "--zone",
            "z1",
        ])
        .unwrap()
        .args;
        assert_eq!((agent.host_id.as_str(), agent.workdir.as_path()), ("z1-1", std::path::Path::new(".")));
        assert_eq!(agent.metrics_every, Duration::from_secs(10));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_interval("ms").is_err() && parse_interval("1.5s").is_err());
        let fleet = FleetCli::try_parse_from([
            "up",
            "--server",
            "http://s",
            "--environment",
            "prod",
            "--region",
            "r1",
            "--zones",
            "a,b,c",
            "--hosts-per-zone",
            "2",
            "--workdir",
            "/tmp/fleet",
        ])
        .unwrap()
        .args;
        assert_eq!((fleet.zones.join(" ").as_str(), fleet.hosts_per_zone), ("a b c", 2));
        let zero = ["up", "--server", "s", "--environment", "e", "--region", "r", "--zones", "a", "--workdir", "w"];
        assert!(FleetCli::try_parse_from(zero.iter().chain(&["--hosts-per-zone", "0"])).is_err());
    }
}
