//! `rollwave fleet up`: many agents on this machine, one child process each, their
//! output prefixed with their host id, all stopped together.

use crate::process::kill_group;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// The `rollwave` binary; each agent runs as `BINARY agent …`.
    pub binary: PathBuf,
    pub server: String,
    /// Handed to the agents in their environment (`ROLLWAVE_TOKEN`), not their arguments.
    pub token: Option<String>,
    /// Per host id, a token of that host alone, handed to its agent instead of `token`.
    pub host_tokens: std::collections::BTreeMap<String, String>,
    pub service: Option<String>,
    pub environment: String,
    pub region: String,
    pub zones: Vec<String>,
    pub hosts_per_zone: u32,
    /// Each agent works in `WORKDIR/{host id}`.
    pub workdir: PathBuf,
}

impl FleetConfig {
    /// The host ids, `{zone}-{n}` with n from 1, zone by zone.
    pub fn host_ids(&self) -> Vec<(String, String)> {
        self.zones
            .iter()
            .flat_map(|zone| (1..=self.hosts_per_zone).map(move |n| (zone.clone(), format!("{zone}-{n}"))))
            .collect()
    }
}

/// One agent of the fleet.
#[derive(Debug)]
pub struct Member {
    pub host_id: String,
    child: Child,
    exited: Option<ExitStatus>,
    /// Closed when both output relays have finished.
    relays: Vec<mpsc::Receiver<()>>,
}

/// How [`Fleet::stop`] went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Agents that had exited before the stop.
    pub already_exited: usize,
    /// Agents that exited on SIGTERM within the grace period.
    pub terminated: usize,
    /// Agents that had to be killed.
    pub killed: usize,
}

/// Running agents, each the leader of its own process group.
#[derive(Debug)]
pub struct Fleet {
    members: Vec<Member>,
}

impl Fleet {
    /// Starts every agent. If one cannot be started, those already started are stopped.
    pub fn start(config: &FleetConfig) -> std::io::Result<Fleet> {
        let mut fleet = Fleet { members: Vec::new() };
        for (zone, host_id) in config.host_ids() {
            match spawn(config, &zone, &host_id) {
                Ok(member) => fleet.members.push(member),
                Err(e) => {
                    fleet.stop(Duration::from_secs(5));
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!("cannot start the agent {host_id} ({}): {e}", config.binary.display()),
                    ));
                }
            }
        }
        Ok(fleet)
    }

    /// Host ids and process ids.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.members.iter().map(|m| (m.host_id.clone(), m.child.id())).collect()
    }

    /// Agents that exited since the last call, with their status.
    pub fn newly_exited(&mut self) -> Vec<(String, ExitStatus)> {
        let mut out = Vec::new();
        for m in &mut self.members {
            if m.exited.is_none()
                && let Ok(Some(status)) = m.child.try_wait()
            {
                m.exited = Some(status);
                out.push((m.host_id.clone(), status));
            }
        }
        out
    }

    /// How many agents still run (as of the last [`Fleet::newly_exited`]).
    pub fn running(&self) -> usize {
        self.members.iter().filter(|m| m.exited.is_none()).count()
    }

    /// SIGTERM to every agent's process group, up to `grace` for them to exit, then
    /// SIGKILL to the groups of those that did not. Every agent is reaped before this
    /// returns, and whatever is left in their groups is killed.
    pub fn stop(mut self, grace: Duration) -> Stopped {
        let mut stopped = Stopped::default();
        self.newly_exited();
        stopped.already_exited = self.members.len() - self.running();
        for m in &self.members {
            if m.exited.is_none() {
                kill_group(m.child.id(), libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        while self.running() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            stopped.terminated += self.newly_exited().len();
        }
        for m in &mut self.members {
            if m.exited.is_none() {
                kill_group(m.child.id(), libc::SIGKILL);
                m.exited = m.child.wait().ok();
                stopped.killed += 1;
            }
        }
        for m in &self.members {
            // The leader is reaped, so its pid is not reused while the group has members.
            kill_group(m.child.id(), libc::SIGKILL);
        }
        for m in &self.members {
            for relay in &m.relays {
                let _ = relay.recv_timeout(Duration::from_secs(2));
            }
        }
        stopped
    }
}

fn spawn(config: &FleetConfig, zone: &str, host_id: &str) -> std::io::Result<Member> {
    let mut command = Command::new(&config.binary);
    command
        .arg("agent")
        .arg("--server")
        .arg(&config.server)
        .arg("--host-id")
        .arg(host_id)
        .arg("--environment")
        .arg(&config.environment)
        .arg("--region")
        .arg(&config.region)
        .arg("--zone")
        .arg(zone)
        .arg("--workdir")
        .arg(config.workdir.join(host_id))
        // Many agents share this machine: each serves its flags on a port of its own,
        // written to its `flags/address`.
        .arg("--ofrep-listen")
        .arg("127.0.0.1:0");
    if let Some(service) = &config.service {
        command.arg("--service").arg(service);
    }
    match config.host_tokens.get(host_id).or(config.token.as_ref()) {
        Some(token) => command.env("ROLLWAVE_TOKEN", token),
        None => command.env_remove("ROLLWAVE_TOKEN"),
    };
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // SAFETY: the closure only calls prctl, which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            // Should this process die without stopping its agents, they stop too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let mut relays = Vec::new();
    if let Some(out) = child.stdout.take() {
        relays.push(relay(out, host_id.to_owned(), false));
    }
    if let Some(err) = child.stderr.take() {
        relays.push(relay(err, host_id.to_owned(), true));
    }
    Ok(Member { host_id: host_id.to_owned(), child, exited: None, relays })
}

/// Copies lines from `from` to this process's stdout (or stderr), each prefixed with the
/// host id. It keeps reading when the output is gone, so the agent never blocks on it.
fn relay(from: impl Read + Send + 'static, host_id: String, to_stderr: bool) -> mpsc::Receiver<()> {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !line.ends_with(b"\n") {
                        line.push(b'\n');
                    }
                    let mut text = Vec::with_capacity(host_id.len() + 2 + line.len());
                    text.extend_from_slice(host_id.as_bytes());
                    text.extend_from_slice(b": ");
                    text.extend_from_slice(&line);
                    let _ = if to_stderr {
                        std::io::stderr().lock().write_all(&text)
                    } else {
                        std::io::stdout().lock().write_all(&text)
                    };
                }
            }
        }
        let _ = done.send(());
    });
    finished
}
