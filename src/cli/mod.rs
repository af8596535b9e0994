//! Command-line parsing and the subcommands.

mod flags;
mod logging;
mod plan;
mod remote;
mod wait;

use remote::{Format, Remote, exit_for};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rollwave_api::OperatorAction;
use rollwave_core::plan::Plan;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "rollwave", version, about = "Safe, hands-off continuous deployment in waves")]
struct Cli {
    /// How server, agent, router, relay, fleet and sample-app write their log lines on stderr
    /// (`RUST_LOG` filters them; default: info from rollwave, warnings from libraries).
    #[arg(long, global = true, value_enum, env = "ROLLWAVE_LOG_FORMAT", default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// A manifest and a scenario to run against it in virtual time.
#[derive(clap::Args, Debug)]
pub struct World {
    file: PathBuf,
    #[arg(long)]
    scenario: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Stop (each run) after this much virtual time (e.g. 14d).
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    until: std::time::Duration,
}

#[derive(Subcommand)]
enum Command {
    /// Ship three releases through a real pipeline on this machine: server, agents, routers, users.
    Demo(rollwave_demo::run::DemoArgs),
    /// Check a pipeline manifest; print a one-line summary, or every error as FILE:LINE:COL.
    Validate { file: PathBuf },
    /// Show the expanded rollout plan and the shortest lead time of a release.
    Plan {
        file: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest's JSON Schema.
    Schema,
    /// Feature flags in the flagd format: validate a file, evaluate a flag.
    #[command(subcommand)]
    Flags(flags::FlagsCommand),
    /// Run the engine against a simulated fleet and traffic in virtual time.
    Simulate {
        #[command(flatten)]
        world: World,
        /// Seed for the simulated world's randomness.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run a scenario many times (seeds S, S+1, …, on every core) and measure what the
    /// pipeline does to each release: outcomes, what rolled it back, how soon, how much
    /// it exposed, and for good releases the false-rollback rate.
    Study {
        #[command(flatten)]
        world: World,
        /// How many runs.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        runs: u64,
        /// The first run's seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Run the L7 router: sticky canary split, track propagation, per-backend metrics.
    Router(rollwave_router::RouterArgs),
    /// Serve feature flags over OFREP: a region's flag sets from the control plane (kept
    /// on disk, split between stable and canary like the router), or one flags file.
    Relay(rollwave_relay::RelayArgs),
    /// Run the control plane.
    Server(ServerArgs),
    /// Run the host agent: register, long-poll for the desired version, install it, report.
    Agent(rollwave_agent::AgentArgs),
    /// A tiny HTTP service whose versions behave as told (errors, latency): what the demo deploys.
    SampleApp(rollwave_demo::sample_app::SampleAppArgs),
    /// Run a fleet of agents on this machine (for trials and the demo).
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage releases.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Which version runs where, what is baking, what is blocked and why.
    Status {
        service: Option<String>,
        /// Keep reading it, and show it again each time it changes (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        /// How often `--watch` reads it.
        #[arg(long, default_value = "2s", value_parser = parse_timeout, requires = "watch")]
        every: std::time::Duration,
        #[command(flatten)]
        remote: Remote,
    },
    /// Let a release into the stages that need approval (or `--stage` only).
    Approve(ReleaseAction),
    /// Return every host running the release (or a newer one) to the version before it.
    Rollback(ReleaseAction),
    /// Resume a halted release.
    Retry(ReleaseAction),
    /// Give up on a halted release; the next newer one fills its place.
    RollForward(ReleaseAction),
    /// Stop the service (or `--stage`) from starting any step.
    Hold(HoldArgs),
    /// Lift a hold.
    Resume(HoldArgs),
    /// The event log; `--follow` streams it live.
    Events {
        #[arg(long)]
        follow: bool,
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[command(flatten)]
        remote: Remote,
    },
    /// A built-in metric over time (error_rate, latency_p99_ms, request_rate, monitor:NAME:success_rate, cpu_percent, memory_percent, restarts…).
    Metrics {
        service: String,
        #[arg(long, default_value = "error_rate")]
        metric: String,
        /// `environment`, `environment/region`, `environment/region/zone` or `environment/host`.
        #[arg(long)]
        scope: String,
        #[arg(long)]
        version: Option<String>,
        /// How far back, e.g. 1h.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        since: std::time::Duration,
        #[command(flatten)]
        remote: Remote,
    },
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell's completion script: `source <(rollwave completions bash)`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (rollwave.1, rollwave-server.1, …) into DIR.
    Man { dir: PathBuf },
}

impl Command {
    /// Whether the command runs until it is stopped, telling what it does in log lines
    /// (the others print their results, and the demo draws its own view).
    fn writes_logs(&self) -> bool {
        match self {
            Command::Server(_)
            | Command::Agent(_)
            | Command::Router(_)
            | Command::Relay(_)
            | Command::Fleet(_)
            | Command::SampleApp(_) => true,
            Command::Demo(_)
            | Command::Validate { .. }
            | Command::Plan { .. }
            | Command::Schema
            | Command::Flags(_)
            | Command::Simulate { .. }
            | Command::Study { .. }
            | Command::Service(_)
            | Command::Release(_)
            | Command::Status { .. }
            | Command::Approve(_)
            | Command::Rollback(_)
            | Command::Retry(_)
            | Command::RollForward(_)
            | Command::Hold(_)
            | Command::Resume(_)
            | Command::Events { .. }
            | Command::Metrics { .. }
            | Command::Token(_)
            | Command::Audit(_)
            | Command::Completions { .. }
            | Command::Man { .. } => false,
        }
    }
}

#[derive(clap::Args)]
struct ServerArgs {
    /// sqlite://PATH (the default, in the data directory) or postgres://…
    #[arg(long, env = "ROLLWAVE_DB")]
    db: Option<String>,
    /// Where the API, the dashboard and `/metrics` listen.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: std::net::SocketAddr,
    /// Where the default SQLite file lives.
    #[arg(long, env = "ROLLWAVE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// `agent` (hosts run `rollwave agent`) or `noop` (every deployment succeeds after --noop-delay).
    #[arg(long, default_value = "agent")]
    driver: String,
    /// How long a deployment takes with `--driver noop`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    noop_delay: std::time::Duration,
    /// This replica's name in the leader lease (default: host name and process id).
    #[arg(long)]
    node_id: Option<String>,
    /// How long the leader lease lasts without renewal.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    lease_ttl: std::time::Duration,
    /// A registered host not heard from for this long is lost (a deployment it runs fails).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    host_timeout: std::time::Duration,
    /// The Prometheus server that `source: prometheus` alarms query, e.g. http://127.0.0.1:9090.
    #[arg(long, env = "ROLLWAVE_PROMETHEUS")]
    prometheus: Option<String>,
    /// Requests served count as bake data points in bins of this length.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    datapoint_bin: std::time::Duration,
    /// How often regions of functions' invocations and errors are read from CloudWatch
    /// (Lambda's metrics are per minute).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    function_traffic_every: std::time::Duration,
    /// How long after a period ends CloudWatch alarms and functions' traffic read it:
    /// CloudWatch publishes Lambda's metrics about a minute late.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    cloudwatch_delay: std::time::Duration,
    /// Connections served at once; more are answered 503 and closed (default: what the
    /// limit on open files leaves, once the server has raised it to its maximum).
    #[arg(long, env = "ROLLWAVE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: Option<u64>,
    /// A request's head must arrive within this long of the connection opening or of the
    /// previous answer, or the connection is closed.
    #[arg(long, env = "ROLLWAVE_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: std::time::Duration,
    /// A connection on which nothing moves for this long is closed, unless an answer is
    /// being made (long polls and event streams are not cut).
    #[arg(long, env = "ROLLWAVE_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    idle_timeout: std::time::Duration,
    /// Let anyone read (API and dashboard) without a token. By default reads need a viewer token.
    #[arg(long)]
    anonymous_read: bool,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Start N agents per zone as child processes; Ctrl-C stops them all.
    Up(rollwave_agent::FleetArgs),
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Validate a manifest and apply it to the server.
    Apply {
        file: PathBuf,
        #[command(flatten)]
        remote: Remote,
    },
    /// List services.
    List {
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum ReleaseCommand {
    /// Create a release: it enters the pipeline's first stage.
    Create {
        service: String,
        version: String,
        #[arg(long)]
        artifact: Option<String>,
        #[arg(long)]
        sha256: Option<String>,
        /// A flag release: this flagd flag definition file (JSON or YAML) instead of an artifact.
        #[arg(long, conflicts_with_all = ["artifact", "sha256"])]
        flags: Option<std::path::PathBuf>,
        /// Then wait for the release as `release wait` does, with its exit codes.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        until: UntilArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Wait until a release completes (or reaches `--until`), printing a line per step on
    /// stderr. Exit codes: 0 completed or reached, 4 halted, 5 rolled back, 6 superseded,
    /// 7 timed out; 1 refused, 3 server unreachable.
    Wait {
        /// VERSION, or SERVICE@VERSION.
        release: String,
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        until: UntilArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a release with its timeline.
    Show {
        /// VERSION, or SERVICE@VERSION.
        release: String,
        #[arg(long)]
        service: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// What a wait waits for, and for how long.
#[derive(clap::Args)]
struct UntilArgs {
    /// `completed` (the default), a stage, or `stage/wave`: the wait ends once it is done.
    #[arg(long, value_name = "STAGE|completed")]
    until: Option<String>,
    /// Give up after this long (e.g. 45m) with exit code 7; by default, wait as long as it takes.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
    /// How often the release is read.
    #[arg(long, default_value = "2s", value_parser = parse_timeout, hide = true)]
    every: std::time::Duration,
}

impl UntilArgs {
    fn wait_for(self, service: String, version: String) -> wait::WaitArgs {
        wait::WaitArgs {
            service,
            version,
            until: wait::Until::parse(self.until.as_deref()),
            timeout: self.timeout,
            every: self.every,
        }
    }
}

#[derive(clap::Args)]
struct ReleaseAction {
    /// VERSION, or SERVICE@VERSION.
    release: String,
    #[arg(long)]
    service: Option<String>,
    /// Only this stage (approve).
    #[arg(long)]
    stage: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Args)]
struct HoldArgs {
    service: String,
    #[arg(long)]
    stage: Option<String>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; its secret is printed once.
    Create {
        /// viewer, deployer, approver, admin, agent or router.
        #[arg(long)]
        role: String,
        /// Unique: a-z, 0-9, '.', '_' and '-', at most 64.
        #[arg(long)]
        name: Option<String>,
        /// For agent tokens: the host (with --service and --environment), or service/environment/host.
        #[arg(long)]
        host: Option<String>,
        /// For router tokens: the region it fronts (with --service and --environment).
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// The token expires after this long (e.g. 30d); never by default.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Revoke a token by its id: every replica refuses it within a second.
    Revoke {
        id: i64,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the audit log: through the server (an admin token), or,
    /// with --db or --data-dir, by reading that database (never creating one).
    Verify {
        #[arg(long, env = "ROLLWAVE_DB")]
        db: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
}

/// `service/environment/NAME` from the flags: NAME alone with --service and
/// --environment, or the whole path.
fn scoped(name: Option<String>, service: &Option<String>, environment: &Option<String>) -> Option<String> {
    let name = name?;
    Some(match (service, environment) {
        (Some(s), Some(e)) if !name.contains('/') => format!("{s}/{e}/{name}"),
        _ => name,
    })
}

/// `sqlite://…/rollwave.db` in the data directory, created if missing.
fn default_db(data_dir: Option<PathBuf>) -> Result<String> {
    let dir = match data_dir {
        Some(d) => d,
        None => match std::env::var_os("XDG_DATA_HOME") {
            Some(x) => PathBuf::from(x).join("rollwave"),
            None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".local/share/rollwave"),
        },
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    Ok(format!("sqlite://{}", dir.join("rollwave.db").display()))
}

fn run_server(args: ServerArgs) -> Result<()> {
    let limits = connection_limits(&args)?;
    let db = match args.db {
        Some(db) => db,
        None => default_db(args.data_dir)?,
    };
    let driver = match args.driver.as_str() {
        "agent" => rollwave_server::Driver::Agent,
        "noop" => rollwave_server::Driver::Noop { delay: args.noop_delay },
        other => anyhow::bail!("unknown driver {other:?}: use agent or noop"),
    };
    let node_id = args.node_id.unwrap_or_else(|| {
        let host =
            std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "node".into());
        format!("{host}-{}", std::process::id())
    });
    let config = rollwave_server::Config {
        db,
        listen: args.listen,
        node_id,
        driver,
        lease_ttl: args.lease_ttl,
        host_timeout: args.host_timeout,
        datapoint_bin: args.datapoint_bin,
        function_traffic_every: args.function_traffic_every,
        cloudwatch_delay: args.cloudwatch_delay,
        prometheus: args.prometheus,
        bootstrap_token: std::env::var("ROLLWAVE_BOOTSTRAP_TOKEN").ok().filter(|t| !t.is_empty()),
        anonymous_read: args.anonymous_read,
    };
    rollwave_server::serve_blocking(config, limits)
}

/// The connection limits; a ceiling the open-file limit cannot honour is an error.
fn connection_limits(args: &ServerArgs) -> Result<rollwave_server::listen::Limits> {
    use rollwave_server::listen;
    let descriptors = listen::raise_descriptor_limit();
    let most = listen::connections_for(descriptors);
    let max_connections = match args.max_connections.map(usize::try_from) {
        None => most,
        Some(Ok(n)) if n <= most => n,
        Some(_) => anyhow::bail!(
            "--max-connections {}: the limit on open files ({descriptors}) leaves room for at most {most} \
             connections; raise it (ulimit -n) or ask for fewer",
            args.max_connections.unwrap_or_default()
        ),
    };
    Ok(listen::Limits { max_connections, header_timeout: args.header_timeout, idle_timeout: args.idle_timeout })
}

/// Runs a client command; API errors become exit codes 1 or 3.
fn remote_command(command: Command) -> Result<ExitCode> {
    use rollwave_api::*;
    let result: Result<ExitCode, rollwave_api::client::ClientError> = (|| {
        match command {
            Command::Service(ServiceCommand::Apply { file, remote }) => {
                let text =
                    std::fs::read_to_string(&file).map_err(|e| rollwave_api::client::ClientError::Transport {
                        base: file.display().to_string(),
                        reason: e.to_string(),
                    })?;
                let s = remote.client().apply(&file.display().to_string(), &text)?;
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &s).ok(),
                    Format::Table => writeln!(
                        std::io::stdout(),
                        "applied {}: {} stage(s), {} host(s)",
                        s.name,
                        s.stages.len(),
                        s.hosts
                    )
                    .ok(),
                };
            }
            Command::Service(ServiceCommand::List { remote }) => {
                let list = remote.client().services()?;
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &list).ok(),
                    Format::Table => {
                        for s in &list {
                            let _ = writeln!(
                                std::io::stdout(),
                                "{}  stages: {}  hosts: {}  releases: {}",
                                s.name,
                                s.stages.join(" → "),
                                s.hosts,
                                s.releases
                            );
                        }
                        Some(())
                    }
                };
            }
            Command::Release(ReleaseCommand::Create {
                service,
                version,
                artifact,
                sha256,
                flags,
                wait,
                until,
                remote,
            }) => {
                let flags = flags.map(|path| flag_document(&path)).transpose()?;
                let r =
                    remote.client().create_release(&service, &CreateRelease { version, artifact, sha256, flags })?;
                if wait {
                    let _ = writeln!(std::io::stderr(), "created {}", remote::print_release(&r));
                    return Ok(wait::wait(&remote, until.wait_for(service, r.version)));
                }
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &r).ok(),
                    Format::Table => writeln!(std::io::stdout(), "created {}", remote::print_release(&r)).ok(),
                };
            }
            Command::Release(ReleaseCommand::Wait { release, service, until, remote }) => {
                let (service, version) = remote::resolve_release(&remote.client(), &release, service)?;
                return Ok(wait::wait(&remote, until.wait_for(service, version)));
            }
            Command::Release(ReleaseCommand::Show { release, service, remote }) => {
                let client = remote.client();
                let (service, version) = remote::resolve_release(&client, &release, service)?;
                let r = client.release(&service, &version)?;
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &r).ok(),
                    Format::Table => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{}", remote::print_release(&r.release));
                        for e in &r.events {
                            let _ = writeln!(out, "{}", remote::print_event(e));
                        }
                        Some(())
                    }
                };
            }
            Command::Status { service, watch, every, remote } => {
                let client = remote.client();
                let mut shown: Option<String> = None;
                loop {
                    let names: Vec<String> = match &service {
                        Some(s) => vec![s.clone()],
                        None => client.services()?.into_iter().map(|s| s.name).collect(),
                    };
                    let statuses = names.iter().map(|n| client.status(n)).collect::<Result<Vec<_>, _>>()?;
                    let text = match remote.output {
                        // Watched, a line per change (JSON lines); YAML documents start
                        // with `---` of their own.
                        Format::Json if watch => serde_json::to_string(&statuses).unwrap_or_default(),
                        Format::Json => serde_json::to_string_pretty(&statuses).unwrap_or_default(),
                        Format::Yaml => {
                            remote::to_yaml(&serde_json::to_value(&statuses).unwrap_or_default()).unwrap_or_default()
                        }
                        Format::Table => statuses.iter().map(remote::print_status).collect::<Vec<_>>().join("\n"),
                    };
                    if shown.as_ref() != Some(&text) {
                        let mut out = std::io::stdout().lock();
                        if watch && std::io::IsTerminal::is_terminal(&out) {
                            // Clear the screen and go home, so that the view stays in place.
                            let _ = write!(out, "\x1b[2J\x1b[H");
                        } else if watch && shown.is_some() && remote.output == Format::Table {
                            let _ = writeln!(
                                out,
                                "--- {}",
                                jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_default()
                            );
                        }
                        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                            break;
                        }
                        shown = Some(text);
                    }
                    if !watch {
                        break;
                    }
                    std::thread::sleep(every);
                }
            }
            Command::Approve(a) | Command::Rollback(a) | Command::Retry(a) | Command::RollForward(a) => {
                unreachable!("{}", a.release)
            }
            Command::Hold(h) | Command::Resume(h) => unreachable!("{}", h.service),
            Command::Events { follow, after, remote } => {
                let client = remote.client();
                let show = |e: &EventView| match remote.output {
                    Format::Json => {
                        writeln!(std::io::stdout(), "{}", serde_json::to_string(e).unwrap_or_default()).is_ok()
                    }
                    Format::Yaml => remote::print(Format::Yaml, e).is_ok(),
                    Format::Table => writeln!(std::io::stdout(), "{}", remote::print_event(e)).is_ok(),
                };
                if follow {
                    client.follow(Some(after), |e| show(&e))?;
                } else {
                    let mut after = after;
                    loop {
                        let page = client.events(after, 1000)?;
                        for e in &page.events {
                            if !show(e) {
                                return Ok(ExitCode::SUCCESS);
                            }
                        }
                        if page.next == after {
                            break;
                        }
                        after = page.next;
                    }
                }
            }
            Command::Metrics { service, metric, scope, version, since, remote } => {
                let mut path =
                    format!("/v1/metrics?service={service}&metric={metric}&scope={scope}&since={}", since.as_secs());
                if let Some(v) = version {
                    path.push_str(&format!("&version={v}"));
                }
                let series: MetricSeries = remote.client().get(&path)?;
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &series).ok(),
                    Format::Table => {
                        let mut out = std::io::stdout().lock();
                        for (t, v) in &series.points {
                            let at = jiff::Timestamp::from_millisecond(*t).map(|t| t.to_string()).unwrap_or_default();
                            let _ = writeln!(out, "{at}  {v:.4}");
                        }
                        Some(())
                    }
                };
            }
            Command::Token(TokenCommand::Create { role, name, host, region, service, environment, ttl, remote }) => {
                let host = scoped(host, &service, &environment);
                let region = scoped(region, &service, &environment);
                let ttl_s = ttl.map(|t| t.as_secs().max(1));
                let t = remote.client().create_token(&CreateToken { role, name, host, region, ttl_s })?;
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &t).ok(),
                    Format::Table => writeln!(std::io::stdout(), "{}", t.token).ok(),
                };
            }
            Command::Token(TokenCommand::List { remote }) => {
                let tokens = remote.client().tokens()?;
                match remote.output {
                    format @ (Format::Json | Format::Yaml) => remote::print(format, &tokens).ok(),
                    Format::Table => {
                        let mut out = std::io::stdout().lock();
                        let when = |ms: Option<i64>| {
                            ms.and_then(|t| jiff::Timestamp::from_millisecond(t).ok())
                                .map_or_else(|| "-".to_owned(), |t| t.to_string())
                        };
                        let _ = writeln!(out, "ID  NAME  ROLE  SCOPE  EXPIRES  REVOKED  LAST USED");
                        for t in &tokens {
                            let scope = t.host.as_deref().or(t.region.as_deref()).unwrap_or("-");
                            let _ = writeln!(
                                out,
                                "{}  {}  {}  {scope}  {}  {}  {}",
                                t.id,
                                t.name,
                                t.role,
                                when(t.expires_ms),
                                when(t.revoked_ms),
                                when(t.last_used_ms)
                            );
                        }
                        Some(())
                    }
                };
            }
            Command::Token(TokenCommand::Revoke { id, remote }) => {
                remote.client().revoke_token(id)?;
                let _ = writeln!(std::io::stdout(), "token {id} revoked");
            }
            _ => unreachable!("not a client command"),
        }
        Ok(ExitCode::SUCCESS)
    })();
    Ok(match result {
        Ok(code) => code,
        Err(e) => exit_for(&e),
    })
}

fn release_action(verb: rollwave_api::OperatorAction, a: ReleaseAction) -> Result<ExitCode> {
    let client = a.remote.client();
    let result = remote::resolve_release(&client, &a.release, a.service)
        .and_then(|(service, version)| client.action(&service, &version, verb, a.stage));
    Ok(match result {
        Ok(r) => {
            match a.remote.output {
                format @ (Format::Json | Format::Yaml) => remote::print(format, &r)?,
                Format::Table => writeln!(std::io::stdout(), "{}", remote::print_release(&r))?,
            }
            ExitCode::SUCCESS
        }
        Err(e) => exit_for(&e),
    })
}

fn hold_action(resume: bool, h: HoldArgs) -> Result<ExitCode> {
    let client = h.remote.client();
    Ok(match client.hold(&h.service, resume, h.stage) {
        Ok(s) => {
            match h.remote.output {
                format @ (Format::Json | Format::Yaml) => remote::print(format, &s)?,
                Format::Table => {
                    let holds = if s.holds.is_empty() { "nothing".to_owned() } else { s.holds.join(", ") };
                    writeln!(std::io::stdout(), "on hold: {holds}")?
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => exit_for(&e),
    })
}

fn audit_verify(db: Option<String>, data_dir: Option<PathBuf>, remote: remote::Remote) -> Result<ExitCode> {
    let db = match (db, data_dir) {
        (Some(db), _) => db,
        (None, Some(dir)) => format!("sqlite://{}", dir.join("rollwave.db").display()),
        (None, None) => return audit_verify_remote(&remote),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let database = rollwave_store::describe_url(&db);
    runtime.block_on(async {
        let store = rollwave_store::Store::open_existing(&db).await?;
        Ok(match store.verify_audit().await? {
            Ok(n) => {
                writeln!(std::io::stdout(), "audit log intact: {n} row(s) in {database}")?;
                ExitCode::SUCCESS
            }
            Err(problem) => {
                writeln!(std::io::stderr(), "rollwave: {database}: {problem}")?;
                ExitCode::from(1)
            }
        })
    })
}

/// Verifies through the server: it reads its own database.
fn audit_verify_remote(remote: &remote::Remote) -> Result<ExitCode> {
    Ok(match remote.client().verify_audit() {
        Ok(v) if v.intact => {
            writeln!(
                std::io::stdout(),
                "audit log intact: {} row(s) in {} (read by {})",
                v.rows,
                v.database,
                remote.server
            )?;
            ExitCode::SUCCESS
        }
        Ok(v) => {
            let problem = v.problem.unwrap_or_default();
            writeln!(std::io::stderr(), "rollwave: {} (read by {}): {problem}", v.database, remote.server)?;
            ExitCode::from(1)
        }
        Err(e) => exit_for(&e),
    })
}

/// Durations as manifests write them (`90s`, `30m`, `12h`, `2d`), or milliseconds (`300ms`).
/// A connection timeout: not zero (it would close every connection at once), at most a day.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("a timeout must be longer than 0".to_owned()),
        d if d > rollwave_server::listen::MAX_TIMEOUT => Err("a timeout must be at most 24h".to_owned()),
        d => Ok(d),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix("ms").map(str::parse::<u64>) {
        Some(Ok(ms)) => Ok(std::time::Duration::from_millis(ms)),
        _ => rollwave_manifest::yaml::parse_duration(s),
    }
}

/// `rollwave relay`: a flags file that does not parse is invalid input (exit 1), each of
/// its errors on a line of its own.
fn relay(args: rollwave_relay::RelayArgs) -> Result<ExitCode> {
    match rollwave_relay::main(args) {
        Err(e) => match e.downcast_ref::<rollwave_relay::standalone::LoadError>() {
            Some(invalid @ rollwave_relay::standalone::LoadError::Invalid(_)) => {
                let _ = writeln!(std::io::stderr(), "{invalid}");
                Ok(ExitCode::from(1))
            }
            _ => Err(e),
        },
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}

/// The whole command line's definition: what parsing, `--help`, completions and man
/// pages all read.
fn command() -> clap::Command {
    with_environment_variables(<Cli as clap::CommandFactory>::command())
}

/// The long-running commands, which units and containers configure through their environment.
const CONFIGURED_BY_ENVIRONMENT: &[&str] = &["server", "agent", "router", "relay"];

/// Every flag of the long-running commands can also come from `ROLLWAVE_<FLAG>` (`--host-timeout`:
/// `ROLLWAVE_HOST_TIMEOUT`), one rule for all; a flag given says more than its variable.
/// Flags that already name a variable keep it.
fn with_environment_variables(mut cmd: clap::Command) -> clap::Command {
    for name in CONFIGURED_BY_ENVIRONMENT {
        cmd = cmd.mut_subcommand(name, |sub| {
            let longs: Vec<String> = sub
                .get_arguments()
                .filter(|a| a.get_env().is_none() && !a.is_hide_set() && !a.is_global_set())
                .filter_map(|a| a.get_long().map(str::to_owned))
                .filter(|long| long != "help" && long != "version")
                .collect();
            longs.into_iter().fold(sub, |sub, long| {
                let id = sub.get_arguments().find(|a| a.get_long() == Some(long.as_str())).map(|a| a.get_id().clone());
                match id {
                    // Leaked: clap takes `&'static str` names without its `string` feature,
                    // and the definition is built once per process.
                    Some(id) => sub.mut_arg(id, |a| a.env(&*environment_variable(&long).leak())),
                    None => sub,
                }
            })
        });
    }
    cmd
}

fn environment_variable(long: &str) -> String {
    format!("ROLLWAVE_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// `rollwave.1` and a page per subcommand, nested ones included (`rollwave-release-create.1`).
fn write_man_pages(dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(command(), dir).with_context(|| format!("cannot write man pages in {}", dir.display()))?;
    let pages = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("rollwave") && e.path().extension() == Some("1".as_ref())
        })
        .count();
    Ok(pages)
}

pub fn run() -> Result<ExitCode> {
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if cli.command.writes_logs() {
        logging::install(cli.log_format)?;
    }
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Demo(args) => return Ok(ExitCode::from(rollwave_demo::run::main(args)? as u8)),
        Command::Router(args) => rollwave_router::main(args)?,
        Command::Relay(args) => return relay(args),
        Command::Server(args) => run_server(args)?,
        Command::Agent(args) => rollwave_agent::agent_main(args)?,
        Command::SampleApp(args) => rollwave_demo::sample_app::main(args)?,
        Command::Fleet(FleetCommand::Up(args)) => rollwave_agent::fleet_main(args)?,
        Command::Approve(a) => return release_action(OperatorAction::Approve, a),
        Command::Rollback(a) => return release_action(OperatorAction::Rollback, a),
        Command::Retry(a) => return release_action(OperatorAction::Retry, a),
        Command::RollForward(a) => return release_action(OperatorAction::RollForward, a),
        Command::Hold(h) => return hold_action(false, h),
        Command::Resume(h) => return hold_action(true, h),
        Command::Audit(AuditCommand::Verify { db, data_dir, remote }) => return audit_verify(db, data_dir, remote),
        command @ (Command::Service(_)
        | Command::Release(_)
        | Command::Status { .. }
        | Command::Events { .. }
        | Command::Metrics { .. }
        | Command::Token(_)) => {
            drop(out);
            return remote_command(command);
        }
        Command::Validate { file } => {
            let Some(manifest) = load_manifest(&file)? else { return Ok(ExitCode::from(1)) };
            let plan = Plan::new(manifest);
            let m = &plan.manifest;
            let hosts: usize = plan.envs.iter().map(|e| e.hosts.len()).sum();
            let waves: usize = m.stages.iter().map(|s| s.waves.len()).sum();
            writeln!(
                out,
                "{}: ok: service {}, {} stage(s), {} wave(s), {} environment(s), {} host(s), {} alarm(s); shortest lead time {}",
                file.display(),
                m.service,
                m.stages.len(),
                waves,
                m.environments.len(),
                hosts,
                m.alarms.len(),
                rollwave_core::format_duration(plan.lead_time())
            )?;
        }
        Command::Plan { file, json } => {
            let Some(manifest) = load_manifest(&file)? else { return Ok(ExitCode::from(1)) };
            let plan = Plan::new(manifest);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&plan::to_json(&plan))?)?;
            } else {
                write!(out, "{}", plan::to_text(&plan))?;
            }
        }
        Command::Flags(command) => {
            let code = flags::run(command, &mut out)?;
            out.flush()?;
            return Ok(code);
        }
        Command::Schema => {
            writeln!(out, "{}", serde_json::to_string_pretty(&rollwave_manifest::manifest_schema())?)?;
        }
        Command::Completions { shell } => {
            // Into memory first: the generator panics if its writer fails (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "rollwave", &mut script);
            out.write_all(&script)?;
        }
        Command::Man { dir } => {
            let written = write_man_pages(&dir)?;
            writeln!(out, "wrote {written} man page(s) in {}", dir.display())?;
        }
        Command::Study { world: World { file, scenario, json, until }, runs, seed } => {
            let Some((plan, scenario)) = load_world(&file, &scenario)? else { return Ok(ExitCode::from(1)) };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let options = rollwave_sim::StudyOptions { runs, seed, until, threads };
            let study = rollwave_sim::study(plan, &scenario, options)?;
            if json {
                writeln!(out, "{}", study.to_json())?;
            } else {
                write!(out, "{}", study.to_text())?;
            }
        }
        Command::Simulate { world: World { file, scenario, json, until }, seed } => {
            let Some((plan, scenario)) = load_world(&file, &scenario)? else { return Ok(ExitCode::from(1)) };
            let report = rollwave_sim::simulate(plan, &scenario, rollwave_sim::Options { seed, until })?;
            if json {
                writeln!(out, "{}", report.to_json())?;
            } else {
                write!(out, "{}", report.to_text())?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a manifest and a scenario for it; on errors prints them all and returns `None`.
fn load_world(file: &Path, scenario: &Path) -> Result<Option<(Arc<Plan>, rollwave_sim::Scenario)>> {
    let Some(manifest) = load_manifest(file)? else { return Ok(None) };
    let text = read(scenario)?;
    match rollwave_sim::parse_scenario(&scenario.display().to_string(), &text, &manifest) {
        Ok(s) => Ok(Some((Arc::new(Plan::new(manifest)), s))),
        Err(errors) => {
            eprint!("{errors}");
            Ok(None)
        }
    }
}

/// Reads and parses a manifest; on errors prints them all and returns `None`.
fn load_manifest(path: &Path) -> Result<Option<rollwave_core::manifest::Manifest>> {
    let text = read(path)?;
    match rollwave_manifest::parse_manifest(&path.display().to_string(), &text) {
        Ok(m) => Ok(Some(m)),
        Err(errors) => {
            eprint!("{errors}");
            Ok(None)
        }
    }
}

/// A flag file read and checked here, so that its mistakes are told as `FILE:LINE:COL`
/// (one line each, on stderr) before anything is sent; the server checks the JSON again.
fn flag_document(path: &std::path::Path) -> Result<serde_json::Value, rollwave_api::client::ClientError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| rollwave_api::client::ClientError::Transport { base: origin.clone(), reason: e.to_string() })?;
    match rollwave_flags::FlagSet::parse_document(&origin, &text) {
        Ok((_, doc)) => Ok(doc),
        Err(errors) => {
            for e in &errors {
                let _ = writeln!(std::io::stderr(), "{e}");
            }
            Err(rollwave_api::client::ClientError::Api {
                status: 422,
                code: "invalid".into(),
                message: format!("{origin}: {} error(s); nothing was sent", errors.len()),
                details: serde_json::Value::Null,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of environment variables, as the definitions give it.
    fn environment_table() -> String {
        let mut cmd = command();
        cmd.build();
        let mut rows = String::from("| variable | flag | command | meaning |\n| --- | --- | --- | --- |\n");
        for name in CONFIGURED_BY_ENVIRONMENT {
            let sub = cmd.find_subcommand(name).expect("a long-running command");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()) {
                let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else { continue };
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let first = help.trim_end_matches('.');
                rows.push_str(&format!(
                    "| `{}` | `--{long}` | {name} | {} |\n",
                    env.to_string_lossy(),
                    first.replace('|', "\\|").replace('\n', " ")
                ));
            }
        }
        rows
    }

    #[test]
    fn every_flag_of_the_long_running_commands_can_come_from_the_environment() {
        let mut cmd = command();
        cmd.build();
        for name in CONFIGURED_BY_ENVIRONMENT {
            let sub = cmd.find_subcommand(name).expect("a long-running command");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set() && !a.is_global_set()) {
                let Some(long) = arg.get_long().filter(|l| *l != "help" && *l != "version") else { continue };
                let env = arg.get_env().unwrap_or_else(|| panic!("{name} --{long} has no environment variable"));
                assert!(env.to_string_lossy().starts_with("ROLLWAVE_"), "{name} --{long}: {env:?}");
            }
        }
    }

    #[test]
    fn a_flag_read_from_the_environment_is_parsed_like_the_flag_and_the_flag_wins() {
        // `mut_arg` on the built command: env values are read at parse time from the process
        // environment, so the test states them as the variables' defaults would be.
        let server = command().find_subcommand("server").cloned().expect("server");
        let host_timeout = server.get_arguments().find(|a| a.get_long() == Some("host-timeout")).expect("flag");
        assert_eq!(
            host_timeout.get_env().map(|e| e.to_string_lossy().into_owned()),
            Some("ROLLWAVE_HOST_TIMEOUT".into())
        );
        // SAFETY: this test is the only one in this binary that touches this variable.
        unsafe { std::env::set_var("ROLLWAVE_NOOP_DELAY", "7s") };
        let m = command().try_get_matches_from(["rollwave", "server"]).expect("parses");
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&m).expect("args");
        let Command::Server(args) = cli.command else { panic!("not the server") };
        assert_eq!(args.noop_delay, std::time::Duration::from_secs(7));
        let m = command().try_get_matches_from(["rollwave", "server", "--noop-delay", "3s"]).expect("parses");
        let Command::Server(args) = <Cli as clap::FromArgMatches>::from_arg_matches(&m).expect("args").command else {
            panic!("not the server")
        };
        assert_eq!(args.noop_delay, std::time::Duration::from_secs(3));
        unsafe { std::env::set_var("ROLLWAVE_NOOP_DELAY", "soon") };
        let refused = command().try_get_matches_from(["rollwave", "server"]).expect_err("a bad value is refused");
        assert!(refused.to_string().contains("soon"), "{refused}");
        unsafe { std::env::remove_var("ROLLWAVE_NOOP_DELAY") };
    }

    #[test]
    fn the_readme_lists_every_environment_variable_as_the_definitions_give_them() {
        let readme = include_str!("../../README.md");
        let (begin, end) = ("<!-- environment variables: begin -->\n", "<!-- environment variables: end -->");
        let start = readme.find(begin).expect("the README has the table's markers") + begin.len();
        let stop = readme[start..].find(end).expect("the table's end marker") + start;
        let expected = environment_table();
        assert!(readme[start..stop] == expected, "the README's table is out of date; it should be:\n{expected}");
    }

    #[test]
    fn yaml_output_holds_the_same_data_as_json() {
        let value = serde_json::json!({
            "version": "v2", "outcome": "halted", "reached": ["alpha", "beta/one"], "lead_time_s": 42,
            "ratio": 1.5, "waiting": true, "reason": "error_rate: 0.12 > 0.05 # not a comment", "at": null
        });
        let yaml = remote::to_yaml(&value).expect("emits");
        let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).expect("reads back");
        let doc = &docs[0];
        assert_eq!(doc["version"].as_str(), Some("v2"));
        assert_eq!(doc["reached"][1].as_str(), Some("beta/one"));
        assert_eq!(doc["lead_time_s"].as_i64(), Some(42));
        assert_eq!(doc["ratio"].as_f64(), Some(1.5));
        assert_eq!(doc["waiting"].as_bool(), Some(true));
        assert_eq!(doc["reason"].as_str(), Some("error_rate: 0.12 > 0.05 # not a comment"));
        assert!(doc["at"].is_null());
    }

    #[test]
    fn completions_and_man_pages_cover_every_command() {
        let mut cmd = command();
        cmd.build();
        let names: Vec<&str> =
            cmd.get_subcommands().filter(|s| !s.is_hide_set()).map(|s| s.get_name()).filter(|n| *n != "help").collect();
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command(), "rollwave", &mut script);
            let script = String::from_utf8(script).expect("text");
            for name in &names {
                assert!(script.contains(name), "{shell} completions lack {name}");
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let written = write_man_pages(dir.path()).expect("writes");
        for name in &names {
            let page = std::fs::read_to_string(dir.path().join(format!("rollwave-{name}.1"))).expect("a page");
            assert!(page.starts_with(".ie") || page.contains(".TH"), "rollwave-{name}.1 is not a man page");
        }
        assert!(written > names.len(), "nested commands have pages too: {written}");
        assert!(dir.path().join("rollwave-release-wait.1").exists());
    }
}
