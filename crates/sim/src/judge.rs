//! The one-box judge in simulation: each measuring step, every host of a baking one-box's
//! region serves its own traffic (requests drawn around the scenario's rate, failures at
//! its version's error rate, latencies into the histogram buckets a router pushes), and
//! the one-box is judged on it with the method its manifest names, as the server judges
//! the pushes it receives.
//!
//! Latency is log-normal: its median is a quarter of the scenario's p99, and a defect or
//! an incident that raises the p99 widens the tail at the same median (the change a rank
//! test of medians misses).

use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson};
use rollwave_core::alarm::{LATENCY_BOUNDS_MS, bucket_p99};
use rollwave_core::judge::{JudgeConfig, Outcome, judge, one_box_metrics};
use rollwave_core::manifest::{JudgeMethod, JudgeSettings};
use rollwave_core::sequential::{JudgeBin, SequentialJudge, SequentialState, Traffic};
use statrs::distribution::{ContinuousCDF, Normal};

/// What a one-box bake's judge has seen, kept across measuring steps.
#[derive(Clone, Debug)]
pub(crate) struct JudgedBake {
    /// The sequential tests, bin by bin (`None` when the alpha cannot be used).
    pub sequential: Option<(SequentialJudge, SequentialState)>,
    /// Per host and step: (error rate, p99), for Mann–Whitney.
    pub canary_points: Vec<(f64, Option<f64>)>,
    pub baseline_points: Vec<(f64, Option<f64>)>,
    pub steps: u64,
    /// Mann–Whitney has looked once the bake's time was up.
    pub looked_at_end: bool,
    /// The outcome last told to the engine.
    pub said: Option<Outcome>,
}

/// Whether Mann–Whitney looks after `steps` steps, with `pairs` canary × baseline points.
/// Each look sorts out the Hodges–Lehmann interval from every pair, so it looks at every
/// step, as the server does at every sweep, while there are at most [`EVERY_STEP_PAIRS`]
/// pairs (about 40 one-minute steps beside eleven baseline hosts), and past that after
/// 2ⁿ steps only, so that a long bake of short steps stays affordable.
pub(crate) fn rank_test_looks(steps: u64, pairs: usize) -> bool {
    pairs <= EVERY_STEP_PAIRS || steps.is_power_of_two()
}

pub(crate) const EVERY_STEP_PAIRS: usize = 20_000;

impl JudgedBake {
    pub fn new(settings: &JudgeSettings) -> JudgedBake {
        let sequential = SequentialJudge::from_settings(settings).ok().map(|j| {
            let state = j.start();
            (j, state)
        });
        JudgedBake {
            sequential,
            canary_points: Vec::new(),
            baseline_points: Vec::new(),
            steps: 0,
            looked_at_end: false,
            said: None,
        }
    }

    /// One step of both sides' traffic.
    pub fn push(&mut self, bin: &JudgeBin) {
        self.steps += 1;
        if let Some((judge, state)) = &mut self.sequential {
            judge.push(state, bin);
        }
    }
}

/// Each host's own factor on error rate and latency, per environment: log-normal with
/// `spread` as the σ of its logarithm and mean 1 (so the fleet's mean is the scenario's).
pub(crate) fn host_factors(
    rng: &mut ChaCha8Rng,
    spread: f64,
    hosts_per_env: impl Iterator<Item = usize>,
) -> Vec<Vec<f64>> {
    let unit = rand_distr::StandardNormal;
    hosts_per_env
        .map(|hosts| {
            (0..hosts)
                .map(|_| {
                    if spread == 0.0 {
                        return 1.0;
                    }
                    let z: f64 = unit.sample(rng);
                    (spread * z - spread * spread / 2.0).exp()
                })
                .collect()
        })
        .collect()
}

/// One host's traffic for one step: `mean` requests on average.
pub(crate) fn host_step(rng: &mut ChaCha8Rng, mean: f64, error_rate: f64, p99_ms: f64, median_ms: f64) -> Traffic {
    let requests = match Poisson::new(mean) {
        Ok(p) => p.sample(rng) as u64,
        Err(_) => 0,
    };
    let errors = Binomial::new(requests, error_rate.clamp(0.0, 1.0)).map_or(0, |b| b.sample(rng));
    Traffic { requests, errors, latency: latency_buckets(rng, requests, p99_ms, median_ms) }
}

/// `requests` latencies drawn into the buckets of [`LATENCY_BOUNDS_MS`] (one more for
/// slower), log-normal with the given median and p99.
fn latency_buckets(rng: &mut ChaCha8Rng, requests: u64, p99_ms: f64, median_ms: f64) -> Vec<u64> {
    const Z99: f64 = 2.326_347_874;
    let sigma = ((p99_ms / median_ms).ln() / Z99).max(0.01);
    let unit = Normal::standard();
    let below = |bound: f64| unit.cdf((bound / median_ms).ln() / sigma);
    let mut out = Vec::with_capacity(LATENCY_BOUNDS_MS.len() + 1);
    let (mut left, mut before) = (requests, 0.0);
    for &bound in &LATENCY_BOUNDS_MS {
        let upto = below(bound);
        // The share of what is left that falls in this bucket.
        let p = if before >= 1.0 { 0.0 } else { ((upto - before) / (1.0 - before)).clamp(0.0, 1.0) };
        let k = Binomial::new(left, p).map_or(0, |b| b.sample(rng));
        out.push(k);
        left -= k;
        before = upto;
    }
    out.push(left);
    out
}

/// (error rate, p99 as the upper bound of its bucket) of one host's step, as the server
/// reads a push; `None` without requests.
pub(crate) fn point(t: &Traffic) -> Option<(f64, Option<f64>)> {
    (t.requests > 0).then(|| (t.errors as f64 / t.requests as f64, bucket_p99(&t.latency)))
}

/// The verdict on what `bake` has seen, as the server would give it: `None` while there is
/// too little to judge, or when Mann–Whitney does not look at this step (`ending`: the
/// bake's time is up; it looks at the first such step).
pub(crate) fn verdict(settings: &JudgeSettings, bake: &mut JudgedBake, ending: bool) -> Option<(Outcome, String)> {
    match settings.method {
        JudgeMethod::MannWhitney => {
            let least = usize::try_from(settings.min_samples).unwrap_or(usize::MAX);
            if bake.canary_points.len() < least || bake.baseline_points.len() < least {
                return None;
            }
            let first_look_at_end = ending && !bake.looked_at_end;
            let pairs = bake.canary_points.len() * bake.baseline_points.len();
            if !first_look_at_end && !rank_test_looks(bake.steps, pairs) {
                return None;
            }
            bake.looked_at_end |= ending;
            let metrics = one_box_metrics(&settings.metrics, &bake.canary_points, &bake.baseline_points);
            let v = judge(&JudgeConfig::default(), &metrics).ok()?;
            Some((v.outcome, v.summary()))
        }
        JudgeMethod::Off => None,
        JudgeMethod::Sequential => {
            let (judge, state) = bake.sequential.as_ref()?;
            let v = judge.verdict(state);
            Some((v.outcome, v.summary()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn hosts_differ_by_their_spread_around_a_mean_of_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let factors = host_factors(&mut rng, 0.3, [20_000, 2].into_iter());
        assert_eq!((factors.len(), factors[0].len(), factors[1].len()), (2, 20_000, 2));
        let logs: Vec<f64> = factors[0].iter().map(|f| f.ln()).collect();
        let mean = factors[0].iter().sum::<f64>() / 20_000.0;
        let log_mean = logs.iter().sum::<f64>() / 20_000.0;
        let log_sd = (logs.iter().map(|l| (l - log_mean).powi(2)).sum::<f64>() / 20_000.0).sqrt();
        assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
        assert!((log_sd - 0.3).abs() < 0.01, "spread {log_sd}");
        assert!(host_factors(&mut rng, 0.0, [5].into_iter())[0].iter().all(|&f| f == 1.0));
    }

    #[test]
    fn latencies_land_in_the_buckets_their_median_and_p99_say() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let buckets = latency_buckets(&mut rng, 100_000, 120.0, 30.0);
        assert_eq!(buckets.iter().sum::<u64>(), 100_000);
        // Median 30 ms falls between the 25 and 50 ms bounds, p99 120 ms between 100 and 250.
        let upto = |i: usize| buckets[..=i].iter().sum::<u64>() as f64 / 100_000.0;
        assert!(upto(2) < 0.5 && upto(3) > 0.5, "median between 25 and 50 ms: {buckets:?}");
        assert!(upto(4) < 0.99 && upto(5) > 0.99, "p99 between 100 and 250 ms: {buckets:?}");
        let t = Traffic { requests: 100_000, errors: 500, latency: buckets };
        assert_eq!(point(&t), Some((0.005, Some(250.0))));
    }
}
