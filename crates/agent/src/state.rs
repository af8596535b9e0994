//! What the agent knows about its host, kept in `DIR/state.json` and rewritten
//! atomically (temporary file, fsync, rename, fsync of the directory) at every step of
//! a deployment, so that after a restart or a `kill -9` it can tell the truth.

use crate::hooks::Step;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The file name, in the agent's work directory.
pub const STATE_FILE: &str = "state.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The version `DIR/current` points to. The link is the truth; this is read from it
    /// whenever the agent starts.
    #[serde(default)]
    pub current: Option<String>,
    /// The release whose `start` hook ran last and which no `stop` hook has stopped
    /// since: its processes may be running. Usually `current`, but not after a deployment
    /// failed after its `start`.
    #[serde(default)]
    pub active: Option<String>,
    /// The releases on disk, least recently deployed first.
    #[serde(default)]
    pub releases: Vec<ReleaseRecord>,
    /// The last command handled, finished or interrupted.
    #[serde(default)]
    pub last_command: u64,
    /// Its outcome, until the server has acknowledged it.
    #[serde(default)]
    pub unreported: Option<Outcome>,
    /// The deployment under way. Found at start, it was interrupted.
    #[serde(default)]
    pub in_progress: Option<InProgress>,
    /// How many times the agent has started on this host (the first start counts 1).
    #[serde(default)]
    pub starts: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub version: String,
    /// As the server gave it when the release was installed.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// A deployment under way.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InProgress {
    pub command: u64,
    pub version: String,
    /// What `current` pointed to when it began.
    #[serde(default)]
    pub previous: Option<String>,
    pub doing: Doing,
    /// The hooks that have finished, in order.
    #[serde(default)]
    pub hooks: Vec<HookRun>,
}

/// The step a deployment is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Doing {
    Fetch,
    Unpack,
    Hook(Step),
    /// Pointing `current` at the new release.
    Switch,
}

impl Doing {
    /// For messages: "the start hook", "the download"…
    pub fn describe(self) -> String {
        match self {
            Doing::Fetch => "the download of the artifact".into(),
            Doing::Unpack => "the unpacking of the artifact".into(),
            Doing::Hook(step) => format!("the {step} hook"),
            Doing::Switch => "the switch of current".into(),
        }
    }
}

/// How a deployment ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub command: u64,
    pub version: String,
    pub ok: bool,
    #[serde(default)]
    pub reason: Option<String>,
    /// The hooks that ran, in order.
    #[serde(default)]
    pub hooks: Vec<HookRun>,
}

/// One hook's run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HookRun {
    pub step: Step,
    /// None when it was killed, never started, or was an http check.
    #[serde(default)]
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The last 64 KiB of its output (stdout and stderr together), or what an http
    /// check saw.
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub timed_out: bool,
    pub ok: bool,
}

impl State {
    /// Reads the state file; a missing one is a fresh host.
    pub fn load(path: &Path) -> std::io::Result<State> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} is unreadable ({e}); move it away to start this host afresh", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state file atomically: readers see the old state or the new one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_atomically(path, &bytes)
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over `path`
/// and syncs the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Makes a rename or a new entry in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
