//! Anytime-valid sequential tests for the one-box judge: the canary's rate of bad events
//! (failed requests, failed monitor checks, requests slower than a latency bound) against
//! the baseline's, looked at after every data bin of a bake.
//!
//! A fixed-sample test run again at every look has one more chance of a false alarm at
//! each: its stated confidence does not hold under continuous monitoring. The tests here
//! keep their bound however often, and for however long, they are looked at.
//!
//! # Construction
//!
//! Data arrive in bins `t = 1, 2, …`. In bin `t` the canary served `n_t` requests of which
//! `x_t` were bad, the baseline `m_t` requests of which `y_t` were bad. Bad events are
//! taken to be Poisson with means `λ_c·n_t` and `λ_b·m_t`. Given the bin's `k_t = x_t + y_t`
//! bad events, `x_t` is then `Binomial(k_t, π_t(θ))` with
//!
//! ```text
//! π_t(θ) = θ·n_t / (θ·n_t + m_t),   θ = λ_c / λ_b
//! ```
//!
//! whatever `λ_b` is: the baseline's own rate, which drifts with the time of day and with
//! incidents that hit every host, cancels out. The null hypothesis is `θ ≤ θ0`, the
//! allowed ratio. For one alternative `θ1 > θ0` the likelihood ratio
//!
//! ```text
//! L_t(θ1) = Π_{s ≤ t} (π_s(θ1) / π_s(θ0))^x_s · ((1 − π_s(θ1)) / (1 − π_s(θ0)))^y_s
//! ```
//!
//! is a non-negative martingale of mean 1 when `θ = θ0`, and a supermartingale when
//! `θ < θ0` (the binomial's likelihood ratio is monotone in `π`, and `π_t` grows with `θ`).
//! So is the mixture `E_t = Σ_j w_j · L_t(θ0·r_j)` over the grid [`ALTERNATIVES`] with
//! weights summing to 1, an e-process. By Ville's inequality
//!
//! ```text
//! P(there is a t with E_t ≥ 1/α) ≤ α
//! ```
//!
//! under the null: the test rejects the first time `E_t` reaches `1/α`, and that bound
//! holds at every look, with optional stopping, whatever the bins' sizes. The mean of
//! several e-processes is an e-process too, which is how [`ExceedanceTest`] tests every
//! latency bound at once without splitting `α`.
//!
//! Sources: J. Ville, *Étude critique de la notion de collectif* (1939); A. Wald,
//! *Sequential tests of statistical hypotheses* (1945); H. Robbins, *Statistical methods
//! related to the law of the iterated logarithm* (1970, mixture martingales); the
//! conditional test of two Poisson means (Przyborowski & Wilenski, 1940); M. Lindon and
//! A. Malek, *Anytime-valid inference for multinomial count data* (NeurIPS 2022,
//! arXiv 2011.03567), of which this is the two-cell case with a discrete mixing
//! distribution; M. Lindon, C. Sanden, V. Shirikian, *Rapid regression detection in
//! software deployments through sequential testing* (KDD 2022, arXiv 2205.14762), who run
//! such tests on canaries at Netflix.
//!
//! # Assumptions
//!
//! - Within a bin, each request of a side is bad independently at that side's rate. A
//!   host that is worse than its peers by nature (not by the release) breaks this; the
//!   baseline is then not a fair comparison and false alarms exceed `α`. That is what
//!   `allowed ratio > 1` leaves room for, and what a study of the pipeline measures.
//! - How many requests each side serves in a bin does not depend on its bad events.
//!
//! # Cost
//!
//! A look replays every bin of the bake: `O(bins · alternatives)` logarithms, a few
//! microseconds for an hour of one-second bins. The replay needs no state between looks,
//! so every replica that replays the log reaches the same decision.

use crate::alarm::TrafficMetric;
use crate::judge::{Outcome, Report};
use crate::manifest::{JudgeMethod, JudgeSettings, JudgedMetric};
use std::fmt;

/// The alternatives mixed, as multiples of the allowed ratio: from barely worse to
/// broken. Each has weight `1/len`. A defect near one of them is found fastest; one far
/// from all of them still is, more slowly.
pub const ALTERNATIVES: [f64; 7] = [1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0];

/// One data bin of one metric: each side's requests (or checks) and how many were bad.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBin {
    pub canary_total: u64,
    pub canary_bad: u64,
    pub baseline_total: u64,
    pub baseline_bad: u64,
}

/// Why a sequential test cannot run as configured.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SequentialError {
    #[error("alpha {0} is outside (0, 0.5]: use a level such as 0.01")]
    Alpha(f64),
    #[error("allowed ratio {0} must be a finite number >= 1, such as 1.25")]
    AllowedRatio(f64),
}

/// The sequential test of a rate: is the canary's rate more than `allowed_ratio` times the
/// baseline's?
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateTest {
    /// The bound on the chance that a release within the allowed ratio is ever judged
    /// failing.
    pub alpha: f64,
    /// `θ0`: the ratio of canary to baseline rates that still counts as good.
    pub allowed_ratio: f64,
}

/// What a rate test says after the bins it was given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLook {
    /// Bins looked at, and the totals over them.
    pub bins: usize,
    pub totals: RateBin,
    /// `E_t` after the last bin.
    pub e_value: f64,
    /// The largest `E_t` over the bins: the test has rejected once it reaches the boundary.
    pub max_e_value: f64,
    /// `1/α`.
    pub boundary: f64,
    /// The bin (counting from 1) at which `E_t` first reached the boundary.
    pub rejected_at: Option<usize>,
}

impl RateLook {
    pub fn rejected(&self) -> bool {
        self.rejected_at.is_some()
    }

    /// `θ` estimated from the totals (rate ratio); `None` without a bad baseline event
    /// or without canary requests.
    pub fn ratio(&self) -> Option<f64> {
        let t = self.totals;
        if t.canary_total == 0 || t.baseline_total == 0 || t.baseline_bad == 0 {
            return None;
        }
        Some((t.canary_bad as f64 / t.canary_total as f64) / (t.baseline_bad as f64 / t.baseline_total as f64))
    }
}

impl RateTest {
    pub fn new(alpha: f64, allowed_ratio: f64) -> Result<RateTest, SequentialError> {
        if !(alpha > 0.0 && alpha <= 0.5) {
            return Err(SequentialError::Alpha(alpha));
        }
        if !(allowed_ratio.is_finite() && allowed_ratio >= 1.0) {
            return Err(SequentialError::AllowedRatio(allowed_ratio));
        }
        Ok(RateTest { alpha, allowed_ratio })
    }

    /// Replays `bins` in order and says where the test stands after the last one.
    pub fn look(&self, bins: &[RateBin]) -> RateLook {
        let mut state = self.start();
        for bin in bins {
            self.push(&mut state, bin);
        }
        state.look
    }

    /// A test before any bin.
    pub fn start(&self) -> RateState {
        RateState {
            log_lr: [0.0; ALTERNATIVES.len()],
            look: RateLook {
                bins: 0,
                totals: RateBin::default(),
                e_value: 1.0,
                max_e_value: 1.0,
                boundary: 1.0 / self.alpha,
                rejected_at: None,
            },
        }
    }

    /// The test after one more bin: what [`RateTest::look`] does bin by bin, for a caller
    /// that keeps the state between bins.
    pub fn push(&self, state: &mut RateState, bin: &RateBin) {
        let look = &mut state.look;
        look.bins += 1;
        look.totals.canary_total += bin.canary_total;
        look.totals.canary_bad += bin.canary_bad;
        look.totals.baseline_total += bin.baseline_total;
        look.totals.baseline_bad += bin.baseline_bad;
        // A bin without requests on a side, or without a bad event, says nothing about θ:
        // its factor is 1.
        if bin.canary_total == 0 || bin.baseline_total == 0 || bin.canary_bad + bin.baseline_bad == 0 {
            return;
        }
        let theta0 = self.allowed_ratio;
        let (n, m) = (bin.canary_total as f64, bin.baseline_total as f64);
        let (x, y) = (bin.canary_bad as f64, bin.baseline_bad as f64);
        let p0 = theta0 * n / (theta0 * n + m);
        for (l, r) in state.log_lr.iter_mut().zip(ALTERNATIVES) {
            let theta1 = theta0 * r;
            let p1 = theta1 * n / (theta1 * n + m);
            *l += x * (p1 / p0).ln() + y * ((1.0 - p1) / (1.0 - p0)).ln();
        }
        look.e_value = mixture(&state.log_lr);
        if look.e_value > look.max_e_value {
            look.max_e_value = look.e_value;
        }
        if look.rejected_at.is_none() && look.e_value >= look.boundary {
            look.rejected_at = Some(look.bins);
        }
    }
}

/// A rate test between bins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateState {
    log_lr: [f64; ALTERNATIVES.len()],
    pub look: RateLook,
}

/// `Σ w_j · exp(log L_j)` with equal weights, computed without overflow.
fn mixture(log_lr: &[f64]) -> f64 {
    let max = log_lr.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = log_lr.iter().map(|l| (l - max).exp()).sum();
    (max + (sum / log_lr.len() as f64).ln()).exp()
}

/// One latency bin: each side's requests counted into the same histogram buckets (upper
/// bounds ascending; `counts[i]` requests took at most `bounds[i]`, beyond the previous
/// bound; a last count may hold the requests beyond every bound).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatencyBin {
    pub canary: Vec<u64>,
    pub baseline: Vec<u64>,
}

/// The sequential test of latency in stochastic order: for each bucket bound, is the
/// canary's share of requests slower than the bound more than `allowed_ratio` times the
/// baseline's? One [`RateTest`] per bound, averaged into one e-process (so `α` holds for
/// all bounds together). A heavier tail at the same median shows past the upper bounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExceedanceTest {
    pub rate: RateTest,
}

/// What a latency test says: the whole test and each bound's part.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceedanceLook {
    pub bins: usize,
    pub e_value: f64,
    pub max_e_value: f64,
    pub boundary: f64,
    pub rejected_at: Option<usize>,
    /// Per bound: the rate test of requests slower than it.
    pub bounds: Vec<RateLook>,
}

impl ExceedanceLook {
    pub fn rejected(&self) -> bool {
        self.rejected_at.is_some()
    }

    /// The bound whose test weighs most now (the place the tail differs most), by index.
    pub fn strongest(&self) -> Option<usize> {
        (0..self.bounds.len()).max_by(|&a, &b| self.bounds[a].e_value.total_cmp(&self.bounds[b].e_value))
    }
}

impl ExceedanceTest {
    /// `buckets` is how many histogram buckets each bin has; bound `i` counts the
    /// requests of buckets `i+1..` as slow, for `i` in `0..buckets-1`.
    pub fn look(&self, buckets: usize, bins: &[LatencyBin]) -> ExceedanceLook {
        let mut state = self.start(buckets);
        for bin in bins {
            self.push(&mut state, &bin.canary, &bin.baseline);
        }
        state.look()
    }

    pub fn start(&self, buckets: usize) -> ExceedanceState {
        let bounds = buckets.saturating_sub(1);
        ExceedanceState {
            bounds: vec![self.rate.start(); bounds],
            bins: 0,
            e_value: 1.0,
            max_e_value: 1.0,
            boundary: 1.0 / self.rate.alpha,
            rejected_at: None,
        }
    }

    /// The test after one more bin, each side's histogram (padded or cut to the test's
    /// buckets).
    pub fn push(&self, state: &mut ExceedanceState, canary: &[u64], baseline: &[u64]) {
        state.bins += 1;
        if state.bounds.is_empty() {
            return;
        }
        let (canary_total, baseline_total): (u64, u64) = (canary.iter().sum(), baseline.iter().sum());
        // Slow counts from the top bucket down: bound i counts buckets i+1.. .
        let (mut canary_slow, mut baseline_slow) = (0u64, 0u64);
        for i in (0..state.bounds.len()).rev() {
            canary_slow += canary.get(i + 1).copied().unwrap_or(0);
            baseline_slow += baseline.get(i + 1).copied().unwrap_or(0);
            let rate_bin =
                RateBin { canary_total, canary_bad: canary_slow, baseline_total, baseline_bad: baseline_slow };
            self.rate.push(&mut state.bounds[i], &rate_bin);
        }
        let e = state.bounds.iter().map(|b| b.look.e_value).sum::<f64>() / state.bounds.len() as f64;
        state.e_value = e;
        state.max_e_value = state.max_e_value.max(e);
        if state.rejected_at.is_none() && e >= state.boundary {
            state.rejected_at = Some(state.bins);
        }
    }
}

/// A latency test between bins.
#[derive(Clone, Debug, PartialEq)]
pub struct ExceedanceState {
    bounds: Vec<RateState>,
    bins: usize,
    e_value: f64,
    max_e_value: f64,
    boundary: f64,
    rejected_at: Option<usize>,
}

impl ExceedanceState {
    pub fn look(&self) -> ExceedanceLook {
        ExceedanceLook {
            bins: self.bins,
            e_value: self.e_value,
            max_e_value: self.max_e_value,
            boundary: self.boundary,
            rejected_at: self.rejected_at,
            bounds: self.bounds.iter().map(|b| b.look).collect(),
        }
    }
}

/// One data bin of a one-box bake: each side's traffic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JudgeBin {
    pub canary: Traffic,
    pub baseline: Traffic,
}

/// Requests, failed requests and the latency histogram of one side in one bin.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    pub requests: u64,
    pub errors: u64,
    /// Requests per latency bucket (bounds ascending, a last bucket for the slowest).
    pub latency: Vec<u64>,
}

impl Traffic {
    /// Adds `other` in, bucket by bucket.
    pub fn add(&mut self, other: &Traffic) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (into, n) in self.latency.iter_mut().zip(&other.latency) {
            *into += n;
        }
    }
}

/// The one-box judge by sequential tests: failed requests ([`RateTest`]) and slow requests
/// at every latency bound ([`ExceedanceTest`]), as its metrics say, each at `alpha` divided
/// by their number, so that the chance a release no worse than its baseline on all of them
/// is ever failed stays within `alpha` (a union bound).
#[derive(Clone, Debug, PartialEq)]
pub struct SequentialJudge {
    pub alpha: f64,
    /// The tests, in the manifest's order.
    pub metrics: Vec<JudgedMetric>,
    /// Requests each side needs for a pass: with fewer, the verdict is marginal and a
    /// judged one-box keeps baking.
    pub min_samples: u64,
}

/// Bins at which a test's standing is kept for the verdict's record of its looks, besides
/// the bin where it crossed and the last: 1, 2, 4, 8, …
fn kept_look(bin: usize) -> bool {
    bin.is_power_of_two()
}

impl SequentialJudge {
    /// The judge with its default metrics; `alpha` as [`RateTest::new`] takes it.
    pub fn new(alpha: f64) -> Result<SequentialJudge, SequentialError> {
        SequentialJudge::from_settings(&JudgeSettings { alpha, ..JudgeSettings::defaults(JudgeMethod::Sequential) })
    }

    /// The judge the manifest's settings describe (whatever their method says).
    pub fn from_settings(settings: &JudgeSettings) -> Result<SequentialJudge, SequentialError> {
        let judge = SequentialJudge {
            alpha: settings.alpha,
            metrics: settings.metrics.clone(),
            min_samples: settings.min_samples,
        };
        for m in &judge.metrics {
            judge.rate_test(m)?;
        }
        if judge.metrics.is_empty() {
            RateTest::new(judge.alpha, 1.0)?;
        }
        Ok(judge)
    }

    fn rate_test(&self, metric: &JudgedMetric) -> Result<RateTest, SequentialError> {
        RateTest::new(self.alpha, 1.0)?;
        RateTest::new(self.alpha / self.metrics.len().max(1) as f64, metric.allowed_increase)
    }

    fn test(&self, metric: &JudgedMetric) -> RateTest {
        RateTest { alpha: self.alpha / self.metrics.len().max(1) as f64, allowed_ratio: metric.allowed_increase }
    }

    /// The judge before any bin of a bake.
    pub fn start(&self) -> SequentialState {
        let tests = self
            .metrics
            .iter()
            .map(|m| match m.metric {
                TrafficMetric::LatencyP99Ms => TestState::Latency(
                    ExceedanceTest { rate: self.test(m) }.start(crate::alarm::LATENCY_BOUNDS_MS.len() + 1),
                ),
                _ => TestState::Rate(self.test(m).start()),
            })
            .collect();
        SequentialState { tests, looks: Vec::new(), canary_requests: 0, baseline_requests: 0 }
    }

    /// The judge after one more bin.
    pub fn push(&self, state: &mut SequentialState, bin: &JudgeBin) {
        state.canary_requests += bin.canary.requests;
        state.baseline_requests += bin.baseline.requests;
        let mut crossed = false;
        for (m, test) in self.metrics.iter().zip(&mut state.tests) {
            let was = test.rejected_at().is_some();
            match test {
                TestState::Rate(rate) => {
                    let errors = RateBin {
                        canary_total: bin.canary.requests,
                        canary_bad: bin.canary.errors.min(bin.canary.requests),
                        baseline_total: bin.baseline.requests,
                        baseline_bad: bin.baseline.errors.min(bin.baseline.requests),
                    };
                    self.test(m).push(rate, &errors);
                }
                TestState::Latency(latency) => {
                    ExceedanceTest { rate: self.test(m) }.push(latency, &bin.canary.latency, &bin.baseline.latency)
                }
            }
            crossed |= !was && test.rejected_at().is_some();
        }
        let bin = state.bins();
        if kept_look(bin) || crossed {
            let look = state.look();
            state.looks.push(look);
        }
    }

    /// Judges the bake's bins so far: failing as soon as a test has crossed its boundary.
    pub fn judge(&self, bins: &[JudgeBin]) -> SequentialVerdict {
        let mut state = self.start();
        for bin in bins {
            self.push(&mut state, bin);
        }
        self.verdict(&state)
    }

    /// What the judge says after the bins pushed into `state`.
    pub fn verdict(&self, state: &SequentialState) -> SequentialVerdict {
        let tests: Vec<TestLook> = self
            .metrics
            .iter()
            .zip(&state.tests)
            .map(|(m, t)| TestLook {
                metric: *m,
                look: match t {
                    TestState::Rate(r) => MetricLook::Rate(r.look),
                    TestState::Latency(l) => MetricLook::Latency(l.look()),
                },
            })
            .collect();
        let bins = state.bins();
        let crossed =
            |critical: bool| tests.iter().find(|t| t.metric.critical == critical && t.rejected_at().is_some());
        let (outcome, reason) = if let Some(t) = crossed(true) {
            (Outcome::Fail, format!("critical metric failed: {}", t.crossing()))
        } else if let Some(t) = crossed(false) {
            (Outcome::Marginal, format!("held for an operator: {}", t.crossing()))
        } else if state.baseline_requests == 0 {
            (Outcome::Marginal, "no baseline traffic to compare with yet".to_owned())
        } else if state.canary_requests < self.min_samples || state.baseline_requests < self.min_samples {
            (
                Outcome::Marginal,
                format!(
                    "{} canary and {} baseline requests so far; a pass needs {} on each side",
                    state.canary_requests, state.baseline_requests, self.min_samples
                ),
            )
        } else {
            (Outcome::Pass, format!("no test crossed its boundary in {bins} bins"))
        };
        let mut looks = state.looks.clone();
        if looks.last().is_none_or(|l| l.bin != bins) && bins > 0 {
            looks.push(state.look());
        }
        SequentialVerdict { outcome, reason, tests, looks, alpha: self.alpha }
    }
}

/// One test between bins.
#[derive(Clone, Debug, PartialEq)]
enum TestState {
    Rate(RateState),
    Latency(ExceedanceState),
}

impl TestState {
    fn rejected_at(&self) -> Option<usize> {
        match self {
            TestState::Rate(r) => r.look.rejected_at,
            TestState::Latency(l) => l.rejected_at,
        }
    }

    fn e_value(&self) -> f64 {
        match self {
            TestState::Rate(r) => r.look.e_value,
            TestState::Latency(l) => l.e_value,
        }
    }
}

/// The sequential judge between bins.
#[derive(Clone, Debug, PartialEq)]
pub struct SequentialState {
    tests: Vec<TestState>,
    /// The standing after bins 1, 2, 4, … and where a test crossed.
    looks: Vec<Look>,
    canary_requests: u64,
    baseline_requests: u64,
}

impl SequentialState {
    /// Bins pushed so far.
    pub fn bins(&self) -> usize {
        self.tests
            .iter()
            .map(|t| match t {
                TestState::Rate(r) => r.look.bins,
                TestState::Latency(l) => l.bins,
            })
            .max()
            .unwrap_or(0)
    }

    fn look(&self) -> Look {
        Look {
            bin: self.bins(),
            canary_requests: self.canary_requests,
            baseline_requests: self.baseline_requests,
            e_values: self.tests.iter().map(TestState::e_value).collect(),
        }
    }
}

/// The judge's standing after one bin: each side's requests so far and each test's
/// e-value (in the order of the judge's metrics), against the boundaries in the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Look {
    pub bin: usize,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    pub e_values: Vec<f64>,
}

/// One metric's test, as it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct TestLook {
    pub metric: JudgedMetric,
    pub look: MetricLook,
}

#[derive(Clone, Debug, PartialEq)]
pub enum MetricLook {
    Rate(RateLook),
    Latency(ExceedanceLook),
}

impl TestLook {
    pub fn rejected_at(&self) -> Option<usize> {
        match &self.look {
            MetricLook::Rate(r) => r.rejected_at,
            MetricLook::Latency(l) => l.rejected_at,
        }
    }

    pub fn boundary(&self) -> f64 {
        match &self.look {
            MetricLook::Rate(r) => r.boundary,
            MetricLook::Latency(l) => l.boundary,
        }
    }

    /// The totals of the rate that decides: the errors, or the latency bound that weighs
    /// most.
    fn totals(&self) -> Option<&RateLook> {
        match &self.look {
            MetricLook::Rate(r) => Some(r),
            MetricLook::Latency(l) => l.strongest().map(|i| &l.bounds[i]),
        }
    }

    /// Why the test crossed, for a reason line.
    fn crossing(&self) -> String {
        let at = self.rejected_at().unwrap_or_default();
        match &self.look {
            MetricLook::Rate(r) => format!(
                "`{}` is High: {} errors in {} canary requests against {} in {} baseline requests crossed the \
                 boundary at bin {at}",
                self.metric.metric.as_str(),
                r.totals.canary_bad,
                r.totals.canary_total,
                r.totals.baseline_bad,
                r.totals.baseline_total,
            ),
            MetricLook::Latency(_) => format!(
                "`{}` is High: the canary's share of slow requests crossed the boundary at bin {at}",
                self.metric.metric.as_str()
            ),
        }
    }
}

/// What the sequential judge decided, with each test's standing.
#[derive(Clone, Debug, PartialEq)]
pub struct SequentialVerdict {
    pub outcome: Outcome,
    pub reason: String,
    pub tests: Vec<TestLook>,
    /// The standing at bins 1, 2, 4, …, where a test crossed, and at the last bin.
    pub looks: Vec<Look>,
    pub alpha: f64,
}

impl SequentialVerdict {
    /// One line for a timeline: the method, the outcome and why.
    pub fn summary(&self) -> String {
        format!("sequential ({}): {}", self.outcome, self.reason)
    }

    /// The test of `metric`, if the judge ran one.
    pub fn test(&self, metric: TrafficMetric) -> Option<&TestLook> {
        self.tests.iter().find(|t| t.metric.metric == metric)
    }

    /// The report in parts (see [`crate::judge::Report`]): one row per test, and the
    /// looks in the notes.
    pub fn report(&self) -> Report {
        let headline = format!("verdict {}: sequential, alpha {}: {}", self.outcome, self.alpha, self.reason);
        let columns = [
            "metric",
            "test",
            "bad if",
            "critical",
            "result",
            "canary n",
            "canary bad",
            "baseline n",
            "baseline bad",
            "ratio",
            "allowed",
            "e-value",
            "max e-value",
            "boundary",
            "crossed at bin",
        ]
        .map(str::to_owned)
        .to_vec();
        let figure = |v: f64| format!("{v:.3}");
        let dash = || "-".to_owned();
        let rows = self
            .tests
            .iter()
            .map(|t| {
                let totals = t.totals();
                let n = totals.map_or(0, |r| r.totals.canary_total);
                let result = if t.rejected_at().is_some() {
                    "High"
                } else if n == 0 {
                    "NoData"
                } else {
                    "Pass"
                };
                let (kind, e, max_e) = match &t.look {
                    MetricLook::Rate(r) => ("rate".to_owned(), r.e_value, r.max_e_value),
                    MetricLook::Latency(l) => {
                        (format!("slow share, {} bounds", l.bounds.len()), l.e_value, l.max_e_value)
                    }
                };
                vec![
                    t.metric.metric.as_str().to_owned(),
                    kind,
                    t.metric.direction.as_str().to_owned(),
                    if t.metric.critical { "yes" } else { "no" }.to_owned(),
                    result.to_owned(),
                    totals.map_or_else(dash, |r| r.totals.canary_total.to_string()),
                    totals.map_or_else(dash, |r| r.totals.canary_bad.to_string()),
                    totals.map_or_else(dash, |r| r.totals.baseline_total.to_string()),
                    totals.map_or_else(dash, |r| r.totals.baseline_bad.to_string()),
                    totals.and_then(RateLook::ratio).map_or_else(dash, figure),
                    figure(t.metric.allowed_increase),
                    figure(e),
                    figure(max_e),
                    figure(t.boundary()),
                    t.rejected_at().map_or_else(dash, |at| at.to_string()),
                ]
            })
            .collect();
        let mut notes = String::from("notes:\n");
        notes.push_str(
            "  e-values start at 1 and a test crosses once one reaches its boundary (1/alpha split over the \
             tests); the chance a release no worse than its baseline ever does is at most alpha\n",
        );
        for t in &self.tests {
            if let MetricLook::Latency(l) = &t.look
                && let Some(i) = l.strongest()
            {
                notes.push_str(&format!(
                    "  {}: the slow share past bound {} weighs most ({})\n",
                    t.metric.metric.as_str(),
                    i + 1,
                    l.bounds[i]
                ));
            }
        }
        if !self.looks.is_empty() {
            let boundaries: Vec<String> =
                self.tests.iter().map(|t| format!("{} {}", t.metric.metric.as_str(), figure(t.boundary()))).collect();
            notes.push_str(&format!("  looks (e-value per test; boundaries {}):\n", boundaries.join(", ")));
            for look in &self.looks {
                let e: Vec<String> = look.e_values.iter().map(|&e| figure(e)).collect();
                notes.push_str(&format!(
                    "    bin {}: canary n {}, baseline n {}, e {}\n",
                    look.bin,
                    look.canary_requests,
                    look.baseline_requests,
                    e.join(" / ")
                ));
            }
        }
        Report { headline, columns, rows, notes, ..Report::default() }
    }
}

impl fmt::Display for RateLook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.totals;
        write!(
            f,
            "canary {}/{} bad, baseline {}/{} bad over {} bins; e-value {:.3} (max {:.3}, boundary {})",
            t.canary_bad,
            t.canary_total,
            t.baseline_bad,
            t.baseline_total,
            self.bins,
            self.e_value,
            self.max_e_value,
            self.boundary
        )?;
        if let Some(at) = self.rejected_at {
            write!(f, ", crossed at bin {at}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(alpha: f64, allowed: f64) -> RateTest {
        RateTest::new(alpha, allowed).unwrap()
    }

    #[test]
    fn a_bin_without_bad_events_or_without_a_side_changes_nothing() {
        let t = test(0.01, 1.0);
        let quiet = RateBin { canary_total: 100, canary_bad: 0, baseline_total: 300, baseline_bad: 0 };
        let one_sided = RateBin { canary_total: 0, canary_bad: 0, baseline_total: 300, baseline_bad: 9 };
        let look = t.look(&[quiet, one_sided, quiet]);
        assert_eq!((look.e_value, look.max_e_value, look.rejected_at), (1.0, 1.0, None));
        assert_eq!(look.totals.baseline_bad, 9);
    }

    #[test]
    fn bad_events_on_the_canary_alone_reject_after_a_handful() {
        // One canary host beside three baseline hosts, every bad event on the canary.
        let bin = RateBin { canary_total: 20, canary_bad: 1, baseline_total: 60, baseline_bad: 0 };
        let look = test(0.01, 1.0).look(&[bin; 10]);
        let at = look.rejected_at.expect("rejected");
        assert!((4..=7).contains(&at), "{look}");
        // Each bad event where a quarter is expected multiplies the strongest ratio by
        // about 3.6: not rejected on the first bins.
        assert!(!test(0.01, 1.0).look(&[bin; 3]).rejected());
    }

    #[test]
    fn bad_events_in_proportion_to_traffic_never_build_evidence() {
        let bin = RateBin { canary_total: 100, canary_bad: 1, baseline_total: 300, baseline_bad: 3 };
        let look = test(0.01, 1.0).look(&vec![bin; 1000]);
        assert!(!look.rejected(), "{look}");
        assert!(look.e_value < 1.0, "{look}");
        assert_eq!(look.ratio(), Some(1.0));
    }

    #[test]
    fn the_allowed_ratio_is_what_a_good_release_may_reach() {
        // The canary at 1.2 times the baseline's rate.
        let bin = RateBin { canary_total: 100, canary_bad: 12, baseline_total: 100, baseline_bad: 10 };
        assert!(test(0.01, 1.0).look(&vec![bin; 400]).rejected());
        assert!(!test(0.01, 1.25).look(&vec![bin; 400]).rejected());
    }

    #[test]
    fn configurations_that_cannot_hold_are_refused() {
        assert_eq!(RateTest::new(0.0, 1.0), Err(SequentialError::Alpha(0.0)));
        assert_eq!(RateTest::new(0.7, 1.0), Err(SequentialError::Alpha(0.7)));
        assert!(RateTest::new(f64::NAN, 1.0).is_err());
        assert_eq!(RateTest::new(0.01, 0.5), Err(SequentialError::AllowedRatio(0.5)));
        assert!(RateTest::new(0.01, f64::INFINITY).is_err());
    }

    fn traffic(requests: u64, errors: u64, latency: &[u64]) -> Traffic {
        Traffic { requests, errors, latency: latency.to_vec() }
    }

    #[test]
    fn the_judge_fails_on_errors_at_once_and_passes_only_with_enough_requests() {
        let judge = SequentialJudge::new(0.01).unwrap();
        let good = JudgeBin { canary: traffic(20, 0, &[18, 2]), baseline: traffic(60, 0, &[54, 6]) };
        let verdict = judge.judge(&vec![good.clone(); 2]);
        assert_eq!(verdict.outcome, Outcome::Marginal, "{}", verdict.reason);
        let verdict = judge.judge(&vec![good.clone(); 10]);
        assert_eq!(verdict.outcome, Outcome::Pass, "{}", verdict.reason);
        let bad = JudgeBin { canary: traffic(20, 2, &[18, 2]), baseline: traffic(60, 0, &[54, 6]) };
        let verdict = judge.judge(&[good.clone(), bad.clone(), bad.clone(), bad.clone(), bad]);
        assert_eq!(verdict.outcome, Outcome::Fail);
        assert!(verdict.reason.contains("`error_rate` is High"), "{}", verdict.reason);
        let report = verdict.report();
        assert_eq!(report.columns[0], "metric");
        assert_eq!(report.columns[4], "result");
        assert_eq!(report.rows[0][0], "error_rate");
        assert_eq!(report.rows[0][4], "High");
        assert!(report.rows.iter().all(|r| r.len() == report.columns.len()));
        // Without any latency histogram the latency row has no data and never fails.
        let bare = JudgeBin { canary: traffic(20, 0, &[]), baseline: traffic(60, 0, &[]) };
        let verdict = judge.judge(&vec![bare; 10]);
        assert_eq!(verdict.outcome, Outcome::Pass);
        assert_eq!(verdict.report().rows[1][4], "NoData");
    }

    #[test]
    fn the_manifest_s_metrics_are_the_tests_and_only_a_critical_one_rolls_back() {
        let slow_tail =
            JudgeBin { canary: traffic(100, 0, &[50, 30, 10, 10]), baseline: traffic(300, 0, &[150, 90, 57, 3]) };
        let mut settings = JudgeSettings::defaults(JudgeMethod::Sequential);
        let judge = SequentialJudge::from_settings(&settings).unwrap();
        let verdict = judge.judge(&vec![slow_tail.clone(); 20]);
        assert_eq!(verdict.outcome, Outcome::Fail, "latency is critical by default: {}", verdict.reason);
        // The same tail on a latency metric that is not critical holds the one-box.
        settings.metrics[1].critical = false;
        let verdict = SequentialJudge::from_settings(&settings).unwrap().judge(&vec![slow_tail.clone(); 20]);
        assert_eq!(verdict.outcome, Outcome::Marginal, "{}", verdict.reason);
        assert!(verdict.reason.starts_with("held for an operator: `latency_p99_ms` is High"), "{}", verdict.reason);
        assert_eq!(verdict.report().rows[1][3], "no");
        // Without the latency metric it is not tested at all, and errors get all of alpha.
        settings.metrics.truncate(1);
        let errors_only = SequentialJudge::from_settings(&settings).unwrap();
        let verdict = errors_only.judge(&vec![slow_tail; 20]);
        assert_eq!(verdict.outcome, Outcome::Pass, "{}", verdict.reason);
        assert_eq!(verdict.tests.len(), 1);
        assert_eq!(verdict.tests[0].boundary(), 100.0);
        assert_eq!(judge.verdict(&judge.start()).tests[0].boundary(), 200.0);
        // An allowed increase below 1 cannot be tested.
        settings.metrics[0].allowed_increase = 0.9;
        assert_eq!(SequentialJudge::from_settings(&settings), Err(SequentialError::AllowedRatio(0.9)));
    }

    #[test]
    fn a_pass_needs_the_least_samples_on_each_side_and_every_look_is_kept_at_powers_of_two() {
        let judge = SequentialJudge { min_samples: 200, ..SequentialJudge::new(0.01).unwrap() };
        let bin = JudgeBin { canary: traffic(20, 0, &[18, 2]), baseline: traffic(30, 0, &[27, 3]) };
        let verdict = judge.judge(&vec![bin.clone(); 9]);
        assert_eq!(verdict.outcome, Outcome::Marginal, "270 baseline, 180 canary requests: {}", verdict.reason);
        let verdict = judge.judge(&vec![bin; 10]);
        assert_eq!(verdict.outcome, Outcome::Pass, "{}", verdict.reason);
        let bins: Vec<usize> = verdict.looks.iter().map(|l| l.bin).collect();
        assert_eq!(bins, [1, 2, 4, 8, 10]);
        assert_eq!((verdict.looks[4].canary_requests, verdict.looks[4].baseline_requests), (200, 300));
        assert_eq!(verdict.looks[0].e_values.len(), 2);
        let notes = verdict.report().notes;
        assert!(notes.contains("boundaries error_rate 200.000, latency_p99_ms 200.000"), "{notes}");
        assert!(notes.contains("bin 10: canary n 200, baseline n 300, e 1.000 / "), "{notes}");
        // The bin where a test crosses is kept too.
        let bad = JudgeBin { canary: traffic(20, 2, &[18, 2]), baseline: traffic(60, 0, &[54, 6]) };
        let verdict = judge.judge(&vec![bad; 5]);
        let crossed = verdict.tests[0].rejected_at().expect("crossed");
        assert!(verdict.looks.iter().any(|l| l.bin == crossed && l.e_values[0] >= 200.0), "{:?}", verdict.looks);
    }

    #[test]
    fn a_heavier_tail_is_seen_past_the_upper_bounds() {
        // Same median; the canary has 5 % of its requests in the last bucket instead of 1 %.
        let bin = LatencyBin { canary: vec![50, 30, 15, 5], baseline: vec![150, 90, 57, 3] };
        let look = ExceedanceTest { rate: test(0.01, 1.0) }.look(4, &vec![bin; 30]);
        assert!(look.rejected(), "{look:?}");
        assert_eq!(look.strongest(), Some(2), "the slowest bound weighs most");
        let same = LatencyBin { canary: vec![50, 30, 19, 1], baseline: vec![150, 90, 57, 3] };
        assert!(!ExceedanceTest { rate: test(0.01, 1.0) }.look(4, &vec![same; 300]).rejected());
    }
}
