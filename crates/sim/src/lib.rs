//! Runs the rollout engine against a simulated fleet and its traffic in virtual time.
//!
//! The engine is the one the server runs; only the world around it is simulated: hosts
//! that take a while to deploy (and sometimes break), traffic that a defect or an incident
//! spoils, and alarms evaluated on that traffic with CloudWatch semantics. A seed makes
//! the world's randomness repeatable, so one scenario and one seed always tell the same story.

mod fleet;
mod judge;
mod parse;
mod report;
mod run;
mod scenario;
mod study;

pub use parse::parse_scenario;
pub use report::{BlastRadius, Cause, EventRecord, FleetVersions, ReleaseMeasure, ReleaseReport, Report};
pub use run::{Options, SimError, simulate};
pub use scenario::*;
pub use study::{ReleaseStudy, Spread, Study, StudyOptions, Tail, study};
