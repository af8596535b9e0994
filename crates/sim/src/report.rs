//! What a simulation tells: each release's outcome, the event timeline and the blast radius.

use serde::Serialize;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub releases: Vec<ReleaseReport>,
    pub events: Vec<EventRecord>,
    pub blast_radius: BlastRadius,
    /// Virtual time at the start and the end, RFC 3339.
    pub started: String,
    pub ended: String,
    /// Things the simulation could not model, or operator actions the engine refused.
    pub notes: Vec<String>,
    /// How many hosts run each version at the end, per environment.
    pub fleet: Vec<FleetVersions>,
    /// Breaches of the engine's invariants that the simulated world observed (never
    /// expected; the property tests assert there are none).
    pub violations: Vec<String>,
    /// Per release, what a study of many runs reads (not part of the report's JSON).
    #[serde(skip)]
    pub measures: Vec<ReleaseMeasure>,
}

/// What happened to one release in one run.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleaseMeasure {
    pub version: String,
    /// The scenario gave it a defect.
    pub defective: bool,
    pub outcome: &'static str,
    /// What its first rollback was owed to.
    pub rolled_back_by: Option<Cause>,
    /// From its first one-box to its first rollback.
    pub detect: Option<std::time::Duration>,
    /// Its first rollback came while its first one-box baked.
    pub caught_in_one_box: bool,
    /// Requests it served while its defect was active.
    pub exposed_requests: u64,
    /// Hosts deployed with it while it was defective.
    pub exposed_hosts: u64,
}

/// What a rollback was owed to: the input that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The one-box judge's verdict.
    Judge,
    /// An alarm (synthetic monitors' alarms among them).
    Alarm,
    /// Host deployments that failed, or hosts lost.
    FailedHosts,
    /// A stage's tests.
    Tests,
    /// An operator's command.
    Operator,
    /// Anything else (a deployment's timeout, seen at a tick).
    Other,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Judge => "judge",
            Cause::Alarm => "alarm",
            Cause::FailedHosts => "failed_hosts",
            Cause::Tests => "tests",
            Cause::Operator => "operator",
            Cause::Other => "other",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct FleetVersions {
    pub environment: String,
    pub versions: Vec<(String, u64)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReleaseReport {
    pub version: String,
    /// `completed`, `halted`, `rolled_back`, `superseded` or `in_progress`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_time_s: Option<i64>,
    pub reached: Vec<String>,
    pub rolled_back_scopes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    pub t: String,
    pub kind: &'static str,
    pub release: Option<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BlastRadius {
    /// Requests served by a release while its defect was active.
    pub bad_requests: u64,
    pub total_requests: u64,
    pub fraction: f64,
    /// Hosts that were deployed with a defective release.
    pub hosts_exposed: u64,
}

impl Report {
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            releases: &'a [ReleaseReport],
            events: &'a [EventRecord],
            blast_radius: &'a BlastRadius,
            started: &'a str,
            ended: &'a str,
            notes: &'a [String],
            fleet: &'a [FleetVersions],
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            violations: &'a [String],
        }
        let wire = Wire {
            releases: &self.releases,
            events: &self.events,
            blast_radius: &self.blast_radius,
            started: &self.started,
            ended: &self.ended,
            notes: &self.notes,
            fleet: &self.fleet,
            violations: &self.violations,
        };
        // Serialising plain strings and numbers cannot fail.
        serde_json::to_string_pretty(&wire).unwrap_or_default()
    }

    /// A timeline a person can read, then a summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let width = self.events.iter().map(|e| e.kind.len()).max().unwrap_or(0);
        for e in &self.events {
            let release = e.release.as_deref().unwrap_or("-");
            let _ = write!(out, "{}  {:<width$}  {:<6} {}", e.t, e.kind, release, e.scope);
            if let Some(reason) = &e.reason {
                let _ = write!(out, "  ({reason})");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "\nsimulated {} → {}\n", self.started, self.ended);
        let _ = writeln!(out, "{:<10} {:<12} {:>10}  reached / why", "release", "outcome", "lead time");
        for r in &self.releases {
            let lead = r.lead_time_s.map(|s| format_secs(s as u64)).unwrap_or_else(|| "-".into());
            let last = r.reached.last().cloned().unwrap_or_else(|| "nothing".into());
            let _ = write!(out, "{:<10} {:<12} {:>10}  reached {last}", r.version, r.outcome, lead);
            if let Some(reason) = &r.reason {
                let _ = write!(out, "; {reason}");
            }
            if !r.rolled_back_scopes.is_empty() {
                let _ = write!(out, "; rolled back in {}", r.rolled_back_scopes.join(", "));
            }
            out.push('\n');
        }
        let b = &self.blast_radius;
        let _ = writeln!(
            out,
            "\nblast radius: {} bad of {} requests ({:.4}%), {} host(s) exposed",
            b.bad_requests,
            b.total_requests,
            b.fraction * 100.0,
            b.hosts_exposed
        );
        for env in &self.fleet {
            let versions: Vec<String> = env.versions.iter().map(|(v, n)| format!("{n}×{v}")).collect();
            let _ = writeln!(out, "fleet {}: {}", env.environment, versions.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for v in &self.violations {
            let _ = writeln!(out, "INVARIANT VIOLATED: {v}");
        }
        out
    }
}

fn format_secs(s: u64) -> String {
    rollwave_core::format_duration(std::time::Duration::from_secs(s))
}
