//! Server mode: the control plane's routing table for one service in one region, kept
//! in a local routes file that the router reloads as in standalone mode. The file is
//! replaced atomically whenever the table changes (a long-poll), so a router that loses
//! the server keeps routing with the last table it had.

use anyhow::{Context, Result};
use rollwave_api::{Client, ClientError, Routes};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Source {
    pub server: String,
    pub service: String,
    pub environment: String,
    pub region: String,
    /// Where this router takes traffic, told to the server so its synthetic monitors
    /// probe the region through it.
    pub advertise: Option<String>,
    /// A router token of this service, environment and region: sent on every poll (the
    /// server takes the address only from its region's router).
    pub token: Option<String>,
    /// Whom `https` to the server trusts.
    pub roots: rollwave_api::tls::Roots,
}

impl Source {
    fn fetch(&self, client: &Client, after: Option<i64>) -> Result<Routes> {
        let after = after.map(|generation| (generation, LONG_POLL_S));
        let table = format!("the routing table of {}/{}/{}", self.service, self.environment, self.region);
        client.routes(&self.service, &self.environment, &self.region, after, self.advertise.as_deref()).map_err(|e| {
            match e {
                ClientError::Transport { base, reason } => anyhow::anyhow!("cannot reach {base} for {table}: {reason}"),
                ClientError::Api { status, message, .. } => {
                    anyhow::anyhow!("{} answered {status} for {table}: {message}", client.base())
                }
            }
        })
    }
}

/// How long one poll waits for a newer table.
const LONG_POLL_S: u64 = 30;

/// The routes file for a table as the API gives it (see `GET /v1/services/…/routes/…`).
pub fn routes_yaml(table: &Routes) -> String {
    let mut out = format!("salt: {:?}\ncanary_share: {}\n", table.salt, table.canary_share);
    if table.hosts.is_empty() {
        out.push_str("hosts: []\n");
        return out;
    }
    out.push_str("hosts:\n");
    for h in &table.hosts {
        out.push_str(&format!(
            "  - {{ address: {:?}, version: {:?}, track: {}, draining: {} }}\n",
            h.address, h.version, h.track, h.draining
        ));
    }
    out
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

/// Fetches the table once (so the router starts with it) and keeps the file current on
/// a thread of its own. Returns the file's path.
pub fn start(source: Source, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("routes.yaml");
    let client =
        Client::with_timeout(&source.server, source.token.clone(), Duration::from_secs(45)).trusting(&source.roots);
    let first = source.fetch(&client, None)?;
    let mut last = routes_yaml(&first);
    write_atomically(&path, &last)?;
    let file = path.clone();
    std::thread::spawn(move || {
        let mut generation = first.generation;
        loop {
            match source.fetch(&client, Some(generation)) {
                Ok(table) => {
                    generation = table.generation;
                    let text = routes_yaml(&table);
                    if text != last {
                        if let Err(e) = write_atomically(&file, &text) {
                            tracing::warn!("{e:#}");
                        }
                        last = text;
                    }
                }
                Err(e) => {
                    tracing::warn!("keeping the last routing table: {e:#}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    });
    Ok(path)
}
