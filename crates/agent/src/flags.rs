//! The host's flag set: the agent fetches the flag-set version the server asks for,
//! keeps it on disk beside the last ones (a rollback needs no download), and serves it to
//! the host's own processes over OFREP on localhost, as the relay serves a region.
//!
//! A host's code and flags move through one-box and zones together: the host "runs" a
//! flag-set version as it runs a code version, and reports it done only once it serves it.
//!
//! On disk, under `DIR/flags/`: `VERSION.json` per version kept (the document as
//! released), `current` (the version served and the command that asked for it) and
//! `address` (the OFREP base URL, `http://127.0.0.1:PORT`, for the host's processes:
//! hooks find the directory in `ROLLWAVE_FLAGS_DIR`). The
//! listener is opened when the first flag set arrives (or at start, if one is on disk),
//! so a host without flag releases opens no port.

use rollwave_flags::FlagSet;
use rollwave_relay::{Counters, Served, Set};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::watch;

/// How many flag-set versions stay on disk.
const KEPT: usize = 8;

/// Where the host's OFREP endpoint listens by default (flagd's OFREP port).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8016";

pub struct HostFlags {
    dir: PathBuf,
    listen: SocketAddr,
    /// The version served and the command that asked for it.
    current: Option<(String, u64)>,
    /// The flag command last reported to the server.
    reported: Option<u64>,
    serving: Option<Serving>,
}

struct Serving {
    sender: watch::Sender<Arc<Served>>,
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl HostFlags {
    /// Reads what `workdir` served before a restart, and serves it again at once. What
    /// cannot be read or served is said, and the host starts with no flag set (the server
    /// shows its flag command again until it is reported).
    pub fn open(workdir: &Path, listen: SocketAddr) -> HostFlags {
        let dir = workdir.join("flags");
        let mut flags = HostFlags { dir, listen, current: None, reported: None, serving: None };
        if let Some((version, command)) = flags.read_current() {
            match flags.read_version(&version).and_then(|doc| flags.serve(&version, &doc)) {
                Ok(()) => flags.current = Some((version, command)),
                Err(e) => crate::agent::log(&format!("cannot serve the flag set {version} again: {e}")),
            }
        }
        flags
    }

    /// Where the OFREP endpoint answers, once it does.
    pub fn address(&self) -> Option<SocketAddr> {
        self.serving.as_ref().map(|s| s.address)
    }

    pub fn current(&self) -> Option<&str> {
        self.current.as_ref().map(|(v, _)| v.as_str())
    }

    /// Whether `command` still has to be carried out or reported.
    pub fn needs(&self, command: u64) -> bool {
        command != 0 && self.reported != Some(command)
    }

    /// Whether `version` is on disk, so that serving it needs no download.
    pub fn has(&self, version: &str) -> bool {
        check_version(version).is_ok() && self.dir.join(format!("{version}.json")).is_file()
    }

    /// Serves `version` for `command`: `fetched` if given, else the copy on disk. The
    /// error says why the host cannot serve it (it then keeps serving what it served).
    pub fn deploy(&mut self, command: u64, version: &str, fetched: Option<serde_json::Value>) -> Result<(), String> {
        check_version(version)?;
        if self.current.as_ref().is_some_and(|(v, _)| v == version) && self.serving.is_some() {
            self.set_current(version, command)?;
            return Ok(());
        }
        let doc = match fetched {
            Some(doc) => {
                self.write_version(version, &doc)?;
                doc
            }
            None => self.read_version(version)?,
        };
        self.serve(version, &doc)?;
        self.set_current(version, command)?;
        self.prune(version);
        Ok(())
    }

    pub fn mark_reported(&mut self, command: u64) {
        self.reported = Some(command);
    }

    fn serve(&mut self, version: &str, doc: &serde_json::Value) -> Result<(), String> {
        let flags = FlagSet::from_value(version, doc).map_err(|errors| {
            let first = errors.first().map(ToString::to_string).unwrap_or_default();
            format!("flag set {version} does not compile ({} error(s)): {first}", errors.len())
        })?;
        let served = Arc::new(Served::single(Arc::new(Set::new(version, flags))));
        match &self.serving {
            Some(s) => {
                s.sender.send_replace(served);
            }
            None => {
                let serving = start(self.listen, served)?;
                let url = format!("http://{}\n", serving.address);
                self.serving = Some(serving);
                std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
                write_atomically(&self.dir.join("address"), url.as_bytes())?;
            }
        }
        Ok(())
    }

    fn read_current(&self) -> Option<(String, u64)> {
        let text = std::fs::read_to_string(self.dir.join("current")).ok()?;
        let (version, command) = text.trim().split_once(' ')?;
        check_version(version).ok()?;
        Some((version.to_owned(), command.parse().ok()?))
    }

    fn set_current(&mut self, version: &str, command: u64) -> Result<(), String> {
        write_atomically(&self.dir.join("current"), format!("{version} {command}\n").as_bytes())?;
        self.current = Some((version.to_owned(), command));
        Ok(())
    }

    fn read_version(&self, version: &str) -> Result<serde_json::Value, String> {
        let path = self.dir.join(format!("{version}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
    }

    fn write_version(&self, version: &str, doc: &serde_json::Value) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let text = serde_json::to_vec_pretty(doc).map_err(|e| e.to_string())?;
        write_atomically(&self.dir.join(format!("{version}.json")), &text)
    }

    /// Keeps the newest [`KEPT`] versions (by when they were written) and `keep`.
    fn prune(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut versions: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter(|e| e.path().file_stem().is_some_and(|s| s != keep))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        versions.sort();
        let excess = versions.len().saturating_sub(KEPT - 1);
        for (_, path) in versions.into_iter().take(excess) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A version names a file here: the server's grammar, checked again at this edge.
fn check_version(version: &str) -> Result<(), String> {
    let ok = version.len() <= 128
        && version.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(format!("{version:?} is not a version name")) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Opens the OFREP listener and serves on a thread of its own.
fn start(listen: SocketAddr, first: Arc<Served>) -> Result<Serving, String> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("cannot serve OFREP on {listen}: {e}"))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (sender, receiver) = watch::channel(first);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ofrep".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    crate::agent::log(&format!("cannot start the OFREP server: {e}"));
                    return;
                }
            };
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        crate::agent::log(&format!("cannot serve OFREP on {address}: {e}"));
                        return;
                    }
                };
                rollwave_relay::serve(listener, receiver, Counters::new(), async {
                    let _ = stopped.await;
                })
                .await;
            });
        })
        .map_err(|e| format!("cannot start the OFREP server: {e}"))?;
    crate::agent::log(&format!("serving the host's flags over OFREP at http://{address}"));
    Ok(Serving { sender, address, stop: Some(stop), thread: Some(thread) })
}
