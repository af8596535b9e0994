//! Standalone mode: one flag set read from a file, reloaded when its contents change.
//! A file that does not parse is reported, every error located (`FILE:LINE:COL:
//! message`), and the set read last stays served.

use crate::served::{Served, Set, digest_hex};
use rollwave_flags::{Diagnostic, FlagSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why a flags file cannot be served.
#[derive(Debug)]
pub enum LoadError {
    Unreadable(String),
    Invalid(Vec<Diagnostic>),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Unreadable(why) => f.write_str(why),
            LoadError::Invalid(diagnostics) => {
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{d}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// The set in `text`, read from `path`; its version is a digest of the text.
pub fn parse(path: &Path, text: &str) -> Result<Arc<Set>, LoadError> {
    let flags = FlagSet::parse(&path.display().to_string(), text).map_err(LoadError::Invalid)?;
    Ok(Arc::new(Set::new(digest_hex(text.as_bytes(), 12), flags)))
}

/// Reads and parses the file.
pub fn load(path: &Path) -> Result<(String, Arc<Set>), LoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::Unreadable(format!("cannot read the flags file {}: {e}", path.display())))?;
    let set = parse(path, &text)?;
    Ok((text, set))
}

/// What one look at the file did.
#[derive(Debug)]
pub enum Reload {
    /// The same contents as last time.
    Unchanged,
    /// New contents, served.
    Served(Arc<Set>),
    /// New contents that do not parse: the last set stays.
    Kept(LoadError),
    /// The file cannot be read: the last set stays.
    Unreadable(String),
}

/// The file's contents as last seen, and what to do when they change.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    last: String,
    unreadable: bool,
}

impl FileWatch {
    /// Watching `path`, whose contents `served` already serves.
    pub fn new(path: PathBuf, contents: String) -> FileWatch {
        FileWatch { path, last: contents, unreadable: false }
    }

    /// Reads the file once; serves its set if its contents changed and parse, and logs
    /// why not otherwise (every error of a bad file, once per version of the file).
    pub fn look(&mut self, served: &watch::Sender<Arc<Served>>) -> Reload {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                let why = format!("cannot read {}: {e}", self.path.display());
                if !self.unreadable {
                    tracing::warn!("keeping the last flag set: {why}");
                }
                self.unreadable = true;
                return Reload::Unreadable(why);
            }
        };
        self.unreadable = false;
        if text == self.last {
            return Reload::Unchanged;
        }
        let outcome = match parse(&self.path, &text) {
            Ok(set) => {
                tracing::info!(flags = set.flags().len(), version = set.version(), "flags file reloaded");
                let _ = served.send(Arc::new(Served::single(set.clone())));
                Reload::Served(set)
            }
            Err(e) => {
                tracing::warn!("keeping the last flag set: {} does not parse", self.path.display());
                for line in e.to_string().lines() {
                    tracing::warn!("{line}");
                }
                Reload::Kept(e)
            }
        };
        self.last = text;
        outcome
    }
}

/// Looks at the file every `every` ([`FileWatch::look`]) until every receiver of
/// `served` is gone.
pub async fn watch(mut file: FileWatch, every: Duration, served: watch::Sender<Arc<Served>>) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    while !served.is_closed() {
        ticker.tick().await;
        // A flags file is small: reading it blocks this task for microseconds.
        file.look(&served);
    }
}
