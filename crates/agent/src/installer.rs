//! Installing a version on this host: the deployment procedure, with no network
//! protocol in it (the [`crate::agent`] loop is the shell that talks to the server).
//!
//! On disk, under the work directory `DIR`:
//!
//! ```text
//! DIR/state.json          what the agent knows (see crate::state)
//! DIR/current -> releases/v2
//! DIR/releases/v1/        earlier releases, kept for rollback (the last few)
//! DIR/releases/v2/        an unpacked artifact, with rollwave-hooks.yaml at its root
//! DIR/releases/.tmp-…     a release being unpacked: renamed to its version when whole
//! DIR/downloads/          artifacts being downloaded
//! ```
//!
//! A deployment of version V: fetch the artifact (unless V is already on disk with the
//! same sha256), verify its sha256, unpack it into a temporary directory and rename that
//! to `releases/V`; run the running release's `stop` hook (from its own directory), then
//! V's `before_install`, `after_install`, `start` and `validate`; then point `current`
//! at V (a new symlink renamed over the old one). Every step is written to the state
//! file before it begins, so an interrupted deployment is reported as failed, naming the
//! step, and `current` never points at a release that did not pass `validate`.

use crate::artifact;
use crate::error::DeployError;
use crate::hooks::{HOOKS_FILE, Hook, Hooks, Step};
use crate::process;
use crate::signature::{self, Checked, Signatures};
use crate::state::{Doing, HookRun, InProgress, Outcome, ReleaseRecord, STATE_FILE, State, sync_dir};
use rollwave_api::tls::Roots;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many releases are kept on disk, `current` included.
pub const KEEP_RELEASES: usize = 3;

/// Who this host is, for the hooks' environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostIdentity {
    pub id: String,
    pub region: String,
    pub zone: String,
}

#[derive(Clone, Debug)]
pub struct InstallerConfig {
    /// Created if missing.
    pub workdir: PathBuf,
    pub host: HostIdentity,
    /// Releases kept on disk; `current` and the running release are never removed.
    pub keep_releases: usize,
    /// How long to wait for a hook's remaining output after it exits (background
    /// processes it started may keep the pipe open for good).
    pub output_grace: Duration,
    /// Whom `https` downloads trust (artifacts and their signatures).
    pub roots: Roots,
}

impl InstallerConfig {
    pub fn new(workdir: impl Into<PathBuf>, host: HostIdentity) -> Self {
        InstallerConfig {
            workdir: workdir.into(),
            host,
            keep_releases: KEEP_RELEASES,
            output_grace: Duration::from_millis(500),
            roots: Roots::default(),
        }
    }
}

/// What the server asks this host to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deployment {
    pub command: u64,
    pub version: String,
    /// An `http(s)://` or `file://` URL, or a local path.
    pub artifact: Option<String>,
    /// Lowercase or uppercase hex; not checked when absent.
    pub sha256: Option<String>,
    /// The keys the artifact may be signed with; signatures are not looked for when absent.
    pub signatures: Option<Signatures>,
}

/// The version a fleet runs before any release: rolling back to it uninstalls.
pub const BASELINE: &str = "baseline";

/// Owns the work directory and its state file.
#[derive(Debug)]
pub struct Installer {
    config: InstallerConfig,
    state: State,
}

impl Installer {
    /// Opens (or creates) the work directory. If the state file shows a deployment that
    /// was under way, it was interrupted: its outcome becomes a failure naming the step
    /// (or a success if only the state write after switching `current` was lost), to be
    /// reported. Leftovers of unfinished unpacking and downloads are removed.
    pub fn open(mut config: InstallerConfig) -> Result<Installer, DeployError> {
        let workdir = &config.workdir;
        for dir in [workdir.clone(), workdir.join("releases"), workdir.join("downloads")] {
            std::fs::create_dir_all(&dir).map_err(|e| DeployError::io(&dir, e))?;
        }
        config.workdir = workdir.canonicalize().map_err(|e| DeployError::io(workdir, e))?;
        let state_path = config.workdir.join(STATE_FILE);
        let state = State::load(&state_path).map_err(|e| DeployError::io(&state_path, e))?;
        let mut installer = Installer { config, state };
        installer.state.current = installer.read_current();
        if let Some(interrupted) = installer.state.in_progress.take() {
            let outcome = installer.interrupted(interrupted);
            installer.state.last_command = outcome.command;
            installer.state.unreported = Some(outcome);
            installer.save()?;
        }
        installer.remove_leftovers();
        Ok(installer)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn workdir(&self) -> &Path {
        &self.config.workdir
    }

    /// The version `current` points to.
    pub fn current(&self) -> Option<&str> {
        self.state.current.as_deref()
    }

    /// Counts a start of the agent on this host, in the state file: how a crash loop
    /// shows (as `restarts`) even though each run of the agent is new.
    pub fn count_start(&mut self) -> Result<u64, DeployError> {
        self.state.starts += 1;
        self.save()?;
        Ok(self.state.starts)
    }

    /// How many times the agent started again on this host: its starts but the first.
    pub fn restarts(&self) -> u64 {
        self.state.starts.saturating_sub(1)
    }

    pub fn last_command(&self) -> u64 {
        self.state.last_command
    }

    pub fn release_dir(&self, version: &str) -> PathBuf {
        self.config.workdir.join("releases").join(version)
    }

    /// The last outcome, until [`Installer::mark_reported`].
    pub fn unreported(&self) -> Option<&Outcome> {
        self.state.unreported.as_ref()
    }

    /// The server acknowledged the outcome of `command`.
    pub fn mark_reported(&mut self, command: u64) -> Result<(), DeployError> {
        if self.state.unreported.as_ref().is_some_and(|o| o.command == command) {
            self.state.unreported = None;
            self.save()?;
        }
        Ok(())
    }

    /// Runs a deployment to its end and returns its outcome, which is also kept as the
    /// unreported outcome until [`Installer::mark_reported`]. If this host already runs
    /// the version (it is `current`, and running), nothing is done and it succeeds.
    pub fn deploy(&mut self, deployment: &Deployment) -> Outcome {
        let mut hooks = Vec::new();
        let result = self.try_deploy(deployment, &mut hooks);
        let outcome = Outcome {
            command: deployment.command,
            version: deployment.version.clone(),
            ok: result.is_ok(),
            reason: result.err().map(|e| e.to_string()),
            hooks,
        };
        self.state.in_progress = None;
        self.state.last_command = deployment.command;
        self.state.unreported = Some(outcome.clone());
        self.prune();
        // If even this write fails, the outcome is still reported from memory; after a
        // restart the deployment would be found interrupted, which is also the truth.
        let _ = self.save();
        outcome
    }

    fn try_deploy(&mut self, d: &Deployment, runs: &mut Vec<HookRun>) -> Result<(), DeployError> {
        check_version(&d.version)?;
        let v = d.version.as_str();
        if self.current() == Some(v) && self.state.active.as_deref() == Some(v) && self.release_matches(v, d) {
            return Ok(());
        }
        let previous = self.state.current.clone();
        self.state.in_progress = Some(InProgress {
            command: d.command,
            version: d.version.clone(),
            previous: previous.clone(),
            doing: Doing::Fetch,
            hooks: Vec::new(),
        });
        self.save()?;
        if d.artifact.is_none() && d.version == BASELINE && !self.release_dir(v).is_dir() {
            // Back to what ran before any release: nothing rollwave installed.
            self.stop_running(d, &previous, runs)?;
            let current = self.config.workdir.join("current");
            match std::fs::remove_file(&current) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(DeployError::io(&current, e)),
            }
            self.state.current = None;
            return Ok(());
        }
        let dir = self.ensure_release(d)?;
        let hooks = read_hooks(&dir)?;
        self.stop_running(d, &previous, runs)?;
        let env = self.hook_env(d, &previous, &dir);
        for step in [Step::BeforeInstall, Step::AfterInstall] {
            if let Some(hook) = hooks.get(step) {
                self.run_hook(step, hook, &dir, &env, runs)?;
            }
        }
        // From here on the new release may be running, whatever happens next.
        self.state.active = Some(d.version.clone());
        self.save()?;
        for step in [Step::Start, Step::Validate] {
            if let Some(hook) = hooks.get(step) {
                self.run_hook(step, hook, &dir, &env, runs)?;
            }
        }
        self.set_doing(Doing::Switch, runs)?;
        self.switch_current(v)?;
        self.state.current = Some(d.version.clone());
        Ok(())
    }

    /// What every hook finds in its environment.
    fn hook_env(&self, d: &Deployment, previous: &Option<String>, release_dir: &Path) -> Vec<(String, String)> {
        let host = &self.config.host;
        vec![
            ("ROLLWAVE_VERSION".into(), d.version.clone()),
            ("ROLLWAVE_PREVIOUS_VERSION".into(), previous.clone().unwrap_or_default()),
            ("ROLLWAVE_HOST_ID".into(), host.id.clone()),
            ("ROLLWAVE_REGION".into(), host.region.clone()),
            ("ROLLWAVE_ZONE".into(), host.zone.clone()),
            ("ROLLWAVE_RELEASE_DIR".into(), release_dir.display().to_string()),
            // Where the host's flags are served: `address` there holds the OFREP base URL.
            ("ROLLWAVE_FLAGS_DIR".into(), self.config.workdir.join("flags").display().to_string()),
        ]
    }

    /// Runs the `stop` hook of the release that is running, if any.
    fn stop_running(
        &mut self,
        d: &Deployment,
        previous: &Option<String>,
        runs: &mut Vec<HookRun>,
    ) -> Result<(), DeployError> {
        let Some(running) = self.state.active.clone() else { return Ok(()) };
        let running_dir = self.release_dir(&running);
        // Removed by hand, it has no stop hook left to run; failing on that would
        // leave the host stuck.
        let running_hooks = if !running_dir.is_dir() {
            Hooks::default()
        } else {
            read_hooks(&running_dir).map_err(|e| DeployError::HookFailed {
                step: Step::Stop,
                detail: format!("cannot read the hooks of the running release {running}: {e}"),
            })?
        };
        if let Some(stop) = &running_hooks.stop {
            let env = self.hook_env(d, previous, &running_dir);
            self.run_hook(Step::Stop, stop, &running_dir, &env, runs)?;
        }
        self.state.active = None;
        self.save()
    }

    /// Whether `version` is on disk as the deployment asks (same sha256, when it says).
    fn release_matches(&self, version: &str, d: &Deployment) -> bool {
        self.release_dir(version).is_dir()
            && self.state.releases.iter().any(|r| {
                r.version == version
                    && match (&d.sha256, &r.sha256) {
                        (None, _) => true,
                        (Some(asked), Some(had)) => asked.eq_ignore_ascii_case(had),
                        (Some(_), None) => false,
                    }
            })
    }

    fn set_doing(&mut self, doing: Doing, runs: &[HookRun]) -> Result<(), DeployError> {
        if let Some(p) = self.state.in_progress.as_mut() {
            p.doing = doing;
            p.hooks = runs.to_vec();
        }
        self.save()
    }

    /// `releases/V`, from disk if it is there as asked, else fetched and unpacked.
    fn ensure_release(&mut self, d: &Deployment) -> Result<PathBuf, DeployError> {
        let v = d.version.as_str();
        let dir = self.release_dir(v);
        if self.release_matches(v, d) {
            // Most recently deployed now, for pruning.
            if let Some(i) = self.state.releases.iter().position(|r| r.version == v) {
                let record = self.state.releases.remove(i);
                self.state.releases.push(record);
            }
            return Ok(dir);
        }
        let in_use = self.current() == Some(v) || self.state.active.as_deref() == Some(v);
        if dir.exists() {
            if in_use {
                let on_disk = self.state.releases.iter().find(|r| r.version == v).and_then(|r| r.sha256.clone());
                return Err(DeployError::ReleaseConflict {
                    version: d.version.clone(),
                    on_disk: on_disk.unwrap_or_else(|| "unknown".into()),
                    asked: d.sha256.clone().unwrap_or_default(),
                });
            }
            std::fs::remove_dir_all(&dir).map_err(|e| DeployError::io(&dir, e))?;
        }
        self.state.releases.retain(|r| r.version != v);

        let artifact = d.artifact.as_deref().ok_or_else(|| DeployError::NoArtifact { version: d.version.clone() })?;
        let download = self.config.workdir.join("downloads").join(format!("{v}.tar.gz.part"));
        let local = artifact::fetch(artifact, &download, &self.config.roots)?;
        let result = self.unpack_verified(d, &local, &dir);
        if local.downloaded {
            let _ = std::fs::remove_file(&local.path);
        }
        result?;
        self.state.releases.push(ReleaseRecord { version: d.version.clone(), sha256: Some(local.sha256) });
        self.save()?;
        Ok(dir)
    }

    fn unpack_verified(&mut self, d: &Deployment, local: &artifact::Local, dir: &Path) -> Result<(), DeployError> {
        if let Some(expected) = &d.sha256
            && !expected.eq_ignore_ascii_case(&local.sha256)
        {
            return Err(DeployError::ChecksumMismatch {
                expected: expected.to_ascii_lowercase(),
                actual: local.sha256.clone(),
            });
        }
        if let (Some(signatures), Some(artifact)) = (&d.signatures, &d.artifact) {
            match signature::check(artifact, local, signatures, &self.config.roots)? {
                Checked::SignedBy { key, comment } => {
                    tracing::info!(version = %d.version, %key, %comment, "the artifact's signature verifies");
                }
                Checked::Unsigned => {
                    tracing::info!(version = %d.version, "the artifact is not signed (not required here)")
                }
            }
        }
        self.set_doing(Doing::Unpack, &[])?;
        let releases = self.config.workdir.join("releases");
        let tmp = releases.join(format!(".tmp-{}-{}", d.version, d.command));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| DeployError::io(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| DeployError::io(&tmp, e))?;
        let unpacked = artifact::unpack(&local.path, &tmp).and_then(|()| read_hooks(&tmp).map(|_| ()));
        if let Err(e) = unpacked {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // The files must be on disk before the release gets its name.
        sync_filesystem(&tmp).map_err(|e| DeployError::io(&tmp, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| DeployError::io(dir, e))?;
        sync_dir(&releases).map_err(|e| DeployError::io(&releases, e))
    }

    fn run_hook(
        &mut self,
        step: Step,
        hook: &Hook,
        dir: &Path,
        env: &[(String, String)],
        runs: &mut Vec<HookRun>,
    ) -> Result<(), DeployError> {
        self.set_doing(Doing::Hook(step), runs)?;
        let (run, failure) = match hook {
            Hook::Run { command, timeout } => {
                let spec = process::Spec {
                    script: command,
                    dir,
                    env,
                    timeout: *timeout,
                    output_grace: self.config.output_grace,
                };
                match process::run(&spec) {
                    Ok(f) => {
                        let ok = f.exit_code == Some(0) && !f.timed_out;
                        let failure = if f.timed_out {
                            format!("killed at its timeout of {}", human(*timeout))
                        } else {
                            match f.exit_code {
                                Some(code) => format!("exited with status {code}"),
                                None => "killed by a signal".to_owned(),
                            }
                        };
                        let run = HookRun {
                            step,
                            exit_code: f.exit_code,
                            duration_ms: millis(f.duration),
                            output: f.output,
                            timed_out: f.timed_out,
                            ok,
                        };
                        (run, failure)
                    }
                    Err(e) => {
                        let failure = format!("could not start `sh -c {command}`: {e}");
                        let run = HookRun {
                            step,
                            exit_code: None,
                            duration_ms: 0,
                            output: failure.clone(),
                            timed_out: false,
                            ok: false,
                        };
                        (run, failure)
                    }
                }
            }
            Hook::Http { url, expect_status, within } => http_check(step, url, *expect_status, *within),
        };
        let ok = run.ok;
        runs.push(run);
        if ok {
            if let Some(p) = self.state.in_progress.as_mut() {
                p.hooks = runs.clone();
            }
            Ok(())
        } else {
            Err(DeployError::HookFailed { step, detail: failure })
        }
    }

    /// Points `current` at `releases/V`: a new symlink renamed over the old one.
    fn switch_current(&self, version: &str) -> Result<(), DeployError> {
        let workdir = &self.config.workdir;
        let tmp = workdir.join(".current.tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("releases").join(version), &tmp).map_err(|e| DeployError::io(&tmp, e))?;
        let current = workdir.join("current");
        std::fs::rename(&tmp, &current).map_err(|e| DeployError::io(&current, e))?;
        sync_dir(workdir).map_err(|e| DeployError::io(workdir, e))
    }

    /// The version `DIR/current` points to, if it points to a release.
    fn read_current(&self) -> Option<String> {
        let target = std::fs::read_link(self.config.workdir.join("current")).ok()?;
        let version = target.strip_prefix("releases").ok()?.to_str()?.to_owned();
        (check_version(&version).is_ok() && self.release_dir(&version).is_dir()).then_some(version)
    }

    fn interrupted(&self, p: InProgress) -> Outcome {
        if p.doing == Doing::Switch && self.current() == Some(p.version.as_str()) {
            // Every hook passed and `current` was switched; only the state write was lost.
            return Outcome { command: p.command, version: p.version, ok: true, reason: None, hooks: p.hooks };
        }
        let mut hooks = p.hooks;
        if let Doing::Hook(step) = p.doing {
            hooks.push(HookRun {
                step,
                exit_code: None,
                duration_ms: 0,
                output: "interrupted: the agent stopped while this hook ran".into(),
                timed_out: false,
                ok: false,
            });
        }
        let current = match self.current() {
            Some(v) => format!("current still points to {v}"),
            None => "current points to no release".to_owned(),
        };
        Outcome {
            command: p.command,
            version: p.version.clone(),
            ok: false,
            reason: Some(format!(
                "interrupted: the agent stopped (restarted or killed) during {} of {}; {current}",
                p.doing.describe(),
                p.version
            )),
            hooks,
        }
    }

    /// Removes what an interrupted unpacking or download left.
    fn remove_leftovers(&self) {
        let workdir = &self.config.workdir;
        let _ = std::fs::remove_file(workdir.join(".current.tmp"));
        for dir in ["releases", "downloads"] {
            let Ok(entries) = std::fs::read_dir(workdir.join(dir)) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let path = entry.path();
                if dir == "downloads" {
                    let _ = std::fs::remove_file(&path);
                } else if name.starts_with(".tmp-") {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
        }
    }

    /// Keeps the `keep_releases` most recently deployed releases, and always `current`
    /// and the running release; removes the others (and directories no record names).
    fn prune(&mut self) {
        let keep = self.config.keep_releases;
        let excess = self.state.releases.len().saturating_sub(keep);
        let protected = [self.state.current.clone(), self.state.active.clone()];
        let mut removed = Vec::new();
        for record in self.state.releases.iter().take(excess) {
            if protected.contains(&Some(record.version.clone())) {
                continue;
            }
            let dir = self.release_dir(&record.version);
            if std::fs::remove_dir_all(&dir).is_ok() || !dir.exists() {
                removed.push(record.version.clone());
            }
        }
        self.state.releases.retain(|r| !removed.contains(&r.version));
        let releases = self.config.workdir.join("releases");
        if let Ok(entries) = std::fs::read_dir(&releases) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let known = self.state.releases.iter().any(|r| r.version == name)
                    || protected.contains(&Some(name.clone()))
                    || name.starts_with(".tmp-");
                if !known {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    fn save(&self) -> Result<(), DeployError> {
        let path = self.config.workdir.join(STATE_FILE);
        self.state.save(&path).map_err(|e| DeployError::io(&path, e))
    }
}

/// A version names a directory: a plain name, not hidden.
fn check_version(version: &str) -> Result<(), DeployError> {
    let ok = !version.is_empty()
        && !version.starts_with('.')
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(DeployError::BadVersion(version.to_owned())) }
}

/// Reads and checks `DIR/rollwave-hooks.yaml`.
pub fn read_hooks(release_dir: &Path) -> Result<Hooks, DeployError> {
    let path = release_dir.join(HOOKS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DeployError::MissingHooks),
        Err(e) => return Err(DeployError::io(&path, e)),
    };
    Hooks::parse(HOOKS_FILE, &text).map_err(DeployError::InvalidHooks)
}

/// `GET url` every 500 ms until it answers `expect` or `within` has passed.
fn http_check(step: Step, url: &str, expect: u16, within: Duration) -> (HookRun, String) {
    let started = Instant::now();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5).min(within)))
        .build()
        .into();
    let mut attempts = 0u32;
    let (ok, last) = loop {
        attempts += 1;
        let last = match agent.get(url).call() {
            Ok(response) if response.status().as_u16() == expect => break (true, format!("answered {expect}")),
            Ok(response) => format!("answered {}", response.status()),
            Err(e) => e.to_string(),
        };
        let elapsed = started.elapsed();
        if elapsed >= within {
            break (false, last);
        }
        std::thread::sleep(Duration::from_millis(500).min(within - elapsed));
    };
    let output = format!("GET {url}: {last} (attempt {attempts}, expecting {expect})");
    let failure = format!("{url} did not answer {expect} within {}: {last}", human(within));
    let run = HookRun { step, exit_code: None, duration_ms: millis(started.elapsed()), output, timed_out: !ok, ok };
    (run, failure)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) { format!("{}m", s / 60) } else { format!("{}s", d.as_secs_f64()) }
}

/// Flushes the filesystem holding `path` (`syncfs`).
fn sync_filesystem(path: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_be_plain_names() {
        for good in ["v1", "1.2.3", "v2_rc-1"] {
            assert!(check_version(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "v 1"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }
}
