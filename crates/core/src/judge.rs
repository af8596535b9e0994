//! The one-box judge: a statistical canary judge in the manner of Kayenta's NetflixACAJudge.
//!
//! During a one-box bake, the judge compares each metric of the one-box (the canary)
//! with the same metric of the hosts of that region still on the old version (the
//! baseline). It then scores the run and returns a [`Verdict`].
//!
//! Per metric ([`MetricComparison`] in, [`MetricResult`] out):
//!
//! 1. Non-finite values (NaN, ±∞) are dropped with a warning, as Kayenta's `removeNaNs`
//!    does. A sample with fewer than [`MIN_DATA_POINTS`] values gets a warning.
//! 2. An empty canary or baseline sample is [`Classification::NoData`]. Two samples
//!    holding the same multiset of values are a [`Classification::Pass`], and so are
//!    samples where every value is the same.
//! 3. Otherwise a two-sided Mann–Whitney U test ([`RankTest`]) runs. It uses the normal
//!    approximation with tie and continuity correction, the Hodges–Lehmann estimate of
//!    the shift `canary − baseline`, and a confidence interval for that shift.
//! 4. The metric is **High** when the interval's lower bound is above
//!    `+tolerance·|estimate|` and the effect size (`mean(canary) / mean(baseline)`) is
//!    at least `allowed_increase`. It is **Low** when the upper bound is below
//!    `−tolerance·|estimate|` and the effect size is at most `allowed_decrease`.
//!    Otherwise it is **Pass**. A shift only counts in the direction that is bad for
//!    that metric ([`Direction`]): a drop in error rate is a Pass.
//!
//! Then the run is scored:
//!
//! * Each group scores `100 · Pass / (Pass + High + Low)`. Groups are combined by their
//!   weights ([`JudgeConfig::group_weights`]). A group whose metrics all lack data
//!   adds 0, as in Kayenta.
//! * The score is 0 when a critical metric is High, Low or NoData. Kayenta also fails
//!   a critical metric on anything but Pass. The score is also 0 when at least half
//!   of all metrics are NoData.
//! * The outcome is [`Outcome::Pass`] when the score is at least `pass_score`,
//!   [`Outcome::Marginal`] when it is at least `marginal_score`, and
//!   [`Outcome::Fail`] below that.
//!
//! # The confidence interval
//!
//! R's `wilcox.test(conf.int = TRUE, exact = FALSE)` and Kayenta (which ports it) invert
//! the test with a root search at an absolute tolerance of 1e-4. The search runs on
//! the continuity-corrected statistic as a function of the shift `d`. That function is
//! a step function that jumps only where `d` equals a pairwise difference. Between
//! jumps, only the ties inside each sample count. So the root is always an order
//! statistic `D(k)` of the `n·m` sorted differences `canary[i] − baseline[j]`, and
//! this module computes it exactly rather than within 1e-4:
//!
//! ```text
//! σ  = sqrt(n·m/12 · ((N + 1) − (Tc + Tb) / (N·(N − 1)))),  N = n + m,
//!     Tc, Tb = Σ (t³ − t) over the groups of tied values inside each sample
//! z  = Φ⁻¹(1 − (1 − confidence)/2)
//! k  = ceil(n·m/2 − 1/2 − z·σ)
//! CI = [D(k), D(n·m + 1 − k)], each index clamped to [1, n·m]
//! ```
//!
//! When `k < 1`, the samples are too small to reach the confidence level. The interval
//! is then the full range of differences, which is also what R returns. The result
//! carries a warning, because such an interval is much less certain than its
//! nominal level.
//!
//! # Cost
//!
//! Nothing is `O(n·m)` in memory. The samples are sorted once. Each order statistic
//! of the differences (the median and the two bounds) is then found by a binary search
//! over the bit patterns of `f64`. Each of its at most 64 steps counts the differences
//! `≤ v` along the staircase of the sorted samples in `O(n + m)`. That is exact for any
//! sample size, needs no sampling and allocates nothing beyond the samples. A comparison
//! of 2 500 canary against 1 800 baseline points (4.5 M pairs) takes a few
//! milliseconds.
//!
//! The U test's p-value follows `scipy.stats.mannwhitneyu(method='asymptotic')`. Kayenta
//! gets its p-value from Apache Commons Math, which applies neither correction.
//! Kayenta's decision never used that p-value, and neither does this module: it is
//! only reported.

use std::fmt;

use statrs::distribution::{ContinuousCDF, Normal};

/// The group of metrics that name none.
pub const DEFAULT_GROUP: &str = "default";

/// Below this many data points in a sample, a metric's result carries a warning.
pub const MIN_DATA_POINTS: usize = 50;

/// How the judge decides. `JudgeConfig::default()` gives Kayenta's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeConfig {
    /// The confidence level of the interval for the shift, in (0, 1). Default 0.98.
    pub confidence: f64,
    /// The relative tolerance on the shift: the interval must clear
    /// `±tolerance·|estimate|` before a metric is High or Low. Default 0.25.
    pub tolerance: f64,
    /// The least score that passes. Default 75.
    pub pass_score: f64,
    /// The least score that is marginal rather than failing. Default 50.
    pub marginal_score: f64,
    /// Weights of groups, in percent as Kayenta takes them. Groups not listed share
    /// what is left of 100 equally. The score divides by the sum of the weights, so
    /// weights that do not add up to 100 still give a score in 0–100. Default: none,
    /// so every group weighs the same.
    pub group_weights: Vec<GroupWeight>,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig { confidence: 0.98, tolerance: 0.25, pass_score: 75.0, marginal_score: 50.0, group_weights: vec![] }
    }
}

/// The weight of one group of metrics in the score, in percent.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupWeight {
    pub group: String,
    pub weight: f64,
}

/// Which way a metric goes when the canary is bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Only a rise is bad (error rate, latency).
    Increase,
    /// Only a fall is bad (throughput, success rate).
    Decrease,
    /// Any shift is bad.
    Either,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Increase => "increase",
            Direction::Decrease => "decrease",
            Direction::Either => "either",
        }
    }

    fn flags_high(self) -> bool {
        matches!(self, Direction::Increase | Direction::Either)
    }

    fn flags_low(self) -> bool {
        matches!(self, Direction::Decrease | Direction::Either)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric, measured on the canary and on the baseline over the same window.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricComparison {
    pub name: String,
    pub canary: Vec<f64>,
    pub baseline: Vec<f64>,
    /// The bad direction. Default [`Direction::Either`].
    pub direction: Direction,
    /// When true, a High, Low or NoData on this metric fails the whole run. Default false.
    pub critical: bool,
    /// The least effect size `mean(canary) / mean(baseline)` for a High. Default 1.0.
    /// Like Kayenta's, the ratio only makes sense for metrics that are never negative:
    /// rates, latencies, counts.
    pub allowed_increase: f64,
    /// The greatest effect size for a Low. Default 1.0.
    pub allowed_decrease: f64,
    /// The scoring group. `None` is [`DEFAULT_GROUP`].
    pub group: Option<String>,
}

impl MetricComparison {
    /// A non-critical metric in the default group, where either direction is bad,
    /// with effect-size thresholds of 1.0. Set the public fields to change any of that.
    pub fn new(name: impl Into<String>, canary: Vec<f64>, baseline: Vec<f64>) -> Self {
        MetricComparison {
            name: name.into(),
            canary,
            baseline,
            direction: Direction::Either,
            critical: false,
            allowed_increase: 1.0,
            allowed_decrease: 1.0,
            group: None,
        }
    }
}

/// A metric's judgement, after [`Direction`] is applied: a High on a metric where
/// only a decrease is bad is a Pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Classification {
    Pass,
    /// The canary is significantly higher, in a direction that is bad.
    High,
    /// The canary is significantly lower, in a direction that is bad.
    Low,
    /// The canary or the baseline has no data.
    NoData,
}

impl Classification {
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::Pass => "Pass",
            Classification::High => "High",
            Classification::Low => "Low",
            Classification::NoData => "NoData",
        }
    }

    /// True for High and Low.
    pub fn is_failure(self) -> bool {
        matches!(self, Classification::High | Classification::Low)
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A two-sided Mann–Whitney U test of canary against baseline, with the Hodges–Lehmann
/// estimate of the shift `canary − baseline` and its confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RankTest {
    /// U of the canary: pairs where the canary value is greater, plus half the tied pairs.
    pub u: f64,
    /// Two-sided, normal approximation with tie and continuity correction. 1 when every
    /// value is tied.
    pub p_value: f64,
    /// The Hodges–Lehmann estimate of `canary − baseline`: the median of all pairwise
    /// differences.
    pub estimate: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// The confidence level the interval was computed for.
    pub confidence: f64,
    /// True when the samples are too small for that level and the interval was widened to
    /// the full range of differences (see the module documentation).
    pub ci_truncated: bool,
}

/// One metric's row in the verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricResult {
    pub name: String,
    pub group: String,
    pub direction: Direction,
    pub critical: bool,
    pub classification: Classification,
    /// Finite values used from each sample.
    pub canary_count: usize,
    pub baseline_count: usize,
    /// `None` for an empty sample.
    pub canary_mean: Option<f64>,
    pub baseline_mean: Option<f64>,
    /// `mean(canary) / mean(baseline)`. `None` when a sample is empty or the baseline's
    /// mean is 0. When it is `None`, the effect-size gate does not hold a High or Low
    /// back.
    pub effect_size: Option<f64>,
    /// The gates this metric was held to.
    pub allowed_increase: f64,
    pub allowed_decrease: f64,
    /// `None` when a sample is empty.
    pub test: Option<RankTest>,
    /// One sentence on why the metric got its classification.
    pub reason: String,
    pub warnings: Vec<String>,
}

impl fmt::Display for MetricResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.name, self.classification, self.reason)
    }
}

/// The outcome of a judged run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    Pass,
    Marginal,
    Fail,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Marginal => "MARGINAL",
            Outcome::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One group's part of the score.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupScore {
    pub name: String,
    /// The group's share of the score, in percent of all weights.
    pub weight: f64,
    /// `100 · pass / (pass + high + low)`. `None` when every metric of the group is
    /// NoData; such a group adds 0.
    pub score: Option<f64>,
    pub pass: usize,
    pub high: usize,
    pub low: usize,
    pub no_data: usize,
}

/// The judge's answer for one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// 0–100.
    pub score: f64,
    pub outcome: Outcome,
    /// The groups in the order their first metric appears.
    pub groups: Vec<GroupScore>,
    /// The metrics in input order.
    pub metrics: Vec<MetricResult>,
    /// Why the score is what it is.
    pub reason: String,
    /// The thresholds the score was held to, so that the verdict explains itself.
    pub pass_score: f64,
    pub marginal_score: f64,
}

/// Why a configuration or a metric cannot be judged. Each message names the field and
/// what to put there.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum JudgeError {
    #[error("judge confidence {0} is outside (0, 1): use a level such as 0.98")]
    Confidence(f64),
    #[error("judge tolerance {0} must be a finite number >= 0, such as 0.25")]
    Tolerance(f64),
    #[error("judge scores must satisfy 0 <= marginal_score ({marginal}) <= pass_score ({pass}) <= 100")]
    Scores { pass: f64, marginal: f64 },
    #[error("metric `{metric}`: {field} {value} must be a finite number >= 0, such as 1.0")]
    EffectSize { metric: String, field: &'static str, value: f64 },
    #[error("metric `{0}` is listed twice: give each metric one comparison")]
    DuplicateMetric(String),
    #[error("group `{group}`: weight {value} must be a finite number >= 0 (percent)")]
    GroupWeight { group: String, value: f64 },
    #[error("group `{0}` has two weights: give it one")]
    DuplicateGroupWeight(String),
    #[error("a weight is given for group `{0}` but no metric is in it: fix the metric's group or drop the weight")]
    UnknownGroup(String),
    #[error("the group weights add up to 0: give at least one group a positive weight")]
    ZeroWeights,
}

/// The metrics the one-box judge compares by Mann–Whitney: per host and data bin, each of
/// `metrics` (the error rate, the p99 latency), as the manifest sets them.
pub fn one_box_metrics(
    metrics: &[crate::manifest::JudgedMetric],
    canary: &[(f64, Option<f64>)],
    baseline: &[(f64, Option<f64>)],
) -> Vec<MetricComparison> {
    use crate::alarm::TrafficMetric;
    metrics
        .iter()
        .filter_map(|m| {
            let values = |points: &[(f64, Option<f64>)]| -> Vec<f64> {
                match m.metric {
                    TrafficMetric::LatencyP99Ms => points.iter().filter_map(|p| p.1).collect(),
                    _ => points.iter().map(|p| p.0).collect(),
                }
            };
            let comparison = MetricComparison {
                direction: m.direction,
                critical: m.critical,
                allowed_increase: m.allowed_increase,
                ..MetricComparison::new(m.metric.as_str(), values(canary), values(baseline))
            };
            // Traffic that reports no latency at all (no buckets from any host) has no
            // latency to compare; the judge's "no data" is for a side that went silent,
            // and would fail every one-box of such a service.
            let unreported = m.metric == TrafficMetric::LatencyP99Ms
                && comparison.canary.is_empty()
                && comparison.baseline.is_empty();
            (!unreported).then_some(comparison)
        })
        .collect()
}

/// Judges a run: classifies every metric, then scores them. See the module
/// documentation for the rules.
///
/// An empty list of metrics gives a score of 0 and [`Outcome::Fail`]: nothing was shown
/// to be safe.
pub fn judge(config: &JudgeConfig, metrics: &[MetricComparison]) -> Result<Verdict, JudgeError> {
    validate(config, metrics)?;
    let z = two_sided_quantile(config.confidence);
    let results: Vec<MetricResult> = metrics.iter().map(|m| classify(config, z, m)).collect();
    let groups = score_groups(config, &results)?;
    let (score, reason) = summarize(&results, &groups);
    let outcome = if score >= config.pass_score {
        Outcome::Pass
    } else if score >= config.marginal_score {
        Outcome::Marginal
    } else {
        Outcome::Fail
    };
    Ok(Verdict {
        score,
        outcome,
        groups,
        metrics: results,
        reason,
        pass_score: config.pass_score,
        marginal_score: config.marginal_score,
    })
}

fn validate(config: &JudgeConfig, metrics: &[MetricComparison]) -> Result<(), JudgeError> {
    if !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(JudgeError::Confidence(config.confidence));
    }
    if !(config.tolerance.is_finite() && config.tolerance >= 0.0) {
        return Err(JudgeError::Tolerance(config.tolerance));
    }
    let (pass, marginal) = (config.pass_score, config.marginal_score);
    if !(0.0 <= marginal && marginal <= pass && pass <= 100.0) {
        return Err(JudgeError::Scores { pass, marginal });
    }
    for (i, m) in metrics.iter().enumerate() {
        if metrics[..i].iter().any(|earlier| earlier.name == m.name) {
            return Err(JudgeError::DuplicateMetric(m.name.clone()));
        }
        for (field, value) in [("allowed_increase", m.allowed_increase), ("allowed_decrease", m.allowed_decrease)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(JudgeError::EffectSize { metric: m.name.clone(), field, value });
            }
        }
    }
    for (i, w) in config.group_weights.iter().enumerate() {
        if !(w.weight.is_finite() && w.weight >= 0.0) {
            return Err(JudgeError::GroupWeight { group: w.group.clone(), value: w.weight });
        }
        if config.group_weights[..i].iter().any(|earlier| earlier.group == w.group) {
            return Err(JudgeError::DuplicateGroupWeight(w.group.clone()));
        }
        if !metrics.iter().any(|m| group_of(m) == w.group) {
            return Err(JudgeError::UnknownGroup(w.group.clone()));
        }
    }
    Ok(())
}

fn group_of(m: &MetricComparison) -> &str {
    m.group.as_deref().unwrap_or(DEFAULT_GROUP)
}

/// `Φ⁻¹(1 − (1 − confidence)/2)`, the `z` of a two-sided interval.
fn two_sided_quantile(confidence: f64) -> f64 {
    Normal::standard().inverse_cdf(1.0 - (1.0 - confidence) / 2.0)
}

/// The finite values of a sample, sorted, with -0.0 made +0.0; and how many were dropped.
fn clean(values: &[f64]) -> (Vec<f64>, usize) {
    let mut kept: Vec<f64> = values.iter().filter(|v| v.is_finite()).map(|v| v + 0.0).collect();
    kept.sort_by(f64::total_cmp);
    let dropped = values.len() - kept.len();
    (kept, dropped)
}

fn mean(sorted: &[f64]) -> Option<f64> {
    if sorted.is_empty() { None } else { Some(sorted.iter().sum::<f64>() / sorted.len() as f64) }
}

fn classify(config: &JudgeConfig, z: f64, m: &MetricComparison) -> MetricResult {
    let (canary, canary_dropped) = clean(&m.canary);
    let (baseline, baseline_dropped) = clean(&m.baseline);
    let mut warnings = Vec::new();
    for (label, dropped) in [("canary", canary_dropped), ("baseline", baseline_dropped)] {
        if dropped > 0 {
            warnings.push(format!("dropped {dropped} non-finite {label} value(s)"));
        }
    }
    for (label, sample) in [("canary", &canary), ("baseline", &baseline)] {
        if !sample.is_empty() && sample.len() < MIN_DATA_POINTS {
            warnings.push(format!(
                "{label} has {} data point(s), fewer than {MIN_DATA_POINTS}: the test has little power",
                sample.len()
            ));
        }
    }
    let canary_mean = mean(&canary);
    let baseline_mean = mean(&baseline);
    let effect_size = match (canary_mean, baseline_mean) {
        (Some(c), Some(b)) if b != 0.0 => Some(c / b),
        _ => None,
    };
    let mut result = MetricResult {
        name: m.name.clone(),
        group: group_of(m).to_owned(),
        direction: m.direction,
        critical: m.critical,
        classification: Classification::NoData,
        canary_count: canary.len(),
        baseline_count: baseline.len(),
        canary_mean,
        baseline_mean,
        effect_size,
        allowed_increase: m.allowed_increase,
        allowed_decrease: m.allowed_decrease,
        test: None,
        reason: String::new(),
        warnings,
    };
    if canary.is_empty() || baseline.is_empty() {
        result.reason = match (canary.is_empty(), baseline.is_empty()) {
            (true, true) => "neither the canary nor the baseline has data",
            (true, false) => "the canary has no data",
            _ => "the baseline has no data",
        }
        .to_owned();
        return result;
    }
    let test = rank_test(&canary, &baseline, z, config.confidence);
    result.test = Some(test);
    if test.ci_truncated {
        result.warnings.push(format!(
            "too few data points for a {} interval: it spans every canary − baseline difference",
            percent(config.confidence)
        ));
    }
    let (classification, reason) = decide(config, m, &canary, &baseline, &test, effect_size);
    result.classification = classification;
    result.reason = reason;
    result
}

fn decide(
    config: &JudgeConfig,
    m: &MetricComparison,
    canary: &[f64],
    baseline: &[f64],
    test: &RankTest,
    effect_size: Option<f64>,
) -> (Classification, String) {
    if canary == baseline {
        return (Classification::Pass, "the canary and baseline samples hold the same values".to_owned());
    }
    // Both samples are sorted and non-empty, so their ends bound every value.
    if canary[0] == canary[canary.len() - 1] && baseline[0] == baseline[baseline.len() - 1] && canary[0] == baseline[0]
    {
        return (Classification::Pass, format!("every value is {}: there is nothing to compare", num(canary[0])));
    }
    let bound = config.tolerance * test.estimate.abs();
    let interval = format!(
        "the {} interval of canary − baseline is [{}, {}]",
        percent(test.confidence),
        num(test.ci_low),
        num(test.ci_high)
    );
    let ratio = effect_size.map_or_else(|| "undefined (baseline mean 0)".to_owned(), num);
    if test.ci_low > bound {
        if !m.direction.flags_high() {
            return (Classification::Pass, format!("higher, but only a decrease is bad: {interval}"));
        }
        if effect_size.is_some_and(|e| e < m.allowed_increase) {
            return (
                Classification::Pass,
                format!(
                    "higher but small: {interval}, above +{}, yet the mean ratio {ratio} is below {}",
                    num(bound),
                    num(m.allowed_increase)
                ),
            );
        }
        return (Classification::High, format!("higher: {interval}, above +{}; mean ratio {ratio}", num(bound)));
    }
    if test.ci_high < -bound {
        if !m.direction.flags_low() {
            return (Classification::Pass, format!("lower, but only an increase is bad: {interval}"));
        }
        if effect_size.is_some_and(|e| e > m.allowed_decrease) {
            return (
                Classification::Pass,
                format!(
                    "lower but small: {interval}, below −{}, yet the mean ratio {ratio} is above {}",
                    num(bound),
                    num(m.allowed_decrease)
                ),
            );
        }
        return (Classification::Low, format!("lower: {interval}, below −{}; mean ratio {ratio}", num(bound)));
    }
    (Classification::Pass, format!("no shift beyond ±{}: {interval}", num(bound)))
}

/// The test on two sorted, non-empty samples of finite values.
fn rank_test(canary: &[f64], baseline: &[f64], z: f64, confidence: f64) -> RankTest {
    let ranks = RankSums::of(canary, baseline);
    let (n, m) = (canary.len() as f64, baseline.len() as f64);
    let big_n = n + m;
    let nm = n * m;
    let u = ranks.twice_u as f64 / 2.0;

    // Tie-corrected standard deviation of U under the null, as scipy computes it.
    let sigma = (nm / 12.0 * ((big_n + 1.0) - ranks.ties_all as f64 / (big_n * (big_n - 1.0)))).sqrt();
    let p_value = if sigma > 0.0 {
        let z_u = (u.max(nm - u) - nm / 2.0 - 0.5) / sigma;
        (2.0 * Normal::standard().sf(z_u)).min(1.0)
    } else {
        // Every value is tied: no evidence of any difference.
        1.0
    };

    // The interval's σ counts ties inside each sample only: at a shift between two
    // pairwise differences, no canary value ties with a baseline value.
    let ties_within = (ranks.ties_canary + ranks.ties_baseline) as f64;
    let sigma_ci = (nm / 12.0 * ((big_n + 1.0) - ties_within / (big_n * (big_n - 1.0)))).sqrt();
    let pairs = canary.len() as u64 * baseline.len() as u64;
    let k = (nm / 2.0 - 0.5 - z * sigma_ci).ceil();
    let ci_truncated = k < 1.0;
    // `k` is at most n·m/2, so it fits in a u64; the casts below saturate for negative k.
    let low_index = (k.max(1.0) as u64).min(pairs);
    let high_index = ((pairs as f64 + 1.0 - k) as u64).clamp(1, pairs);

    let diffs = PairwiseDifferences { canary, baseline };
    let estimate = if pairs % 2 == 1 {
        diffs.kth_smallest(pairs / 2 + 1)
    } else {
        (diffs.kth_smallest(pairs / 2) + diffs.kth_smallest(pairs / 2 + 1)) / 2.0
    };
    RankTest {
        u,
        p_value,
        estimate,
        ci_low: diffs.kth_smallest(low_index),
        ci_high: diffs.kth_smallest(high_index),
        confidence,
        ci_truncated,
    }
}

/// U and the tie terms `Σ (t³ − t)` from one merge of the two sorted samples.
struct RankSums {
    /// 2·U of the canary, kept whole so that it is exact.
    twice_u: u64,
    ties_all: u128,
    ties_canary: u128,
    ties_baseline: u128,
}

impl RankSums {
    fn of(canary: &[f64], baseline: &[f64]) -> RankSums {
        let cube = |t: usize| {
            let t = t as u128;
            t * t * t - t
        };
        let mut sums = RankSums { twice_u: 0, ties_all: 0, ties_canary: 0, ties_baseline: 0 };
        let (mut i, mut j) = (0, 0);
        while i < canary.len() || j < baseline.len() {
            let v = match (canary.get(i), baseline.get(j)) {
                (Some(&c), Some(&b)) => c.min(b),
                (Some(&c), None) => c,
                (None, Some(&b)) => b,
                (None, None) => break,
            };
            let c = canary[i..].iter().take_while(|&&x| x == v).count();
            let b = baseline[j..].iter().take_while(|&&x| x == v).count();
            // Each of the c canary values beats the j baseline values below v and ties with b.
            sums.twice_u += c as u64 * (2 * j as u64 + b as u64);
            sums.ties_all += cube(c + b);
            sums.ties_canary += cube(c);
            sums.ties_baseline += cube(b);
            i += c;
            j += b;
        }
        sums
    }
}

/// The n·m differences `canary[i] − baseline[j]` of two sorted samples, never materialized.
/// The matrix is sorted along both axes: it grows with `i` and shrinks with `j`.
/// IEEE subtraction is monotone, so that holds exactly in floating point too.
struct PairwiseDifferences<'a> {
    canary: &'a [f64],
    baseline: &'a [f64],
}

impl PairwiseDifferences<'_> {
    /// How many differences are `<= v`, in `O(n + m)`, walking the staircase.
    fn count_at_most(&self, v: f64) -> u64 {
        let m = self.baseline.len();
        let mut j = 0;
        let mut count = 0u64;
        for &c in self.canary {
            // For a larger canary value, the first baseline index with c − b <= v only moves right.
            while j < m && c - self.baseline[j] > v {
                j += 1;
            }
            count += (m - j) as u64;
        }
        count
    }

    /// The k-th smallest difference, `1 <= k <= n·m`.
    ///
    /// It binary-searches the least `f64` `v` with at least `k` differences `<= v`. The
    /// search runs over `f64` bit patterns mapped to a monotone `u64` order. That `v` is
    /// itself one of the differences, because the count only steps up at a difference.
    fn kth_smallest(&self, k: u64) -> f64 {
        let smallest = self.canary[0] - self.baseline[self.baseline.len() - 1];
        let largest = self.canary[self.canary.len() - 1] - self.baseline[0];
        let (mut lo, mut hi) = (order_key(smallest), order_key(largest));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.count_at_most(from_order_key(mid)) >= k {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        // -0.0 and +0.0 compare equal, and the search can land on either; report +0.0.
        from_order_key(lo) + 0.0
    }
}

/// Maps an `f64` to a `u64` that sorts the same way (−∞ < … < −0 < +0 < … < +∞).
fn order_key(v: f64) -> u64 {
    let bits = v.to_bits();
    if bits >> 63 == 1 { !bits } else { bits | 1 << 63 }
}

fn from_order_key(key: u64) -> f64 {
    if key >> 63 == 1 { f64::from_bits(key & !(1 << 63)) } else { f64::from_bits(!key) }
}

fn score_groups(config: &JudgeConfig, results: &[MetricResult]) -> Result<Vec<GroupScore>, JudgeError> {
    let mut groups: Vec<GroupScore> = Vec::new();
    for r in results {
        let index = match groups.iter().position(|g| g.name == r.group) {
            Some(index) => index,
            None => {
                groups.push(GroupScore {
                    name: r.group.clone(),
                    weight: 0.0,
                    score: None,
                    pass: 0,
                    high: 0,
                    low: 0,
                    no_data: 0,
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[index];
        match r.classification {
            Classification::Pass => g.pass += 1,
            Classification::High => g.high += 1,
            Classification::Low => g.low += 1,
            Classification::NoData => g.no_data += 1,
        }
    }
    // Kayenta's weights: explicit ones in percent, the rest of 100 shared equally.
    let explicit = |name: &str| config.group_weights.iter().find(|w| w.group == name).map(|w| w.weight);
    let explicit_total: f64 = config.group_weights.iter().map(|w| w.weight).sum();
    let unweighted = groups.iter().filter(|g| explicit(&g.name).is_none()).count();
    let share = if unweighted > 0 { (100.0 - explicit_total).max(0.0) / unweighted as f64 } else { 0.0 };
    let mut total = 0.0;
    for g in &mut groups {
        g.weight = explicit(&g.name).unwrap_or(share);
        total += g.weight;
        let classified = g.pass + g.high + g.low;
        g.score = (classified > 0).then(|| 100.0 * g.pass as f64 / classified as f64);
    }
    if !groups.is_empty() && total <= 0.0 {
        return Err(JudgeError::ZeroWeights);
    }
    for g in &mut groups {
        g.weight = 100.0 * g.weight / total;
    }
    Ok(groups)
}

fn summarize(results: &[MetricResult], groups: &[GroupScore]) -> (f64, String) {
    if results.is_empty() {
        return (0.0, "no metrics to judge".to_owned());
    }
    let critical: Vec<String> = results
        .iter()
        .filter(|r| r.critical && r.classification != Classification::Pass)
        .map(|r| format!("`{}` is {}", r.name, r.classification))
        .collect();
    if !critical.is_empty() {
        return (0.0, format!("critical metric failed: {}", critical.join(", ")));
    }
    let no_data = results.iter().filter(|r| r.classification == Classification::NoData).count();
    if 2 * no_data >= results.len() {
        return (0.0, format!("{no_data} of {} metrics have no data (50 % or more)", results.len()));
    }
    let score: f64 = groups.iter().map(|g| g.score.unwrap_or(0.0) * g.weight / 100.0).sum();
    let pass = results.iter().filter(|r| r.classification == Classification::Pass).count();
    let classified = results.len() - no_data;
    let mut reason = format!("{pass} of {classified} metrics with data pass");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.classification.is_failure())
        .map(|r| format!("`{}` {}", r.name, r.classification))
        .collect();
    if !failed.is_empty() {
        reason.push_str(&format!("; {}", failed.join(", ")));
    }
    if no_data > 0 {
        reason.push_str(&format!("; {no_data} without data"));
    }
    (score, reason)
}

/// Renders the verdict as a summary line, the metric table, the groups and the warnings.
/// A verdict's report as data: what [`Verdict`]'s `Display` prints, in parts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// `verdict …: score … (pass >= …, marginal >= …): reason`.
    pub headline: String,
    /// The table's column names: `metric`, `group`, `bad if`, `critical`, `result`, then
    /// the figures.
    pub columns: Vec<String>,
    /// One row of cells per metric, in the columns' order.
    pub rows: Vec<Vec<String>>,
    /// What follows the table, as printed: groups, reasons, warnings.
    pub notes: String,
    /// The hosts on each side, when the caller knows them (a judge sees numbers only):
    /// the one-box, and the baseline it was compared with.
    pub canary_hosts: Vec<String>,
    pub baseline_hosts: Vec<String>,
    /// The versions the baseline hosts ran while they were compared.
    pub baseline_versions: Vec<String>,
}

impl Verdict {
    /// One line for a timeline: score, outcome and why.
    pub fn summary(&self) -> String {
        format!("score {:.0} ({}): {}", self.score, self.outcome, self.reason)
    }

    /// The report in parts, each cell as `Display` prints it.
    pub fn report(&self) -> Report {
        let headline = format!(
            "verdict {}: score {:.1} (pass >= {}, marginal >= {}): {}",
            self.outcome,
            self.score,
            num(self.pass_score),
            num(self.marginal_score),
            self.reason
        );
        let confidence = self.metrics.iter().find_map(|m| m.test.map(|t| t.confidence));
        let ci_header = confidence.map_or_else(|| "CI".to_owned(), |c| format!("{} CI", percent(c)));
        let columns = [
            "metric",
            "group",
            "bad if",
            "critical",
            "result",
            "canary n",
            "canary mean",
            "baseline n",
            "baseline mean",
            "ratio",
            "shift (HL)",
            &ci_header,
            "p",
            "U",
        ]
        .map(str::to_owned)
        .to_vec();
        let rows = self
            .metrics
            .iter()
            .map(|m| {
                let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), num);
                let t = m.test;
                vec![
                    m.name.clone(),
                    m.group.clone(),
                    m.direction.to_string(),
                    if m.critical { "yes" } else { "no" }.to_owned(),
                    m.classification.to_string(),
                    m.canary_count.to_string(),
                    opt(m.canary_mean),
                    m.baseline_count.to_string(),
                    opt(m.baseline_mean),
                    opt(m.effect_size),
                    opt(t.map(|t| t.estimate)),
                    t.map_or_else(|| "-".to_owned(), |t| format!("[{}, {}]", num(t.ci_low), num(t.ci_high))),
                    t.map_or_else(|| "-".to_owned(), |t| p_value(t.p_value)),
                    opt(t.map(|t| t.u)),
                ]
            })
            .collect();
        let mut notes = String::new();
        use fmt::Write as _;
        if self.groups.len() > 1 {
            notes.push_str("groups:\n");
            for g in &self.groups {
                let score = g.score.map_or_else(|| "no data".to_owned(), |s| format!("{s:.1}"));
                let _ = writeln!(
                    notes,
                    "  {}: score {score}, weight {:.1} % ({} pass, {} high, {} low, {} no data)",
                    g.name, g.weight, g.pass, g.high, g.low, g.no_data
                );
            }
        }
        notes.push_str("reasons:\n");
        for m in &self.metrics {
            let _ = writeln!(notes, "  {m}");
        }
        if self.metrics.iter().any(|m| !m.warnings.is_empty()) {
            notes.push_str("warnings:\n");
            for m in &self.metrics {
                for w in &m.warnings {
                    let _ = writeln!(notes, "  {}: {w}", m.name);
                }
            }
        }
        Report { headline, columns, rows, notes, ..Report::default() }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report().fmt(f)
    }
}

/// The headline, the table (the first five columns words, the rest numbers) and the notes.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline)?;
        write_table(f, std::iter::once(&self.columns).chain(&self.rows))?;
        f.write_str(&self.notes)?;
        if !self.canary_hosts.is_empty() || !self.baseline_hosts.is_empty() {
            writeln!(
                f,
                "compared: canary {} against baseline {} (on {})",
                hosts(&self.canary_hosts),
                hosts(&self.baseline_hosts),
                if self.baseline_versions.is_empty() { "-".to_owned() } else { self.baseline_versions.join(", ") }
            )?;
        }
        Ok(())
    }
}

/// `a, b and 3 more` for a list of hosts; `none` for an empty one.
fn hosts(names: &[String]) -> String {
    const SHOWN: usize = 8;
    match names.len() {
        0 => "none".to_owned(),
        n if n <= SHOWN => names.join(", "),
        n => format!("{} and {} more", names[..SHOWN].join(", "), n - SHOWN),
    }
}

/// Left-aligned text columns, numbers right-aligned, two spaces apart.
fn write_table<'r>(f: &mut fmt::Formatter<'_>, rows: impl Iterator<Item = &'r Vec<String>> + Clone) -> fmt::Result {
    let mut widths = Vec::new();
    for row in rows.clone() {
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, &w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(w - cell.chars().count());
            // Columns 0–4 are words; the rest are numbers.
            if i < 5 {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        writeln!(f, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Four significant digits, plain notation for magnitudes from 1e-3 to 1e6.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{}", v + 0.0);
    }
    let magnitude = v.abs().log10().floor();
    if (-3.0..6.0).contains(&magnitude) {
        let decimals = (3.0 - magnitude).max(0.0) as usize;
        let s = format!("{v:.decimals$}");
        // Drop trailing zeros after the point: 0.2500 → 0.25, 2.000 → 2.
        if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
    } else {
        format!("{v:.3e}")
    }
}

fn p_value(p: f64) -> String {
    if p < 1e-3 { format!("{p:.2e}") } else { format!("{p:.3}") }
}

fn percent(level: f64) -> String {
    format!("{} %", num(level * 100.0))
}
