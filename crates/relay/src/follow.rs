//! Server mode: the region's flag sets from the control plane, followed by long-poll as
//! the router follows its table, and kept on disk.
//!
//! Every answer whose sets parse is written to `region-flags.json` in the state
//! directory (a new file renamed over the old, so a crash leaves one or the other) and
//! then served. On start the file of an earlier run is served at once, before the
//! control plane is asked; while the control plane cannot be reached, or answers sets
//! that do not parse, the last good sets stay served.

use crate::counters::FollowerStatus;
use crate::served::{Canary, Served, Set};
use anyhow::{Context as _, Result};
use rollwave_api::{Client, ClientError, FlagSetDocument, RegionFlags};
use rollwave_core::share::BasisPoints;
use rollwave_flags::FlagSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// How long one poll waits for a newer answer.
const LONG_POLL_S: u64 = 30;

/// Waits after failed polls: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MOST: Duration = Duration::from_secs(5);

/// The file, in the state directory, holding the last good answer.
pub const STATE_FILE: &str = "region-flags.json";

/// Whose flag sets to follow, and where.
#[derive(Clone, Debug)]
pub struct Source {
    pub server: String,
    pub service: String,
    pub environment: String,
    pub region: String,
    /// A router token of this service, environment and region.
    pub token: Option<String>,
    /// Whom `https` to the server trusts.
    pub roots: rollwave_api::tls::Roots,
}

impl Source {
    fn what(&self) -> String {
        format!("the flag sets of {}/{}/{}", self.service, self.environment, self.region)
    }

    fn fetch(&self, client: &Client, after: Option<i64>) -> Result<RegionFlags> {
        let after = after.map(|generation| (generation, LONG_POLL_S));
        client.region_flags(&self.service, &self.environment, &self.region, after).map_err(|e| match e {
            ClientError::Transport { base, reason } => {
                anyhow::anyhow!("cannot reach {base} for {}: {reason}", self.what())
            }
            ClientError::Api { status, message, .. } => {
                anyhow::anyhow!("{} answered {status} for {}: {message}", client.base(), self.what())
            }
        })
    }
}

/// The follower's thread; dropping this stops it after the poll in progress.
#[derive(Debug)]
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Not joined: a long-poll may hold it for half a minute.
        drop(self.thread.take());
    }
}

/// Serves the state directory's sets if an earlier run left some, then follows the
/// control plane on a thread of its own, sending every new good answer into `served`.
pub fn start(
    source: Source,
    state_dir: &Path,
    served: watch::Sender<Arc<Served>>,
    status: Arc<FollowerStatus>,
) -> Result<Follower> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    let path = state_dir.join(STATE_FILE);
    let mut sets = Sets::default();
    match load_state(&path) {
        Ok(Some(flags)) => match sets.build(&source, &flags) {
            Ok(from_disk) => {
                tracing::info!(file = %path.display(), generation = flags.generation, "serving the flag sets of the last run until the control plane answers");
                let _ = served.send(Arc::new(from_disk));
                status.loaded_from_disk(flags.generation);
            }
            Err(e) => tracing::warn!("ignoring {}: {e:#}", path.display()),
        },
        Ok(None) => tracing::info!("no flag sets on disk yet; serving none until the control plane answers"),
        Err(e) => tracing::warn!("ignoring the state file: {e:#}"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("relay-follow".into())
            .spawn(move || follow(&source, &path, sets, &served, &status, &stop))
            .context("cannot start the follower thread")?
    };
    Ok(Follower { stop, thread: Some(thread) })
}

fn follow(
    source: &Source,
    path: &Path,
    mut sets: Sets,
    served: &watch::Sender<Arc<Served>>,
    status: &FollowerStatus,
    stop: &AtomicBool,
) {
    let client = Client::with_timeout(&source.server, source.token.clone(), Duration::from_secs(LONG_POLL_S + 15))
        .trusting(&source.roots);
    let mut generation = None;
    let mut retry = RETRY_FIRST;
    let mut failures = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let flags = match source.fetch(&client, generation) {
            Ok(flags) => flags,
            Err(e) => {
                status.failed();
                failures += 1;
                // The first failure of a run of them, then one in a hundred.
                if failures % 100 == 1 {
                    tracing::warn!("keeping the last flag sets: {e:#}");
                }
                std::thread::sleep(retry);
                retry = (retry * 2).min(RETRY_MOST);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(failures, "the control plane answers again");
        }
        failures = 0;
        retry = RETRY_FIRST;
        generation = Some(flags.generation);
        status.synced(flags.generation);
        if sets.is_current(&flags) {
            continue;
        }
        match sets.build(source, &flags) {
            Ok(next) => {
                if let Err(e) = write_state(path, &flags) {
                    tracing::warn!("{e:#}");
                }
                tracing::info!(
                    generation = flags.generation,
                    stable = flags.stable.as_ref().map_or("none", |d| d.version.as_str()),
                    canary = flags.canary.as_ref().map_or("none", |d| d.version.as_str()),
                    canary_share = flags.canary_share,
                    "serving new flag sets"
                );
                let _ = served.send(Arc::new(next));
            }
            Err(e) => tracing::warn!("keeping the last flag sets: {e:#}"),
        }
    }
}

/// The documents last served and their parsed sets, so an unchanged set is not parsed
/// again.
#[derive(Default)]
struct Sets {
    last: Option<RegionFlags>,
    parsed: Vec<(FlagSetDocument, Arc<Set>)>,
}

impl Sets {
    /// Whether `flags` says what was served last (whatever its generation).
    fn is_current(&self, flags: &RegionFlags) -> bool {
        self.last.as_ref().is_some_and(|last| RegionFlags { generation: flags.generation, ..last.clone() } == *flags)
    }

    /// What to serve for `flags`, or why it cannot be served.
    fn build(&mut self, source: &Source, flags: &RegionFlags) -> Result<Served> {
        let mut parsed = Vec::new();
        let stable = match &flags.stable {
            Some(doc) => {
                let set = self.set(source, "stable", doc)?;
                parsed.push((doc.clone(), set.clone()));
                set
            }
            None => Arc::new(Set::empty("none")),
        };
        let canary = match &flags.canary {
            Some(doc) => {
                let share = BasisPoints::new(flags.canary_share).with_context(|| {
                    format!("{}: a canary share of {} basis points is over 10000", source.what(), flags.canary_share)
                })?;
                let set = self.set(source, "canary", doc)?;
                parsed.push((doc.clone(), set.clone()));
                Some(Canary { set, salt: flags.salt.clone(), share })
            }
            None => None,
        };
        self.parsed = parsed;
        self.last = Some(flags.clone());
        Ok(Served::split(stable, canary))
    }

    fn set(&self, source: &Source, track: &str, doc: &FlagSetDocument) -> Result<Arc<Set>> {
        if let Some((_, set)) = self.parsed.iter().find(|(d, _)| d == doc) {
            return Ok(set.clone());
        }
        let origin = format!("{} {track} {}", source.what(), doc.version);
        let flags = FlagSet::from_value(&origin, &doc.flags).map_err(|diagnostics| {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("the {track} flag set {} does not parse:\n{}", doc.version, lines.join("\n"))
        })?;
        Ok(Arc::new(Set::new(doc.version.clone(), flags)))
    }
}

fn load_state(path: &Path) -> Result<Option<RegionFlags>> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&text).with_context(|| format!("{} is not a region's flag sets", path.display())).map(Some)
}

/// Replaces `path` with `flags` so that a crash leaves the old file or the new one.
fn write_state(path: &Path, flags: &RegionFlags) -> Result<()> {
    let tmp: PathBuf = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(flags).context("cannot encode the flag sets")?;
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().with_context(|| format!("cannot write the flag sets to {}", path.display()))
}
