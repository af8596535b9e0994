//! The agent loop: register, long-poll for the desired version (which is also the
//! heartbeat), deploy through the [`Installer`], report. Connection problems are waited
//! out with capped exponential backoff; nothing the server says stops the loop. Beside
//! it, a thread pushes the host's gauges (see [`crate::gauges`]).

use crate::flags::HostFlags;
use crate::gauges::{GaugeConfig, Target};
use crate::installer::{BASELINE, Deployment, HostIdentity, Installer, InstallerConfig};
use crate::signature::Signatures;
use crate::state::{HookRun, Outcome};
use rollwave_api::client::{Client, ClientError};
use rollwave_api::tls::Roots;
use rollwave_api::{
    Accepted, Desired, DesiredFlags, FlagSetDocument, HookReport, HostReport, Lane, RegisterHost, Registered,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A report body stays under this many bytes (the server takes at most 1 MiB); longer
/// hook outputs are cut from the front until it fits.
const REPORT_LIMIT: usize = 900 * 1024;

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The server's base URL.
    pub server: String,
    /// An agent token bound to `service/environment/host`, or an admin token.
    pub token: String,
    /// Left out, the server finds the one service with this environment, region and zone.
    pub service: Option<String>,
    /// Where the host's service answers, told to the server for routers.
    pub address: Option<String>,
    pub environment: String,
    pub host: HostIdentity,
    pub workdir: PathBuf,
    /// How long one long-poll waits for a change, and how often the agent shows a sign
    /// of life while it deploys. The server counts the start of each poll as the host's
    /// heartbeat, so this stays well under its host timeout (30 s by default).
    pub poll_wait: Duration,
    /// The longest pause between attempts while the server cannot be reached.
    pub max_backoff: Duration,
    /// How often the host's gauges (CPU, memory, restarts) are pushed; zero pushes none.
    pub metrics_every: Duration,
    /// Where the host's flag set is served over OFREP, once a flag release reaches it.
    pub ofrep_listen: std::net::SocketAddr,
    /// Whom `https` trusts, for the server and artifacts alike.
    pub roots: Roots,
}

impl AgentConfig {
    pub fn new(
        server: impl Into<String>,
        token: impl Into<String>,
        environment: impl Into<String>,
        host: HostIdentity,
        workdir: impl Into<PathBuf>,
    ) -> Self {
        AgentConfig {
            server: server.into(),
            token: token.into(),
            service: None,
            address: None,
            environment: environment.into(),
            host,
            workdir: workdir.into(),
            poll_wait: Duration::from_secs(10),
            max_backoff: Duration::from_secs(30),
            metrics_every: Duration::from_secs(10),
            ofrep_listen: crate::flags::DEFAULT_LISTEN.parse().expect("a socket address"),
            roots: Roots::default(),
        }
    }
}

/// The slot the server says this agent speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    service: String,
    host: String,
}

pub struct Agent {
    config: AgentConfig,
    client: Client,
    installer: Installer,
    slot: Option<Slot>,
    /// The desired state registration answered, to act on before polling.
    registered: Option<Desired>,
    /// The last command the server showed, for the long-poll's `after`.
    seen: Option<u64>,
    /// The last flag command the server showed, for the long-poll's `flags_after`.
    seen_flags: Option<u64>,
    flags: HostFlags,
    backoff: Backoff,
    /// Whom the gauges are pushed for, shared with their thread.
    target: Arc<Mutex<Option<Target>>>,
}

impl Agent {
    /// Opens the work directory (reporting any deployment a restart interrupted, once
    /// the server can be reached) and counts this start of the agent on the host.
    pub fn new(config: AgentConfig) -> Result<Agent, crate::DeployError> {
        let installer_config = InstallerConfig {
            roots: config.roots.clone(),
            ..InstallerConfig::new(&config.workdir, config.host.clone())
        };
        let mut installer = Installer::open(installer_config)?;
        installer.count_start()?;
        Ok(Agent::with_installer(config, installer))
    }

    /// With an installer configured by the caller (its work directory wins).
    pub fn with_installer(config: AgentConfig, installer: Installer) -> Agent {
        let client = Client::new(&config.server, Some(config.token.clone())).trusting(&config.roots);
        let backoff = Backoff::new(Duration::from_millis(500), config.max_backoff);
        let target = Arc::new(Mutex::new(None));
        let flags = HostFlags::open(&config.workdir, config.ofrep_listen);
        Agent {
            config,
            client,
            installer,
            slot: None,
            registered: None,
            seen: None,
            seen_flags: None,
            flags,
            backoff,
            target,
        }
    }

    pub fn installer(&self) -> &Installer {
        &self.installer
    }

    /// The host's flags: the version served and where.
    pub fn flags(&self) -> &HostFlags {
        &self.flags
    }

    /// Runs until `stop` is set (checked between long-polls and while backing off), with
    /// the gauges pushed from a thread of their own.
    pub fn run(&mut self, stop: &AtomicBool) {
        let gauges = GaugeConfig {
            server: self.config.server.clone(),
            token: self.config.token.clone(),
            environment: self.config.environment.clone(),
            every: self.config.metrics_every,
            restarts: self.installer.restarts(),
            roots: self.config.roots.clone(),
        };
        let target = Arc::clone(&self.target);
        std::thread::scope(|scope| {
            if !gauges.every.is_zero() {
                scope.spawn(|| crate::gauges::run(&gauges, &target, stop));
            }
            while !stop.load(Ordering::Relaxed) {
                match self.step() {
                    Ok(()) => self.backoff.reset(),
                    Err(e) => {
                        // Register afresh: its answer explains most refusals best.
                        self.slot = None;
                        let pause = self.backoff.next();
                        log(&format!("{e}; retrying in {:.1}s", pause.as_secs_f64()));
                        sleep_unless(stop, pause);
                    }
                }
            }
        });
    }

    /// Tells the gauges thread which slot and version the host has now.
    fn share_target(&self, slot: &Slot) {
        let target = Target {
            service: slot.service.clone(),
            host: slot.host.clone(),
            version: self.installer.current().unwrap_or(BASELINE).to_owned(),
        };
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
    }

    /// One round: register if needed, report an unreported outcome, wait for the
    /// desired version once, and deploy it if it is a new command.
    pub fn step(&mut self) -> Result<(), ClientError> {
        let slot = match &self.slot {
            Some(slot) => slot.clone(),
            None => self.register()?,
        };
        if let Some(outcome) = self.installer.unreported().cloned() {
            self.report(&slot, &outcome)?;
        }
        let desired = match self.registered.take() {
            Some(desired) => desired,
            None => {
                let mut path =
                    format!("/v1/services/{}/hosts/{}/{}/desired", slot.service, self.config.environment, slot.host);
                if let Some(after) = self.seen {
                    path.push_str(&format!("?after={after}&wait={}", self.config.poll_wait.as_secs().max(1)));
                    if let Some(flags_after) = self.seen_flags {
                        path.push_str(&format!("&flags_after={flags_after}"));
                    }
                }
                self.client.get(&path)?
            }
        };
        self.seen = Some(desired.command);
        if let Some(flags) = &desired.flags {
            self.seen_flags = Some(flags.command);
            if self.flags.needs(flags.command) {
                self.deploy_flags(&slot, flags)?;
            }
        }
        if desired.command == 0 || desired.command == self.installer.last_command() {
            return Ok(());
        }
        log(&format!("command {}: {} {}", desired.command, desired.purpose, desired.version));
        let deployment = Deployment {
            command: desired.command,
            version: desired.version,
            artifact: desired.artifact,
            sha256: desired.sha256,
            signatures: desired.signatures.map(|p| Signatures {
                required: p.required,
                keys: p.keys.into_iter().map(|k| (k.name, k.public_key)).collect(),
            }),
        };
        let outcome = self.deploy_with_heartbeats(&slot, &deployment);
        self.share_target(&slot);
        match &outcome.reason {
            None => log(&format!("command {}: {} is installed", outcome.command, outcome.version)),
            Some(reason) => log(&format!("command {}: {} failed: {reason}", outcome.command, outcome.version)),
        }
        self.report(&slot, &outcome)
    }

    /// Serves the flag set the server asks for and reports it. A download the server
    /// cannot answer now is retried (an error here); a set that cannot be served is
    /// reported as a failed deployment, and the host keeps serving what it served.
    fn deploy_flags(&mut self, slot: &Slot, desired: &DesiredFlags) -> Result<(), ClientError> {
        log(&format!("flag command {}: {} {}", desired.command, desired.purpose, desired.version));
        let fetched = if self.flags.has(&desired.version) {
            None
        } else {
            let path = format!("/v1/services/{}/flag-sets/{}", slot.service, desired.version);
            let doc: FlagSetDocument = self.client.get(&path)?;
            Some(doc.flags)
        };
        let result = self.flags.deploy(desired.command, &desired.version, fetched);
        match &result {
            Ok(()) => log(&format!("flag command {}: serving {}", desired.command, desired.version)),
            Err(e) => log(&format!("flag command {}: {} failed: {e}", desired.command, desired.version)),
        }
        let body = HostReport {
            command: desired.command,
            ok: result.is_ok(),
            reason: result.err(),
            hooks: Vec::new(),
            lane: Lane::Flags,
        };
        let path = format!("/v1/services/{}/hosts/{}/{}/report", slot.service, self.config.environment, slot.host);
        let _: Accepted = self.client.post(&path, &body)?;
        self.flags.mark_reported(desired.command);
        Ok(())
    }

    /// Deploys while a second thread keeps polling (without waiting), so the server
    /// does not take the host for lost during long hooks.
    fn deploy_with_heartbeats(&mut self, slot: &Slot, deployment: &Deployment) -> Outcome {
        let done = AtomicBool::new(false);
        let missed = AtomicBool::new(false);
        let path = format!("/v1/services/{}/hosts/{}/{}/desired", slot.service, self.config.environment, slot.host);
        let beat = Client::new(&self.config.server, Some(self.config.token.clone())).trusting(&self.config.roots);
        let every = self.config.poll_wait;
        let installer = &mut self.installer;
        let outcome = std::thread::scope(|scope| {
            scope.spawn(|| {
                loop {
                    sleep_unless(&done, every);
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    if beat.get::<Desired>(&path).is_err() {
                        missed.store(true, Ordering::Relaxed);
                    }
                }
            });
            let outcome = installer.deploy(deployment);
            done.store(true, Ordering::Relaxed);
            outcome
        });
        if missed.load(Ordering::Relaxed) {
            // The server may have taken the host for lost meanwhile; a lost host counts
            // again only once it registers again.
            self.slot = None;
        }
        outcome
    }

    fn register(&mut self) -> Result<Slot, ClientError> {
        let request = RegisterHost {
            service: self.config.service.clone(),
            environment: self.config.environment.clone(),
            host: self.config.host.id.clone(),
            region: Some(self.config.host.region.clone()),
            zone: Some(self.config.host.zone.clone()),
            address: self.config.address.clone(),
        };
        let registered: Registered = self.client.register_host(&request)?;
        let slot = Slot { service: registered.service, host: registered.host };
        log(&format!(
            "registered as {}/{}/{}; runs {}",
            slot.service,
            self.config.environment,
            slot.host,
            self.installer.current().unwrap_or("nothing yet")
        ));
        self.registered = Some(registered.desired);
        self.slot = Some(slot.clone());
        self.share_target(&slot);
        Ok(slot)
    }

    fn report(&mut self, slot: &Slot, outcome: &Outcome) -> Result<(), ClientError> {
        let path = format!("/v1/services/{}/hosts/{}/{}/report", slot.service, self.config.environment, slot.host);
        let _: Accepted = self.client.post(&path, &report_body(outcome))?;
        if let Err(e) = self.installer.mark_reported(outcome.command) {
            // It will be reported again, which the server ignores.
            log(&format!("cannot record that command {} was reported: {e}", outcome.command));
        }
        Ok(())
    }
}

/// The wire form of an outcome, with hook outputs cut (oldest output first) to fit
/// the server's body limit.
pub fn report_body(outcome: &Outcome) -> HostReport {
    let mut body = HostReport {
        command: outcome.command,
        ok: outcome.ok,
        reason: outcome.reason.clone(),
        hooks: outcome.hooks.iter().map(hook_report).collect(),
        lane: rollwave_api::Lane::Code,
    };
    while serde_json::to_vec(&body).map_or(0, |b| b.len()) > REPORT_LIMIT {
        let Some(longest) = body.hooks.iter_mut().max_by_key(|h| h.output.len()) else { break };
        if longest.output.is_empty() {
            break;
        }
        let mut cut = longest.output.len() / 2;
        while !longest.output.is_char_boundary(cut) {
            cut += 1;
        }
        longest.output.drain(..cut);
    }
    body
}

fn hook_report(run: &HookRun) -> HookReport {
    HookReport {
        name: run.step.as_str().to_owned(),
        exit_code: run.exit_code,
        duration_ms: run.duration_ms,
        output: run.output.clone(),
        timed_out: run.timed_out,
        ok: run.ok,
    }
}

pub(crate) fn log(message: &str) {
    tracing::info!("{message}");
}

pub(crate) fn sleep_unless(stop: &AtomicBool, pause: Duration) {
    let deadline = std::time::Instant::now() + pause;
    while !stop.load(Ordering::Relaxed) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Capped exponential backoff with up to 25 % jitter, so a fleet does not return in step.
#[derive(Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max: max.max(first), next: first }
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        (base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)).min(self.max)
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::Step;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let pauses: Vec<u64> = (0..5).map(|_| b.next().as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next().as_secs(), 1);
    }

    #[test]
    fn a_report_fits_the_servers_body_limit() {
        let run = |step| HookRun {
            step,
            exit_code: Some(0),
            duration_ms: 1,
            output: "\u{1}".repeat(64 * 1024),
            timed_out: false,
            ok: true,
        };
        let outcome = Outcome {
            command: 1,
            version: "v1".into(),
            ok: true,
            reason: None,
            hooks: Step::ALL.into_iter().map(run).collect(),
        };
        let body = report_body(&outcome);
        assert!(serde_json::to_vec(&body).unwrap().len() <= REPORT_LIMIT);
        assert!(body.hooks.iter().all(|h| !h.output.is_empty()));
    }
}
