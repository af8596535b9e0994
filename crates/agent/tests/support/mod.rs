//! Builders for real artifacts, installers and agents, shared by the tests; the server is
//! the server's own test kit's (`rollwave_server::testing`).

#![allow(dead_code)]

use rollwave_agent::{Agent, AgentConfig, Deployment, HostIdentity, Installer, InstallerConfig};
use rollwave_server::Driver;
pub use rollwave_server::testing::{ADMIN, TestServer};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// An artifact on disk and its sha256.
#[derive(Clone, Debug)]
pub struct Built {
    pub path: PathBuf,
    pub sha256: String,
}

impl Built {
    pub fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// One entry of a hand-made archive.
pub enum Entry<'a> {
    File {
        name: &'a str,
        data: &'a [u8],
        mode: u32,
    },
    Symlink {
        name: &'a str,
        target: &'a str,
    },
    /// Written into the header as given, past the tar crate's own checks.
    Raw {
        name: &'a [u8],
        kind: tar::EntryType,
        link: &'a [u8],
        data: &'a [u8],
    },
}

pub fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// Writes a `.tar.gz` with these entries.
pub fn tar_gz(path: &Path, entries: &[Entry<'_>]) -> Built {
    let file = std::fs::File::create(path).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        match entry {
            Entry::File { name, data, mode } => {
                header.set_size(data.len() as u64);
                header.set_mode(*mode);
                header.set_entry_type(tar::EntryType::Regular);
                builder.append_data(&mut header, name, *data).unwrap();
            }
            Entry::Symlink { name, target } => {
                header.set_size(0);
                header.set_mode(0o777);
                header.set_entry_type(tar::EntryType::Symlink);
                builder.append_link(&mut header, name, target).unwrap();
            }
            Entry::Raw { name, kind, link, data } => {
                let old = header.as_old_mut();
                old.name[..name.len()].copy_from_slice(name);
                old.linkname[..link.len()].copy_from_slice(link);
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                header.set_entry_type(*kind);
                header.set_cksum();
                builder.append(&header, *data).unwrap();
            }
        }
    }
    builder.into_inner().unwrap().finish().unwrap().flush().unwrap();
    Built { path: path.to_owned(), sha256: sha256_of(path) }
}

/// An artifact with a hooks file and executable scripts.
pub fn artifact(dir: &Path, name: &str, hooks_yaml: &str, scripts: &[(&str, &str)]) -> Built {
    let mut entries = vec![Entry::File { name: "rollwave-hooks.yaml", data: hooks_yaml.as_bytes(), mode: 0o644 }];
    for (name, text) in scripts {
        entries.push(Entry::File { name, data: text.as_bytes(), mode: 0o755 });
    }
    tar_gz(&dir.join(format!("{name}.tar.gz")), &entries)
}

pub fn host() -> HostIdentity {
    HostIdentity { id: "h-1".into(), region: "r1".into(), zone: "z1".into() }
}

pub fn installer(workdir: &Path) -> Installer {
    let mut config = InstallerConfig::new(workdir, host());
    config.output_grace = Duration::from_millis(300);
    Installer::open(config).unwrap()
}

pub fn deployment(command: u64, version: &str, artifact: &Built) -> Deployment {
    Deployment {
        command,
        version: version.into(),
        artifact: Some(artifact.url()),
        sha256: Some(artifact.sha256.clone()),
        signatures: None,
    }
}

/// Until `ok` holds; a failure after a minute, which only a broken build reaches.
pub fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    rollwave_testkit::wait_for(what, Duration::from_secs(60), ok);
}

/// Whether no process has this pid (a zombie, dead but not yet reaped, counts as gone).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

pub fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

/// A port nobody listens on at the moment.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn releases(workdir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workdir.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn current_link(workdir: &Path) -> Option<PathBuf> {
    std::fs::read_link(workdir.join("current")).ok()
}

/// Stands in for the rollwave binary in fleet tests: records its arguments and pid in its
/// work directory, starts a child, says hello, and (as host b-2) ignores SIGTERM.
pub fn fake_rollwave(dir: &Path) -> PathBuf {
    let binary = dir.join("fake-rollwave");
    std::fs::write(
        &binary,
        "#!/bin/sh\n\
         all=\"$*\"\n\
         while [ $# -gt 0 ]; do case \"$1\" in --workdir) dir=\"$2\";; --host-id) id=\"$2\";; esac; shift; done\n\
         mkdir -p \"$dir\"\n\
         [ \"$id\" = b-2 ] && trap '' TERM\n\
         sleep 1000 &\n\
         echo $! > \"$dir/child.pid\"\n\
         echo $$ > \"$dir/pid\"\n\
         echo \"$all token=$ROLLWAVE_TOKEN\" > \"$dir/args.tmp\" && mv \"$dir/args.tmp\" \"$dir/args\"\n\
         echo hello from $id\n\
         wait\n",
    )
    .unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    binary
}

/// A server in this process in virtual time, driving agents: the server's own kit.
/// Its clock moves only when a test advances it, so no host is lost unless a test says so.
pub fn server() -> TestServer {
    TestServer::builder().driver(Driver::Agent).start()
}

/// The configuration of an agent for host `host_id` in zone `zone` of region r1 of
/// `server`'s prod environment, with its admin token.
pub fn agent_config(server: &TestServer, host_id: &str, zone: &str, workdir: &Path) -> AgentConfig {
    let host = HostIdentity { id: host_id.into(), region: "r1".into(), zone: zone.into() };
    let mut config = AgentConfig::new(&server.base, ADMIN, "prod", host, workdir);
    config.poll_wait = Duration::from_secs(1);
    config.max_backoff = Duration::from_secs(1);
    config
}

/// An agent loop on a thread of its own; stopped and joined on drop.
pub struct RunningAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningAgent {
    pub fn start(config: AgentConfig) -> Self {
        let mut agent = Agent::new(config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || agent.run(&flag));
        RunningAgent { stop, thread: Some(thread) }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
