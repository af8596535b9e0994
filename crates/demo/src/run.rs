//! `rollwave demo`: a real pipeline on this machine. v2 (good) goes through beta, gamma's
//! one-box and the production waves; v3 returns 10% errors and is caught at its first
//! one-box and rolled back with nobody touching anything; v4 rolls forward. Then two flag
//! releases take the same road: flags-1 (a new banner) completes; flags-2 switches the
//! apps onto a failing checkout path, which each app reads from its host's agent over
//! OFREP, and is caught at its first one-box and rolled back there. Users keep sending
//! sticky traffic all along, and what they saw is the blast radius.

use crate::progress::Progress;
use crate::traffic::Users;
use crate::world::{Version, World, WorldSpec, wait_until};
use anyhow::{Context, Result};
use clap::Args;
use rollwave_api::{CreateRelease, Outcome, ReleaseView};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The pipeline the demo ships through, with bakes scaled to seconds.
pub const MANIFEST: &str = include_str!("demo.yaml");

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Print the summary as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Leave everything running after the releases, for exploring, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Work in this directory (database, logs, hosts) and leave it behind; by default a
    /// temporary one, removed at the end.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Sticky users sending traffic through the routers.
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..=2000))]
    pub users: u64,
    /// Give up if the releases have not settled within this many seconds.
    #[arg(long, default_value_t = 420)]
    pub timeout_s: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReleaseSummary {
    pub version: String,
    /// `code` or `flags`.
    pub lane: rollwave_api::Lane,
    /// `completed`, `halted`, `rolled_back`, `superseded` or `in_progress`, as in `simulate`.
    pub outcome: Outcome,
    /// For a release that did not complete: what caught it (alarm, monitor or verdict).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub reached: Vec<String>,
    pub rolled_back_scopes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_time_s: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BlastRadius {
    /// The bad release.
    pub version: String,
    /// Users' requests it answered, and how many of those failed.
    pub bad_requests: u64,
    pub bad_errors: u64,
    pub total_requests: u64,
    pub fraction: f64,
    /// Hosts it was deployed to.
    pub hosts_exposed: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub releases: Vec<ReleaseSummary>,
    pub blast_radius: BlastRadius,
    pub duration_s: f64,
    pub dashboard: String,
    /// Users who saw answers from more than one version (they move stable → canary as
    /// the share grows, never back and forth, unless a rollback moves them back).
    pub users_switched: u64,
    pub hosts: usize,
    pub routers: usize,
}

/// v1 is what the fleet runs when the story starts.
const SERVICE_VERSIONS: [(&str, f64); 4] = [("v1", 0.0), ("v2", 0.0), ("v3", 0.10), ("v4", 0.0)];

fn versions() -> Vec<Version> {
    SERVICE_VERSIONS.iter().map(|&(name, error_rate)| Version { error_rate, ..Version::good(name) }).collect()
}

/// Set by Ctrl-C or SIGTERM.
fn watch_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            flag.store(true, Ordering::SeqCst);
        });
    });
    stop
}

struct Interrupted;

/// Runs the demo; the exit code is 0 when every release ended as the story says.
pub fn main(args: DemoArgs) -> Result<i32> {
    let started = Instant::now();
    let stop = watch_signals();
    let binary = std::env::current_exe().context("cannot find the rollwave executable")?;
    let (dir, temp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            (d.canonicalize()?, None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("rollwave-demo-").tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let spec = WorldSpec {
        manifest: MANIFEST.into(),
        versions: versions(),
        push_every: Duration::from_secs(1),
        host_timeout: Duration::from_secs(30),
        datapoint_bin: Duration::from_secs(1),
        starting_version: Some("v1".into()),
    };
    let progress = Progress::new(MANIFEST);
    progress.say(&format!("Starting a server, agents, routers and sample apps in {}", dir.display()));
    let mut world = World::start(&spec, &dir, &binary)?;
    progress.say(&format!(
        "{} hosts (one agent each) and {} routers are up. Dashboard: {}/",
        world.hosts.len(),
        world.routers.len(),
        world.base
    ));
    progress.say(&format!("Admin token for the dashboard and the CLI: {}", world.admin_token));

    // Gamma and two production regions carry users; beta and ap-south are quiet, and
    // complete their bakes on the synthetic monitors' data points alone.
    let url = |env: &str, region: &str| {
        world.routers.iter().find(|r| r.environment == env && r.region == region).map(|r| r.url.clone())
    };
    let weighted: Vec<String> = [("gamma", "us-west", 2), ("prod", "us-east", 2), ("prod", "eu-west", 2)]
        .iter()
        .flat_map(|&(e, r, w)| std::iter::repeat_n(url(e, r), w))
        .flatten()
        .collect();
    let users = Users::start(weighted, args.users as usize, 3.0);

    let outcome = script(&world, &progress, &stop, Duration::from_secs(args.timeout_s));
    let seen = users.seen();
    let releases = world.client().status(&world.service).map(|s| s.releases).unwrap_or_default();
    let client = world.client();
    let summary_of = |r: &ReleaseView| {
        let detail = client.release(&world.service, &r.version).ok();
        ReleaseSummary {
            version: r.version.clone(),
            lane: r.lane,
            outcome: r.outcome,
            reason: (r.outcome != rollwave_api::Outcome::Completed)
                .then(|| detail.as_ref().and_then(caught_by).or_else(|| r.reason.clone()))
                .flatten(),
            reached: r.reached.clone(),
            rolled_back_scopes: r.rolled_back_scopes.clone(),
            lead_time_s: r.lead_time_s,
        }
    };
    let mut summaries: Vec<ReleaseSummary> = releases.iter().map(summary_of).collect();
    summaries.sort_by(|a, b| a.version.cmp(&b.version));
    let bad = BAD_CODE;
    let hosts_exposed = client
        .release(&world.service, bad)
        .map(|d| {
            d.events
                .iter()
                .filter(|e| {
                    e.kind == rollwave_api::EventKind::Hook
                        && e.reason.as_deref().is_some_and(|r| r.starts_with("start: ok"))
                })
                .count() as u64
        })
        .unwrap_or(0);
    let bad_requests = seen.by_version.get(bad).copied().unwrap_or(0);
    let summary = Summary {
        releases: summaries,
        blast_radius: BlastRadius {
            version: bad.into(),
            bad_requests,
            bad_errors: seen.errors_by_version.get(bad).copied().unwrap_or(0),
            total_requests: seen.requests,
            fraction: if seen.requests == 0 { 0.0 } else { bad_requests as f64 / seen.requests as f64 },
            hosts_exposed,
        },
        duration_s: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        dashboard: format!("{}/", world.base),
        users_switched: seen.switched_users,
        hosts: world.hosts.len(),
        routers: world.routers.len(),
    };
    progress.finish();

    let ok = match outcome {
        Ok(()) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", render(&summary));
            }
            story_holds(&summary)
        }
        Err(Err(e)) => {
            eprintln!("rollwave demo: {e:#}");
            eprintln!("The logs are in {}", dir.join("logs").display());
            if args.dir.is_none() {
                // Keep the evidence.
                if let Some(t) = temp {
                    let kept = t.keep();
                    eprintln!("(kept {})", kept.display());
                }
            }
            drop(users);
            world.stop(Duration::from_secs(2));
            return Ok(1);
        }
        Err(Ok(Interrupted)) => {
            eprintln!("rollwave demo: interrupted; stopping every process");
            drop(users);
            let report = world.stop(Duration::from_secs(2));
            eprint!("{report}");
            return Ok(130);
        }
    };

    if args.keep && !stop.load(Ordering::SeqCst) {
        eprintln!(
            "Everything keeps running: dashboard {}/ (admin token {}). Ctrl-C stops it all.",
            world.base, world.admin_token
        );
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
            if let Err(e) = world.check_children() {
                eprintln!("rollwave demo: {e:#}");
                break;
            }
        }
    }
    drop(users);
    let report = world.stop(Duration::from_secs(2));
    eprint!("{report}");
    Ok(if ok { 0 } else { 1 })
}

/// Whether the run told the demo's story: v2, v4 and flags-1 completed, v3 and flags-2
/// were stopped.
fn story_holds(summary: &Summary) -> bool {
    let outcome = |v: &str| summary.releases.iter().find(|r| r.version == v).map(|r| r.outcome);
    ["v2", "v4", GOOD_FLAGS].iter().all(|v| outcome(v) == Some(Outcome::Completed))
        && [BAD_CODE, BAD_FLAGS].iter().all(|v| matches!(outcome(v), Some(Outcome::RolledBack | Outcome::Halted)))
}

const BAD_CODE: &str = "v3";
/// The flag releases: a harmless new flag, then one that turns on a failing code path.
const GOOD_FLAGS: &str = "flags-1";
const BAD_FLAGS: &str = "flags-2";

/// The demo's flag set, with the sample apps' `new-checkout` path on or off.
fn flag_set(new_checkout: bool) -> serde_json::Value {
    serde_json::json!({
        "flags": {
            "new-checkout": {
                "state": "ENABLED",
                "variants": { "on": true, "off": false },
                "defaultVariant": if new_checkout { "on" } else { "off" }
            },
            "banner": {
                "state": "ENABLED",
                "variants": { "blue": "blue", "green": "green" },
                "defaultVariant": "blue"
            }
        }
    })
}

/// What stopped a release: the alarm, monitor or verdict that started its first rollback.
pub fn caught_by(detail: &rollwave_api::ReleaseDetail) -> Option<String> {
    let first = detail.events.iter().find(|e| {
        e.kind == rollwave_api::EventKind::RollbackStarted || e.kind == rollwave_api::EventKind::ReleaseHalted
    })?;
    let reason = first.reason.clone().unwrap_or_default();
    Some(if first.scope.is_empty() { reason } else { format!("{reason} (in {})", first.scope) })
}

type Step = std::result::Result<(), std::result::Result<Interrupted, anyhow::Error>>;

/// The operator's side of the story, done by a script: create releases, and when one
/// halts, roll it back everywhere and ship the fix.
fn script(world: &World, progress: &Progress, stop: &AtomicBool, limit: Duration) -> Step {
    let deadline = Instant::now() + limit;
    let client = world.client();
    let service = world.service.as_str();
    let release = |v: &str| client.release(service, v).map(|d| d.release);
    let submit = |req: CreateRelease, what: &str| -> Step {
        let v = &req.version;
        client.create_release(service, &req).map_err(|e| Err(anyhow::anyhow!("cannot create {v}: {e}")))?;
        progress.say(&format!("Created {what} {v}"));
        Ok(())
    };
    let create = |v: &str| -> Step {
        let a = world.artifact(v).ok_or_else(|| Err(anyhow::anyhow!("no artifact for {v}")))?;
        let (artifact, sha256) = (Some(a.url.clone()), Some(a.sha256.clone()));
        submit(CreateRelease { version: v.into(), artifact, sha256, flags: None }, "release")
    };
    let create_flags = |v: &str, flags: serde_json::Value| -> Step {
        submit(CreateRelease { version: v.into(), artifact: None, sha256: None, flags: Some(flags) }, "flag release")
    };
    // Waits, following progress, until `done`; fails on the deadline or a dead child.
    let wait = |what: &str, done: &mut dyn FnMut() -> bool| -> Step {
        loop {
            if stop.load(Ordering::SeqCst) {
                return Err(Ok(Interrupted));
            }
            progress.update(world);
            if done() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Err(anyhow::anyhow!("timed out waiting for {what}")));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    // Stopped one way or another: the story goes on, and the summary tells.
    let stopped = |r: &ReleaseView| r.outcome != rollwave_api::Outcome::InProgress;
    // Waits for a bad release to be stopped; if it halted, rolls it back everywhere, as
    // its operator would.
    let stop_bad = |v: &str, then: &str| -> Step {
        wait(&format!("{v} to be stopped"), &mut || release(v).is_ok_and(|r| stopped(&r)))?;
        let bad = release(v).map_err(|e| Err(anyhow::anyhow!("{e}")))?;
        if bad.outcome == rollwave_api::Outcome::Halted {
            let why = bad.reason.as_deref().unwrap_or("no reason given");
            progress.say(&format!("{v} halted ({why}): rolling it back everywhere{then}"));
            client
                .action(service, v, rollwave_api::OperatorAction::Rollback, None)
                .map_err(|e| Err(anyhow::anyhow!("cannot roll back {v}: {e}")))?;
            wait(&format!("{v}'s rollback"), &mut || {
                release(v).is_ok_and(|r| r.outcome == rollwave_api::Outcome::RolledBack)
            })?;
        }
        Ok(())
    };

    create("v2")?;
    // v3 follows v2 one stage behind: two releases in flight, and gamma's one-box free for
    // v3 as soon as v2 has left gamma.
    wait("v2 to pass beta", &mut || release("v2").is_ok_and(|r| r.reached.iter().any(|s| s == "beta") || stopped(&r)))?;
    create(BAD_CODE)?;
    stop_bad(BAD_CODE, ", then shipping v4")?;
    create("v4")?;
    // Flags take the same road once v4 is past gamma, so that what trips an alarm there is
    // plainly the flag set; flags-2 follows flags-1 one stage behind, as v3 followed v2.
    wait("v4 to pass gamma", &mut || {
        release("v4").is_ok_and(|r| r.reached.iter().any(|s| s == "gamma") || stopped(&r))
    })?;
    create_flags(GOOD_FLAGS, flag_set(false))?;
    wait("flags-1 to pass beta", &mut || {
        release(GOOD_FLAGS).is_ok_and(|r| r.reached.iter().any(|s| s == "beta") || stopped(&r))
    })?;
    create_flags(BAD_FLAGS, flag_set(true))?;
    stop_bad(BAD_FLAGS, "")?;
    wait("v2, v4 and flags-1 to finish", &mut || {
        let good = ["v2", "v4", GOOD_FLAGS].map(&release);
        let halted = |r: &Result<ReleaseView, _>| r.as_ref().is_ok_and(|r| r.outcome == rollwave_api::Outcome::Halted);
        let done =
            |r: &Result<ReleaseView, _>| r.as_ref().is_ok_and(|r| r.outcome != rollwave_api::Outcome::InProgress);
        good.iter().any(halted) || good.iter().all(done)
    })?;
    // Let the last rollbacks and pushes land, so the summary is final.
    let _ = wait_until(Duration::from_secs(3), Duration::from_millis(200), || {
        client.status(service).is_ok_and(|s| s.releases.iter().all(|r| r.outcome != rollwave_api::Outcome::InProgress))
    });
    progress.update(world);
    if world.client().status(service).is_err() {
        return Err(Err(anyhow::anyhow!("the server stopped answering")));
    }
    Ok(())
}

fn render(s: &Summary) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "\nrollwave demo: {} hosts, {} routers, {:.0} s\n", s.hosts, s.routers, s.duration_s);
    for r in &s.releases {
        let lane = if r.lane == rollwave_api::Lane::Flags { " (flag release)" } else { "" };
        let _ = writeln!(out, "  {:<4} {}{lane}", r.version, r.outcome.as_str().replace('_', " "));
        if !r.reached.is_empty() {
            let _ = writeln!(out, "       reached: {}", r.reached.join(", "));
        }
        if !r.rolled_back_scopes.is_empty() {
            let _ = writeln!(out, "       rolled back in: {}", r.rolled_back_scopes.join(", "));
        }
        if let Some(reason) = &r.reason {
            let _ = writeln!(out, "       caught by: {reason}");
        }
    }
    let b = &s.blast_radius;
    let _ = writeln!(
        out,
        "\n  Blast radius of {}: {} of {} user requests ({:.2}%) reached it, {} of them failed; it ran on {} host(s).",
        b.version,
        b.bad_requests,
        b.total_requests,
        b.fraction * 100.0,
        b.bad_errors,
        b.hosts_exposed
    );
    let _ = writeln!(out, "  Users who saw more than one version: {}", s.users_switched);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_manifest_is_valid_and_has_the_promised_shape() {
        let m = rollwave_manifest::parse_manifest("demo.yaml", MANIFEST).unwrap();
        let names: Vec<&str> = m.environments.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["beta", "gamma", "prod"]);
        let prod = &m.environments[2];
        assert_eq!(prod.regions.len(), 3);
        assert!(prod.regions.iter().all(|r| r.zones.len() == 3 && r.zones.iter().all(|z| z.hosts == 2)));
        assert!(!m.monitors.is_empty(), "quiet regions need monitors");
    }
}
