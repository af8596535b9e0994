//! `rollwave study`: one scenario run many times, seeds `S, S+1, …`, to measure what a
//! pipeline does to its releases: how often a good one is rolled back for nothing, how
//! soon and how widely a defective one is caught.
//!
//! Runs are spread over threads; each run is the simulation of its seed alone, and the
//! results are gathered in seed order, so a study's figures depend only on its inputs.

use crate::report::{Cause, ReleaseMeasure};
use crate::run::{Options, SimError, simulate};
use crate::scenario::Scenario;
use rollwave_core::plan::Plan;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct StudyOptions {
    pub runs: u64,
    /// The first run's seed; run `i` has seed `seed + i`.
    pub seed: u64,
    /// Virtual time after which each run stops.
    pub until: Duration,
    /// Threads to spread the runs over.
    pub threads: usize,
}

/// What the runs did to each release of the scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Study {
    pub runs: u64,
    pub releases: Vec<ReleaseStudy>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReleaseStudy {
    pub version: String,
    /// The scenario gives it a defect.
    pub defective: bool,
    /// Outcome (`completed`, `rolled_back`, `halted`, …) → runs.
    pub outcomes: BTreeMap<&'static str, u64>,
    /// What its first rollback was owed to (`judge`, `alarm`, `failed_hosts`, `tests`,
    /// `operator`, `other`) → runs.
    pub rolled_back_by: BTreeMap<&'static str, u64>,
    /// Runs where its first rollback came while its first one-box baked.
    pub caught_in_one_box: u64,
    /// Seconds from its first one-box to its first rollback, over the runs that had both.
    pub detect_s: Spread,
    /// Requests it served while its defect was active.
    pub exposed_requests: Tail,
    /// Hosts it reached while defective.
    pub exposed_hosts: Tail,
    /// For a good release: the share of runs where something other than an operator
    /// rolled it back, and its Wilson 95 % interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub false_rollback_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub false_rollback_ci95: Option<[f64; 2]>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Tail {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Runs `scenario` `options.runs` times.
pub fn study(plan: Arc<Plan>, scenario: &Scenario, options: StudyOptions) -> Result<Study, SimError> {
    let threads = options.threads.clamp(1, options.runs.max(1) as usize);
    let mut per_run: Vec<(u64, Result<Vec<ReleaseMeasure>, SimError>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let plan = Arc::clone(&plan);
                s.spawn(move || {
                    (0..options.runs)
                        .filter(|i| *i as usize % threads == t)
                        .map(|i| {
                            let run = Options { seed: options.seed.wrapping_add(i), until: options.until };
                            (i, simulate(Arc::clone(&plan), scenario, run).map(|r| r.measures))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A run that panicked is a bug in the simulator, not a figure.
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    per_run.sort_by_key(|(i, _)| *i);
    let runs = per_run.into_iter().map(|(_, r)| r).collect::<Result<Vec<_>, _>>()?;
    Ok(Study { runs: options.runs, releases: summarize(&runs) })
}

fn summarize(runs: &[Vec<ReleaseMeasure>]) -> Vec<ReleaseStudy> {
    let mut versions: Vec<(String, bool)> = Vec::new();
    for run in runs {
        for m in run {
            if !versions.iter().any(|(v, _)| *v == m.version) {
                versions.push((m.version.clone(), m.defective));
            }
        }
    }
    versions
        .into_iter()
        .map(|(version, defective)| {
            let measures: Vec<&ReleaseMeasure> =
                runs.iter().filter_map(|r| r.iter().find(|m| m.version == version)).collect();
            let mut outcomes = BTreeMap::new();
            let mut rolled_back_by = BTreeMap::new();
            for m in &measures {
                *outcomes.entry(m.outcome).or_insert(0) += 1;
                if let Some(cause) = m.rolled_back_by {
                    *rolled_back_by.entry(cause.as_str()).or_insert(0) += 1;
                }
            }
            let mut detect: Vec<f64> = measures.iter().filter_map(|m| m.detect).map(|d| d.as_secs_f64()).collect();
            detect.sort_by(f64::total_cmp);
            let mut requests: Vec<f64> = measures.iter().map(|m| m.exposed_requests as f64).collect();
            requests.sort_by(f64::total_cmp);
            let mut hosts: Vec<f64> = measures.iter().map(|m| m.exposed_hosts as f64).collect();
            hosts.sort_by(f64::total_cmp);
            let (false_rollback_rate, false_rollback_ci95) = if defective || measures.is_empty() {
                (None, None)
            } else {
                let n = measures.len() as u64;
                let k =
                    measures.iter().filter(|m| m.rolled_back_by.is_some_and(|c| c != Cause::Operator)).count() as u64;
                (Some(k as f64 / n as f64), Some(wilson(k, n)))
            };
            ReleaseStudy {
                version,
                defective,
                outcomes,
                rolled_back_by,
                caught_in_one_box: measures.iter().filter(|m| m.caught_in_one_box).count() as u64,
                detect_s: Spread {
                    p50: quantile(&detect, 0.5),
                    p90: quantile(&detect, 0.9),
                    max: detect.last().copied(),
                },
                exposed_requests: Tail { p50: quantile(&requests, 0.5), p99: quantile(&requests, 0.99) },
                exposed_hosts: Tail { p50: quantile(&hosts, 0.5), p99: quantile(&hosts, 0.99) },
                false_rollback_rate,
                false_rollback_ci95,
            }
        })
        .collect()
}

/// The nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank - 1).copied()
}

/// The Wilson score interval at 95 % for `k` successes in `n` trials.
fn wilson(k: u64, n: u64) -> [f64; 2] {
    const Z: f64 = 1.959_963_985;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let denominator = 1.0 + Z * Z / n;
    let centre = (p + Z * Z / (2.0 * n)) / denominator;
    let half = Z * (p * (1.0 - p) / n + Z * Z / (4.0 * n * n)).sqrt() / denominator;
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

impl Study {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = format!("{} runs\n", self.runs);
        let figure = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        for r in &self.releases {
            let _ = writeln!(out, "\n{}{}", r.version, if r.defective { " (defective)" } else { "" });
            let outcomes: Vec<String> = r.outcomes.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(out, "  outcomes: {}", outcomes.join(", "));
            if !r.rolled_back_by.is_empty() {
                let by: Vec<String> = r.rolled_back_by.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(out, "  first rolled back by: {}", by.join(", "));
            }
            if r.caught_in_one_box > 0 {
                let _ = writeln!(out, "  caught while its first one-box baked: {}", r.caught_in_one_box);
            }
            if r.detect_s.max.is_some() {
                let _ = writeln!(
                    out,
                    "  one-box to rollback: p50 {} s, p90 {} s, max {} s",
                    figure(r.detect_s.p50),
                    figure(r.detect_s.p90),
                    figure(r.detect_s.max)
                );
            }
            if r.defective {
                let _ = writeln!(
                    out,
                    "  exposed: requests p50 {} p99 {}; hosts p50 {} p99 {}",
                    figure(r.exposed_requests.p50),
                    figure(r.exposed_requests.p99),
                    figure(r.exposed_hosts.p50),
                    figure(r.exposed_hosts.p99)
                );
            }
            if let (Some(rate), Some([low, high])) = (r.false_rollback_rate, r.false_rollback_ci95) {
                let _ = writeln!(
                    out,
                    "  false rollbacks: {:.2} % (95 % CI {:.2}–{:.2} %)",
                    rate * 100.0,
                    low * 100.0,
                    high * 100.0
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank_and_wilson_intervals_hold_known_values() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
        // 0 of 1000: [0, 0.38 %]; 10 of 100: [5.5 %, 17.4 %] (the Wilson interval's
        // textbook values).
        let [low, high] = wilson(0, 1000);
        assert_eq!(low, 0.0);
        assert!((high - 0.003_83).abs() < 1e-4, "{high}");
        let [low, high] = wilson(10, 100);
        assert!((low - 0.0552).abs() < 1e-3 && (high - 0.1744).abs() < 1e-3, "{low} {high}");
    }
}
