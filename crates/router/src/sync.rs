//! Server mode: the control plane's routing table for one service in one region, kept
//! in a local routes file that the router reloads as in standalone mode. The file is
//! replaced atomically whenever the table changes (a long-poll), so a router that loses
//! the server keeps routing with the last table it had.

use anyhow::{Context, Result};
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
}

impl Source {
    fn url(&self, after: Option<i64>) -> String {
        let base = format!(
            "{}/v1/services/{}/routes/{}/{}",
            self.server.trim_end_matches('/'),
            self.service,
            self.environment,
            self.region
        );
        let router = self.advertise.as_deref().map(|a| format!("router={a}")).unwrap_or_default();
        match after {
            Some(g) => format!("{base}?after={g}&wait=30&{router}"),
            None if router.is_empty() => base,
            None => format!("{base}?{router}"),
        }
    }
}

/// The routes file for a table as the API gives it (see `GET /v1/services/…/routes/…`).
pub fn routes_yaml(table: &serde_json::Value) -> Result<String> {
    let salt = table["salt"].as_str().context("the table has no salt")?;
    let share = table["canary_share"].as_u64().context("the table has no canary_share")?;
    let mut out = format!("salt: {salt:?}\ncanary_share: {share}\nhosts:\n");
    if table["hosts"].as_array().is_none_or(|h| h.is_empty()) {
        out = format!("salt: {salt:?}\ncanary_share: {share}\nhosts: []\n");
    }
    for h in table["hosts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  - {{ address: {:?}, version: {:?}, track: {}, draining: {} }}\n",
            h["address"].as_str().unwrap_or_default(),
            h["version"].as_str().unwrap_or_default(),
            if h["track"] == "canary" { "canary" } else { "stable" },
            h["draining"].as_bool().unwrap_or(false)
        ));
    }
    Ok(out)
}

fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn fetch(agent: &ureq::Agent, url: &str, token: Option<&str>) -> Result<serde_json::Value> {
    let mut request = agent.get(url);
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut response = request.call().with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let body: serde_json::Value = response.body_mut().read_json().context("unreadable routing table")?;
    if status != 200 {
        anyhow::bail!("{url} answered {status}: {}", body["message"].as_str().unwrap_or_default());
    }
    Ok(body)
}

/// Fetches the table once (so the router starts with it) and keeps the file current on
/// a thread of its own. Returns the file's path.
pub fn start(source: Source, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("routes.yaml");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(45)))
        .build()
        .into();
    let first = fetch(&agent, &source.url(None), source.token.as_deref())?;
    write_atomically(&path, &routes_yaml(&first)?)?;
    let file = path.clone();
    std::thread::spawn(move || {
        let mut generation = first["generation"].as_i64();
        let mut last = routes_yaml(&first).unwrap_or_default();
        loop {
            match fetch(&agent, &source.url(generation), source.token.as_deref())
                .and_then(|t| Ok((routes_yaml(&t)?, t["generation"].as_i64())))
            {
                Ok((text, g)) => {
                    generation = g;
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
