//! Command-line parsing and the subcommands.

mod plan;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rollwave_core::plan::Plan;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "rollwave", version, about = "Safe, hands-off continuous deployment in waves")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a pipeline manifest; print a one-line summary, or every error as FILE:LINE:COL.
    Validate { file: PathBuf },
    /// Show the expanded rollout plan and the shortest lead time of a release.
    Plan {
        file: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the manifest's JSON Schema.
    Schema,
    /// Run the engine against a simulated fleet and traffic in virtual time.
    Simulate {
        file: PathBuf,
        #[arg(long)]
        scenario: PathBuf,
        /// Seed for the simulated world's randomness.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object instead of a timeline.
        #[arg(long)]
        json: bool,
        /// Stop after this much virtual time (e.g. 14d).
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        until: std::time::Duration,
    },
    /// Run the L7 router: sticky canary split, track propagation, per-backend metrics.
    Router(rollwave_router::RouterArgs),
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    rollwave_manifest::yaml::parse_duration(s)
}

pub fn run() -> Result<ExitCode> {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Router(args) => rollwave_router::main(args)?,
        Command::Validate { file } => {
            let Some(manifest) = load_manifest(&file)? else { return Ok(ExitCode::from(1)) };
            let plan = Plan::new(manifest);
            let m = &plan.manifest;
            let hosts: usize = plan.envs.iter().map(|e| e.hosts.len()).sum();
            let waves: usize = m.stages.iter().map(|s| s.waves.len()).sum();
            writeln!(
                out,
                "{}: ok: service {}, {} stage(s), {} wave(s), {} environment(s), {} host(s), {} alarm(s); shortest lead time {}",
                file.display(),
                m.service,
                m.stages.len(),
                waves,
                m.environments.len(),
                hosts,
                m.alarms.len(),
                rollwave_core::format_duration(plan.lead_time())
            )?;
        }
        Command::Plan { file, json } => {
            let Some(manifest) = load_manifest(&file)? else { return Ok(ExitCode::from(1)) };
            let plan = Plan::new(manifest);
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&plan::to_json(&plan))?)?;
            } else {
                write!(out, "{}", plan::to_text(&plan))?;
            }
        }
        Command::Schema => {
            writeln!(out, "{}", serde_json::to_string_pretty(&rollwave_manifest::manifest_schema())?)?;
        }
        Command::Simulate { file, scenario, seed, json, until } => {
            let Some(manifest) = load_manifest(&file)? else { return Ok(ExitCode::from(1)) };
            let text = read(&scenario)?;
            let scenario = match rollwave_sim::parse_scenario(&scenario.display().to_string(), &text, &manifest) {
                Ok(s) => s,
                Err(errors) => {
                    eprint!("{errors}");
                    return Ok(ExitCode::from(1));
                }
            };
            let plan = Arc::new(Plan::new(manifest));
            let report = rollwave_sim::simulate(plan, &scenario, rollwave_sim::Options { seed, until })?;
            if json {
                writeln!(out, "{}", report.to_json())?;
            } else {
                write!(out, "{}", report.to_text())?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads and parses a manifest; on errors prints them all and returns `None`.
fn load_manifest(path: &Path) -> Result<Option<rollwave_core::manifest::Manifest>> {
    let text = read(path)?;
    match rollwave_manifest::parse_manifest(&path.display().to_string(), &text) {
        Ok(m) => Ok(Some(m)),
        Err(errors) => {
            eprint!("{errors}");
            Ok(None)
        }
    }
}
