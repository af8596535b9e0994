//! The one-box judge as a specification: statistics checked against independently
//! computed reference values, then the judging rules scenario by scenario.

use rollwave_core::judge::*;
use rollwave_core::manifest::{JudgeMethod, JudgeSettings, JudgedMetric};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// Reference values (tests/data/judge_reference.py: scipy, numpy, cross-checked with R)
// ---------------------------------------------------------------------------------------

const REFERENCE: &str = include_str!("data/judge_reference.json");

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().expect("an array of numbers").iter().map(|x| x.as_f64().expect("a number")).collect()
}

/// Equal within `rel` of the larger magnitude. Exact zeros must match exactly.
fn assert_close(case: &str, what: &str, actual: f64, expected: f64, rel: f64) {
    let ok = actual == expected || (actual - expected).abs() <= rel * actual.abs().max(expected.abs());
    assert!(ok, "{case}: {what} = {actual:e}, reference {expected:e} (relative tolerance {rel:e})");
}

fn single_metric(canary: Vec<f64>, baseline: Vec<f64>, confidence: f64) -> MetricResult {
    let config = JudgeConfig { confidence, ..JudgeConfig::default() };
    let verdict = judge(&config, &[MetricComparison::new("m", canary, baseline)]).expect("valid input");
    verdict.metrics.into_iter().next().expect("one metric")
}

#[test]
fn statistics_match_the_reference_values() {
    let doc: Value = serde_json::from_str(REFERENCE).expect("reference JSON parses");
    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10, "the reference file lost its cases");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let canary = numbers(&case["canary"]);
        let baseline = numbers(&case["baseline"]);
        let confidence = case["confidence"].as_f64().expect("confidence");
        let r = single_metric(canary, baseline, confidence);
        let t = r.test.unwrap_or_else(|| panic!("{name}: no test result"));
        // U is a multiple of 1/2 and counted exactly on both sides.
        assert_eq!(t.u, case["u"].as_f64().expect("u"), "{name}: U");
        // The estimate and the bounds are pairwise differences, or the mean of two, made
        // with the same IEEE operations as numpy's. They must match to the last bit or
        // so (1e-15 leaves room for a one-ulp parse). That catches an order statistic off
        // by one rank even among differences that are equal on paper, like
        // 100.3 − 100.0 and 50.3 − 50.0, which are ~1e-14 apart.
        for (what, actual, key) in [
            ("Hodges-Lehmann estimate", t.estimate, "estimate"),
            ("CI low", t.ci_low, "ci_low"),
            ("CI high", t.ci_high, "ci_high"),
        ] {
            assert_close(name, what, actual, case[key].as_f64().expect(key), 1e-15);
        }
        // statrs' erfc is good to about 1e-10 relative (checked against mpmath: 8.6e-11
        // at z = 1). scipy's ndtr is good to about 1e-15. So p-values agree to about 1e-10,
        // inside this 1e-9.
        assert_close(name, "p-value", t.p_value, case["p_value"].as_f64().expect("p_value"), 1e-9);
        // numpy-free means: math.fsum against a plain sum.
        assert_close(name, "canary mean", r.canary_mean.expect("mean"), case["canary_mean"].as_f64().unwrap(), 1e-9);
        assert_close(
            name,
            "baseline mean",
            r.baseline_mean.expect("mean"),
            case["baseline_mean"].as_f64().unwrap(),
            1e-9,
        );
        let k = case["ci_index"].as_i64().expect("ci_index");
        assert_eq!(t.ci_truncated, k < 1, "{name}: truncation of the interval (k = {k})");
        assert_eq!(t.confidence, confidence);
    }
}

#[test]
fn the_reference_covers_what_it_claims() {
    let doc: Value = serde_json::from_str(REFERENCE).unwrap();
    let names: Vec<&str> = doc["cases"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for wanted in [
        "ties_small_integers",
        "unequal_sizes",
        "clear_shift_up_latency",
        "clear_shift_down_throughput",
        "identical_samples",
        "tiny_one_vs_one",
        "tiny_two_vs_three",
        "zero_inflated_error_rate",
        "large_2500_vs_1800",
    ] {
        assert!(names.contains(&wanted), "reference case {wanted} is missing");
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// A deterministic, roughly normal sample: `center ± spread` (splitmix64, sum of four
/// uniforms). Tests only; the judge itself uses no randomness.
fn sample(n: usize, center: f64, spread: f64, seed: u64) -> Vec<f64> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n).map(|_| center + spread * ((next() + next() + next() + next()) - 2.0)).collect()
}

/// A metric whose canary and baseline come from the same distribution.
fn steady(name: &str, seed: u64) -> MetricComparison {
    MetricComparison::new(name, sample(120, 100.0, 10.0, seed), sample(120, 100.0, 10.0, seed + 1000))
}

/// Error rate around 2 % on the canary against 1 % on the baseline.
fn error_rate_doubled() -> MetricComparison {
    MetricComparison {
        direction: Direction::Increase,
        ..MetricComparison::new("error_rate", sample(120, 0.02, 0.004, 1), sample(120, 0.01, 0.002, 2))
    }
}

fn run(metrics: &[MetricComparison]) -> Verdict {
    judge(&JudgeConfig::default(), metrics).expect("valid input")
}

fn classification_of(v: &Verdict, name: &str) -> Classification {
    v.metrics.iter().find(|m| m.name == name).unwrap().classification
}

#[test]
fn steady_metrics_pass_with_full_score() {
    let v = run(&[steady("latency_p50", 10), steady("latency_p99", 20), steady("cpu", 30)]);
    assert_eq!(v.score, 100.0);
    assert_eq!(v.outcome, Outcome::Pass);
    assert!(v.metrics.iter().all(|m| m.classification == Classification::Pass), "{v}");
    assert_eq!(v.reason, "3 of 3 metrics with data pass");
}

#[test]
fn critical_error_rate_rise_fails_the_run_with_score_zero() {
    let critical = MetricComparison { critical: true, ..error_rate_doubled() };
    let v = run(&[critical, steady("latency_p50", 10), steady("latency_p99", 20), steady("cpu", 30)]);
    assert_eq!(classification_of(&v, "error_rate"), Classification::High);
    assert_eq!(v.score, 0.0);
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reason, "critical metric failed: `error_rate` is High");
    let m = &v.metrics[0];
    let t = m.test.unwrap();
    assert!(t.p_value < 1e-10, "p = {}", t.p_value);
    assert!(t.ci_low > 0.25 * t.estimate.abs());
    assert!(m.effect_size.unwrap() > 1.5);
    assert!(m.reason.starts_with("higher: the 98 % interval of canary − baseline is ["), "{}", m.reason);
}

#[test]
fn the_same_rise_on_a_non_critical_metric_only_lowers_the_score() {
    // 3 of 4 pass: 75, exactly the pass threshold.
    let v = run(&[error_rate_doubled(), steady("latency_p50", 10), steady("latency_p99", 20), steady("cpu", 30)]);
    assert_eq!(classification_of(&v, "error_rate"), Classification::High);
    assert_eq!(v.score, 75.0);
    assert_eq!(v.outcome, Outcome::Pass);
    assert_eq!(v.reason, "3 of 4 metrics with data pass; `error_rate` High");
}

#[test]
fn two_of_three_is_marginal_and_one_of_three_fails() {
    let slower = |name: &str, seed| MetricComparison {
        direction: Direction::Increase,
        ..MetricComparison::new(name, sample(100, 150.0, 10.0, seed), sample(100, 100.0, 10.0, seed + 1))
    };
    let v = run(&[slower("latency_p99", 40), steady("latency_p50", 10), steady("cpu", 30)]);
    assert!((v.score - 200.0 / 3.0).abs() < 1e-12, "{}", v.score);
    assert_eq!(v.outcome, Outcome::Marginal);

    let v = run(&[slower("latency_p99", 40), slower("latency_p90", 50), steady("cpu", 30)]);
    assert!((v.score - 100.0 / 3.0).abs() < 1e-12, "{}", v.score);
    assert_eq!(v.outcome, Outcome::Fail);
}

#[test]
fn half_the_metrics_without_data_scores_zero() {
    let empty = |name: &str| MetricComparison::new(name, vec![], sample(80, 1.0, 0.1, 5));
    let v = run(&[empty("a"), empty("b"), steady("c", 10), steady("d", 20)]);
    assert_eq!(classification_of(&v, "a"), Classification::NoData);
    assert_eq!(v.score, 0.0);
    assert_eq!(v.outcome, Outcome::Fail);
    assert_eq!(v.reason, "2 of 4 metrics have no data (50 % or more)");
    let a = &v.metrics[0];
    assert_eq!(a.test, None);
    assert_eq!(a.canary_mean, None);
    assert_eq!(a.reason, "the canary has no data");
}

#[test]
fn fewer_than_half_without_data_scores_the_rest() {
    let v = run(&[MetricComparison::new("a", sample(80, 1.0, 0.1, 5), vec![]), steady("c", 10), steady("d", 20)]);
    assert_eq!(classification_of(&v, "a"), Classification::NoData);
    assert_eq!(v.metrics[0].reason, "the baseline has no data");
    assert_eq!(v.score, 100.0);
    assert_eq!(v.reason, "2 of 2 metrics with data pass; 1 without data");
}

#[test]
fn a_critical_metric_without_data_fails_the_run() {
    let blind = MetricComparison { critical: true, ..MetricComparison::new("error_rate", vec![], vec![]) };
    let v = run(&[blind, steady("b", 10), steady("c", 20), steady("d", 30)]);
    assert_eq!(v.score, 0.0);
    assert_eq!(v.reason, "critical metric failed: `error_rate` is NoData");
    assert_eq!(v.metrics[0].reason, "neither the canary nor the baseline has data");
}

#[test]
fn no_metrics_at_all_fail() {
    let v = run(&[]);
    assert_eq!((v.score, v.outcome), (0.0, Outcome::Fail));
    assert_eq!(v.reason, "no metrics to judge");
}

#[test]
fn only_the_bad_direction_counts() {
    // The canary is clearly lower.
    let lower = |direction| MetricComparison {
        direction,
        critical: true,
        ..MetricComparison::new("m", sample(100, 70.0, 5.0, 7), sample(100, 100.0, 5.0, 8))
    };
    let v = run(&[lower(Direction::Increase)]);
    assert_eq!(v.metrics[0].classification, Classification::Pass);
    assert!(v.metrics[0].reason.starts_with("lower, but only an increase is bad"), "{}", v.metrics[0].reason);
    assert_eq!(v.score, 100.0);
    for direction in [Direction::Decrease, Direction::Either] {
        let v = run(&[lower(direction)]);
        assert_eq!(v.metrics[0].classification, Classification::Low, "{direction}");
        assert_eq!(v.score, 0.0);
    }

    // The canary is clearly higher.
    let higher = |direction| MetricComparison {
        direction,
        ..MetricComparison::new("m", sample(100, 130.0, 5.0, 7), sample(100, 100.0, 5.0, 8))
    };
    assert_eq!(run(&[higher(Direction::Decrease)]).metrics[0].classification, Classification::Pass);
    assert_eq!(run(&[higher(Direction::Increase)]).metrics[0].classification, Classification::High);
    assert_eq!(run(&[higher(Direction::Either)]).metrics[0].classification, Classification::High);
}

#[test]
fn the_effect_size_gate_holds_back_small_shifts() {
    // A significant rise of about 30 % in the mean.
    let rise = |allowed_increase| MetricComparison {
        allowed_increase,
        ..MetricComparison::new("m", sample(100, 130.0, 5.0, 7), sample(100, 100.0, 5.0, 8))
    };
    let m = &run(&[rise(1.2)]).metrics[0];
    assert_eq!(m.classification, Classification::High);
    let m = &run(&[rise(1.5)]).metrics[0];
    assert_eq!(m.classification, Classification::Pass);
    assert!(m.reason.starts_with("higher but small:"), "{}", m.reason);
    assert!(m.reason.contains("is below 1.5"), "{}", m.reason);

    // Symmetrically for a fall of about 30 %: a Low needs the ratio at or below allowed_decrease.
    let fall = |allowed_decrease| MetricComparison {
        allowed_decrease,
        ..MetricComparison::new("m", sample(100, 70.0, 5.0, 7), sample(100, 100.0, 5.0, 8))
    };
    assert_eq!(run(&[fall(0.8)]).metrics[0].classification, Classification::Low);
    assert_eq!(run(&[fall(0.5)]).metrics[0].classification, Classification::Pass);
}

#[test]
fn a_rise_from_a_zero_baseline_mean_is_not_held_back() {
    // Whole numbers, so the baseline mean is exactly 0 and the ratio undefined; the rank
    // test decides alone.
    let baseline: Vec<f64> = (-30..=30).map(f64::from).collect();
    let canary: Vec<f64> = (20..=80).map(f64::from).collect();
    let m = &run(&[MetricComparison::new("m", canary, baseline)]).metrics[0];
    assert_eq!(m.baseline_mean, Some(0.0));
    assert_eq!(m.effect_size, None);
    assert_eq!(m.classification, Classification::High);
    assert!(m.reason.ends_with("mean ratio undefined (baseline mean 0)"), "{}", m.reason);
}

#[test]
fn identical_samples_pass() {
    let values = sample(60, 10.0, 1.0, 9);
    let mut shuffled = values.clone();
    shuffled.reverse();
    let critical = MetricComparison { critical: true, ..MetricComparison::new("m", shuffled, values) };
    let v = run(&[critical]);
    assert_eq!(v.metrics[0].classification, Classification::Pass);
    assert_eq!(v.metrics[0].reason, "the canary and baseline samples hold the same values");
    let t = v.metrics[0].test.unwrap();
    assert_eq!((t.u, t.p_value, t.estimate), (1800.0, 1.0, 0.0));
    assert_eq!(v.score, 100.0);

    // Every value the same, in samples of different sizes.
    let m = &run(&[MetricComparison::new("m", vec![0.0; 70], vec![0.0; 90])]).metrics[0];
    assert_eq!(m.classification, Classification::Pass);
    assert_eq!(m.reason, "every value is 0: there is nothing to compare");
    assert_eq!(m.test.unwrap().p_value, 1.0);
}

#[test]
fn constant_samples_at_different_values_are_a_shift() {
    let m = &run(&[MetricComparison::new("m", vec![5.0; 60], vec![3.0; 60])]).metrics[0];
    let t = m.test.unwrap();
    assert_eq!((t.estimate, t.ci_low, t.ci_high), (2.0, 2.0, 2.0));
    assert_eq!(m.classification, Classification::High);
}

#[test]
fn small_and_dirty_samples_are_flagged() {
    let canary = vec![1.0, f64::NAN, 1.2, f64::INFINITY, 0.9];
    let baseline = vec![1.1, 1.0, 0.95];
    let m = &run(&[MetricComparison::new("m", canary, baseline)]).metrics[0];
    assert_eq!((m.canary_count, m.baseline_count), (3, 3));
    assert_eq!(
        m.warnings,
        [
            "dropped 2 non-finite canary value(s)",
            "canary has 3 data point(s), fewer than 50: the test has little power",
            "baseline has 3 data point(s), fewer than 50: the test has little power",
            "too few data points for a 98 % interval: it spans every canary − baseline difference",
        ]
    );
    assert_eq!(m.classification, Classification::Pass);
    // Large samples carry no warning.
    assert!(run(&[steady("m", 1)]).metrics[0].warnings.is_empty());
}

/// Σ (t³ − t) over the groups of equal values in a sorted sample.
fn tie_term(sorted: &[f64]) -> f64 {
    sorted.chunk_by(|a, b| a == b).map(|g| g.len() as f64).map(|t| t * t * t - t).sum()
}

#[test]
fn the_interval_is_the_order_statistic_of_the_module_formula() {
    // 1 200 × 900 pairs with many ties, against brute force over every pair.
    let round = |v: Vec<f64>| v.into_iter().map(|x| (x * 10.0).round() / 10.0).collect::<Vec<_>>();
    let canary = round(sample(1200, 50.0, 8.0, 11));
    let baseline = round(sample(900, 49.0, 8.0, 12));
    let t = single_metric(canary.clone(), baseline.clone(), 0.98).test.unwrap();

    let mut diffs: Vec<f64> = canary.iter().flat_map(|c| baseline.iter().map(move |b| c - b)).collect();
    diffs.sort_by(f64::total_cmp);
    let (n, m) = (canary.len() as f64, baseline.len() as f64);
    let (mut c, mut b) = (canary.clone(), baseline.clone());
    c.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let sigma = (n * m / 12.0 * ((n + m + 1.0) - (tie_term(&c) + tie_term(&b)) / ((n + m) * (n + m - 1.0)))).sqrt();
    let z_99 = 2.326_347_874_040_840_8; // Φ⁻¹(0.99), for a 98 % interval.
    let k = (n * m / 2.0 - 0.5 - z_99 * sigma).ceil() as usize;
    assert!(k > 1, "the samples are large enough not to clamp");
    let pairs = diffs.len();
    assert_eq!(t.ci_low, diffs[k - 1]);
    assert_eq!(t.ci_high, diffs[pairs - k]);
    assert_eq!(t.estimate, (diffs[pairs / 2 - 1] + diffs[pairs / 2]) / 2.0);
    let u = diffs
        .iter()
        .map(|&d| {
            if d > 0.0 {
                1.0
            } else if d == 0.0 {
                0.5
            } else {
                0.0
            }
        })
        .sum::<f64>();
    assert_eq!(t.u, u);
}

#[test]
fn huge_samples_need_no_pairwise_matrix() {
    // 40 000 × 30 000 = 1.2 G pairs: 9.6 GB if the differences were materialized.
    let canary = sample(40_000, 103.0, 10.0, 21);
    let baseline = sample(30_000, 100.0, 10.0, 22);
    let t = single_metric(canary, baseline, 0.98).test.unwrap();
    assert!((t.estimate - 3.0).abs() < 0.3, "estimate {}", t.estimate);
    assert!(t.ci_low < t.estimate && t.estimate < t.ci_high);
    assert!(t.ci_high - t.ci_low < 1.0, "[{}, {}]", t.ci_low, t.ci_high);
}

#[test]
fn groups_are_weighted() {
    let in_group = |m: MetricComparison, g: &str| MetricComparison { group: Some(g.to_owned()), ..m };
    let metrics = [
        in_group(error_rate_doubled(), "errors"),
        in_group(steady("latency_p50", 10), "latency"),
        in_group(steady("latency_p99", 20), "latency"),
    ];
    // Equal weights: errors 0, latency 100.
    let v = run(&metrics);
    assert_eq!(v.score, 50.0);
    assert_eq!(v.outcome, Outcome::Marginal);
    assert_eq!(v.groups.len(), 2);
    assert_eq!((v.groups[0].name.as_str(), v.groups[0].score, v.groups[0].weight), ("errors", Some(0.0), 50.0));

    // Kayenta's weights in percent; the unlisted group takes the rest.
    let config =
        JudgeConfig { group_weights: vec![GroupWeight { group: "errors".into(), weight: 20.0 }], ..Default::default() };
    let v = judge(&config, &metrics).unwrap();
    assert_eq!(v.groups[1].weight, 80.0);
    assert_eq!(v.score, 80.0);
    assert_eq!(v.outcome, Outcome::Pass);
}

#[test]
fn bad_input_is_rejected_with_the_fix() {
    let one = [steady("m", 1)];
    let err = |config: JudgeConfig, metrics: &[MetricComparison]| judge(&config, metrics).unwrap_err().to_string();
    assert_eq!(
        err(JudgeConfig { confidence: 98.0, ..Default::default() }, &one),
        "judge confidence 98 is outside (0, 1): use a level such as 0.98"
    );
    assert_eq!(
        err(JudgeConfig { pass_score: 40.0, ..Default::default() }, &one),
        "judge scores must satisfy 0 <= marginal_score (50) <= pass_score (40) <= 100"
    );
    assert_eq!(
        err(JudgeConfig::default(), &[steady("m", 1), steady("m", 2)]),
        "metric `m` is listed twice: give each metric one comparison"
    );
    assert_eq!(
        err(JudgeConfig::default(), &[MetricComparison { allowed_increase: f64::NAN, ..steady("m", 1) }]),
        "metric `m`: allowed_increase NaN must be a finite number >= 0, such as 1.0"
    );
    let weights = vec![GroupWeight { group: "nope".into(), weight: 50.0 }];
    assert_eq!(
        err(JudgeConfig { group_weights: weights, ..Default::default() }, &one),
        "a weight is given for group `nope` but no metric is in it: fix the metric's group or drop the weight"
    );
}

#[test]
fn the_verdict_renders_as_a_table() {
    let critical = MetricComparison { critical: true, ..error_rate_doubled() };
    let v = run(&[critical, steady("latency_p50", 10), MetricComparison::new("cpu", vec![], vec![1.0])]);
    let text = v.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "verdict FAIL: score 0.0 (pass >= 75, marginal >= 50): critical metric failed: `error_rate` is High"
    );
    assert!(lines[1].starts_with("metric       group    bad if    critical  result"), "{text}");
    assert!(lines[1].contains("98 % CI"), "{text}");
    assert!(lines[2].starts_with("error_rate   default  increase  yes       High  "), "{text}");
    assert!(lines[3].starts_with("latency_p50  default  either    no        Pass  "), "{text}");
    assert!(lines[4].starts_with("cpu          default  either    no        NoData"), "{text}");
    assert!(lines[4].ends_with("-"), "{text}");
    assert_eq!(lines[5], "reasons:");
    assert!(lines[6].starts_with("  error_rate: High: higher: the 98 % interval"), "{text}");
    assert_eq!(lines[8], "  cpu: NoData: the canary has no data");
    assert_eq!(lines[9], "warnings:");
    assert_eq!(lines[10], "  cpu: baseline has 1 data point(s), fewer than 50: the test has little power");
    // The same verdict renders the same text.
    assert_eq!(
        text,
        run(&[
            MetricComparison { critical: true, ..error_rate_doubled() },
            steady("latency_p50", 10),
            MetricComparison::new("cpu", vec![], vec![1.0])
        ])
        .to_string()
    );
}

#[test]
fn latency_is_judged_unless_no_host_on_either_side_reports_any() {
    let clean = |p99: Option<f64>| vec![(0.0, p99); 5];
    let names = |m: Vec<MetricComparison>| m.into_iter().map(|m| m.name).collect::<Vec<_>>();
    let settings = JudgeSettings::defaults(JudgeMethod::MannWhitney);
    let one_box_metrics = |c: &[(f64, Option<f64>)], b: &[(f64, Option<f64>)]| one_box_metrics(&settings.metrics, c, b);
    assert_eq!(names(one_box_metrics(&clean(None), &clean(None))), ["error_rate"]);
    let verdict = judge(&JudgeConfig::default(), &one_box_metrics(&clean(None), &clean(None))).unwrap();
    assert_ne!(verdict.outcome, Outcome::Fail, "{verdict}");
    // A canary that went silent on latency while the baseline reports it is no data.
    assert_eq!(names(one_box_metrics(&clean(None), &clean(Some(20.0)))), ["error_rate", "latency_p99_ms"]);
    assert_eq!(names(one_box_metrics(&clean(Some(20.0)), &clean(Some(20.0)))), ["error_rate", "latency_p99_ms"]);
    // The manifest's settings are the comparisons' settings.
    let latency = &one_box_metrics(&clean(Some(20.0)), &clean(Some(20.0)))[1];
    assert_eq!((latency.critical, latency.allowed_increase, latency.direction), (false, 1.2, Direction::Increase));
    let only_latency = [JudgedMetric { critical: true, allowed_increase: 2.0, ..settings.metrics[1] }];
    let m = rollwave_core::judge::one_box_metrics(&only_latency, &clean(Some(20.0)), &clean(Some(20.0)));
    assert_eq!(names(m.clone()), ["latency_p99_ms"]);
    assert_eq!((m[0].critical, m[0].allowed_increase), (true, 2.0));
}
