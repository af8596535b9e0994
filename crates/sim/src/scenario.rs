//! A simulation scenario: the traffic a fleet serves and what happens to it over time.

use jiff::Timestamp;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Scenario {
    pub start: Timestamp,
    /// The version every host runs at `start`.
    pub initial_version: String,
    pub traffic: Traffic,
    /// How long one host takes to deploy a version (each draw adds up to half again).
    pub deploy_time: Duration,
    /// How long a stage test takes.
    pub test_time: Duration,
    pub releases: Vec<ScenarioRelease>,
    pub incidents: Vec<Incident>,
    pub operators: Vec<OperatorAction>,
    pub host_failures: Vec<HostFailure>,
}

/// What every host serves, unless a defect or an incident says otherwise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Traffic {
    /// The mean over the day.
    pub requests_per_host_per_s: f64,
    pub error_rate: f64,
    pub latency_p99_ms: f64,
    /// How far hosts differ by nature: each host's error rate and p99 latency are the
    /// scenario's times its own factor, log-normal with this spread (σ of its logarithm)
    /// and mean 1, drawn once per run. 0: every host alike.
    pub host_spread: f64,
    /// The daily swing of traffic around its mean, from 0 to 1: requests follow
    /// `1 + swing·cos(2π(t − 15:00 UTC)/24 h)`, busiest at 15:00 UTC and quietest at 03:00.
    pub daily_swing: f64,
}

impl Traffic {
    /// Requests per host per second at `at`, after the daily swing.
    pub fn requests_at(&self, at: jiff::Timestamp) -> f64 {
        if self.daily_swing == 0.0 {
            return self.requests_per_host_per_s;
        }
        const DAY_S: f64 = 86_400.0;
        const PEAK_S: f64 = 15.0 * 3600.0;
        let of_day = (at.as_second().rem_euclid(86_400)) as f64;
        let phase = std::f64::consts::TAU * (of_day - PEAK_S) / DAY_S;
        self.requests_per_host_per_s * (1.0 + self.daily_swing * phase.cos())
    }
}

#[derive(Clone, Debug)]
pub struct ScenarioRelease {
    pub version: String,
    /// After `start`.
    pub at: Duration,
    pub defect: Option<Defect>,
}

/// How a release misbehaves, from `appears_after` its creation on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Defect {
    pub error_rate: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub appears_after: Duration,
    /// Its stage tests fail.
    pub fails_tests: bool,
}

/// Trouble not caused by any release, in a region (every environment that has it) or one zone.
#[derive(Clone, Debug)]
pub struct Incident {
    pub at: Duration,
    pub duration: Duration,
    pub environment: Option<String>,
    pub region: String,
    pub zone: Option<String>,
    pub error_rate: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct OperatorAction {
    pub at: Duration,
    pub action: OperatorVerb,
    pub release: Option<String>,
    pub stage: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorVerb {
    Approve,
    Rollback,
    Retry,
    RollForward,
    Hold,
    Resume,
}

impl OperatorVerb {
    pub const NAMES: [&'static str; 6] = ["approve", "rollback", "retry", "roll_forward", "hold", "resume"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "approve" => OperatorVerb::Approve,
            "rollback" => OperatorVerb::Rollback,
            "retry" => OperatorVerb::Retry,
            "roll_forward" => OperatorVerb::RollForward,
            "hold" => OperatorVerb::Hold,
            "resume" => OperatorVerb::Resume,
            _ => return None,
        })
    }
}

/// From `at` on, the host is broken: deployments to it fail and it serves nothing.
#[derive(Clone, Debug)]
pub struct HostFailure {
    pub at: Duration,
    pub environment: Option<String>,
    pub host: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_swing_peaks_in_the_afternoon_and_bottoms_out_at_night() {
        let traffic = Traffic {
            requests_per_host_per_s: 10.0,
            error_rate: 0.0,
            latency_p99_ms: 100.0,
            host_spread: 0.0,
            daily_swing: 0.5,
        };
        let at = |t: &str| traffic.requests_at(t.parse().unwrap());
        assert!((at("2026-12-01T15:00:00Z") - 15.0).abs() < 1e-9);
        assert!((at("2026-12-02T03:00:00Z") - 5.0).abs() < 1e-9);
        assert!((at("2026-12-02T09:00:00Z") - 10.0).abs() < 1e-9);
        let flat = Traffic { daily_swing: 0.0, ..traffic };
        assert_eq!(flat.requests_at("2026-12-02T03:00:00Z".parse().unwrap()), 10.0);
    }
}
