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
    pub requests_per_host_per_s: f64,
    pub error_rate: f64,
    pub latency_p99_ms: f64,
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
