//! The logs of the commands that run until stopped (server, agent, router, fleet,
//! sample app): their tracing events, one line each on stderr.

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: time, level, where, message, then the fields.
    #[default]
    Text,
    /// One JSON object per line, for log shippers: `timestamp`, `level`, `target`,
    /// `message` and the event's fields, at the top level.
    Json,
}

/// What is logged when `RUST_LOG` is not set: rollwave's own events from `info` up
/// (its crates' targets all start with `rollwave`), the libraries' from `warn` up.
pub const DEFAULT_FILTER: &str = "warn,rollwave=info";

/// Installs the subscriber for the whole process. `RUST_LOG` (tracing's filter
/// directives, e.g. `warn` or `rollwave_server=debug,info`) replaces [`DEFAULT_FILTER`];
/// a `RUST_LOG` that does not parse is an error rather than a silently different filter.
pub fn install(format: LogFormat) -> anyhow::Result<()> {
    let directives = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => value,
        _ => DEFAULT_FILTER.to_owned(),
    };
    let filter = EnvFilter::builder()
        .parse(&directives)
        .with_context(|| format!("RUST_LOG={directives:?} is not a log filter (e.g. info, or warn,rollwave=debug)"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
