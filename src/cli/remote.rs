//! The client commands: they talk to a running `rollwave server` over its API.

use anyhow::Result;
use clap::{Args, ValueEnum};
use rollwave_api::client::{Client, ClientError};
use rollwave_api::*;
use std::io::Write;
use std::process::ExitCode;

/// Where the server is and who is asking.
#[derive(Args, Debug, Clone)]
pub struct Remote {
    /// The server's base URL.
    #[arg(long, env = "ROLLWAVE_SERVER", default_value = "http://127.0.0.1:7070", global = true)]
    pub server: String,
    /// A bearer token (needed for changes).
    #[arg(long, env = "ROLLWAVE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// How to print what the server answers: a table for people, JSON or YAML for scripts.
    #[arg(long, value_enum, env = "ROLLWAVE_OUTPUT", default_value_t = Format::Table, global = true)]
    pub output: Format,
    /// A PEM file of the certificate authorities `https` to the server trusts, instead of
    /// the WebPKI roots built in (a private CA in front of the server).
    #[arg(long, env = "ROLLWAVE_CA_BUNDLE", value_name = "FILE", value_parser = rollwave_api::tls::parse_ca_bundle, global = true)]
    pub ca_bundle: Option<rollwave_api::tls::Roots>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Lines and columns (`text` is the same).
    #[value(alias = "text")]
    Table,
    /// The API's JSON, pretty-printed (a line per event with `events`).
    Json,
    /// The same data as YAML (a document per event with `events`).
    Yaml,
}

impl Remote {
    pub fn client(&self) -> Client {
        let client = Client::new(&self.server, self.token.clone());
        match &self.ca_bundle {
            Some(roots) => client.trusting(roots),
            None => client,
        }
    }
}

/// Exit codes of client commands: 1 the server refused (a 4xx answer), 3 the server
/// could not be reached or failed (5xx).
pub fn exit_for(e: &ClientError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "rollwave: {e}");
    if let ClientError::Api { details: serde_json::Value::Array(items), .. } = e {
        for d in items {
            if let (Some(l), Some(c), Some(m)) = (d["line"].as_u64(), d["col"].as_u64(), d["message"].as_str()) {
                let _ = writeln!(std::io::stderr(), "  {l}:{c}: {m}");
            }
        }
    }
    match e.status() {
        Some(s) if s < 500 => ExitCode::from(1),
        _ => ExitCode::from(3),
    }
}

/// Prints a value as JSON or YAML; a table is each command's own.
pub fn print(format: Format, value: &impl serde::Serialize) -> Result<()> {
    let text = match format {
        Format::Json | Format::Table => serde_json::to_string_pretty(value)?,
        Format::Yaml => to_yaml(&serde_json::to_value(value)?)?,
    };
    writeln!(std::io::stdout(), "{text}")?;
    Ok(())
}

/// A value as one YAML document (starting `---`), written by yaml-rust2's emitter.
pub fn to_yaml(value: &serde_json::Value) -> Result<String> {
    fn convert(v: &serde_json::Value) -> yaml_rust2::Yaml {
        use yaml_rust2::Yaml;
        match v {
            serde_json::Value::Null => Yaml::Null,
            serde_json::Value::Bool(b) => Yaml::Boolean(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Yaml::Integer(i),
                None => Yaml::Real(n.to_string()),
            },
            serde_json::Value::String(s) => Yaml::String(s.clone()),
            serde_json::Value::Array(items) => Yaml::Array(items.iter().map(convert).collect()),
            serde_json::Value::Object(fields) => {
                Yaml::Hash(fields.iter().map(|(k, v)| (Yaml::String(k.clone()), convert(v))).collect())
            }
        }
    }
    let mut out = String::new();
    yaml_rust2::YamlEmitter::new(&mut out).dump(&convert(value))?;
    Ok(out)
}

/// `service@version`, or a version with `--service`, or a version of the only service.
pub fn resolve_release(
    client: &Client,
    release: &str,
    service: Option<String>,
) -> Result<(String, String), ClientError> {
    if let Some((s, v)) = release.split_once('@') {
        return Ok((s.to_owned(), v.to_owned()));
    }
    if let Some(s) = service {
        return Ok((s, release.to_owned()));
    }
    let services = client.services()?;
    match services.as_slice() {
        [only] => Ok((only.name.clone(), release.to_owned())),
        _ => Err(ClientError::Api {
            status: 400,
            code: "ambiguous".into(),
            message: format!("name the service: SERVICE@{release} or --service (the server has {})", services.len()),
            details: serde_json::Value::Null,
        }),
    }
}

pub fn print_release(r: &ReleaseView) -> String {
    let mut line = format!("{} {}", r.version, r.outcome);
    if let Some(at) = &r.at {
        line.push_str(&format!(" {} {at}", if r.waiting == Some(true) { "waiting at" } else { "in" }));
    }
    if let Some(reason) = &r.reason {
        line.push_str(&format!(" ({reason})"));
    }
    line
}

pub fn print_status(s: &ServiceStatus) -> String {
    let mut out = format!("service {}\n", s.service);
    if !s.holds.is_empty() {
        out.push_str(&format!("ON HOLD: {}\n", s.holds.join(", ")));
    }
    out.push_str("\nWHERE        VERSIONS\n");
    for env in &s.environments {
        let versions: Vec<String> = env.versions.iter().map(|(v, n)| format!("{v} on {n}")).collect();
        out.push_str(&format!("{:<12} {}\n", env.environment, versions.join(", ")));
    }
    out.push_str("\nRELEASE      OUTCOME      WHERE                 WHY\n");
    for r in &s.releases {
        let at =
            r.at.clone().map(|a| if r.waiting == Some(true) { format!("waiting {a}") } else { a }).unwrap_or_default();
        out.push_str(&format!(
            "{:<12} {:<12} {:<21} {}\n",
            r.version,
            r.outcome,
            at,
            r.reason.clone().unwrap_or_default()
        ));
    }
    if !s.blocked.is_empty() {
        out.push_str("\nBLOCKED                              SINCE                 WHY\n");
        for b in &s.blocked {
            let what = format!("{} {}", b.release.clone().unwrap_or_default(), b.scope);
            out.push_str(&format!("{what:<36} {:<21} {}\n", b.since, b.reason));
        }
    }
    out
}

pub fn print_event(e: &EventView) -> String {
    let mut line = format!("{}  {:<20} {:<8} {}", e.t, e.kind, e.release.as_deref().unwrap_or("-"), e.scope);
    if let Some(r) = &e.reason {
        line.push_str(&format!("  ({r})"));
    }
    line
}
