//! The sequential tests' guarantees, checked numerically: a release within the allowed
//! ratio is judged failing in at most `α` of runs although the test looks after every
//! bin, and a defect is found. Counts are drawn as the server sees them: per bin, binomial
//! bad events out of Poisson traffic, with the baseline's rate drifting over the run.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, Poisson};
use rollwave_core::sequential::{ExceedanceTest, LatencyBin, RateBin, RateTest};

/// `runs` bakes of `bins` bins; the canary's rate is `ratio` times the baseline's, which
/// swings between half and one and a half times `base_rate` over the bake. Returns each
/// run's first rejected bin.
fn bakes(runs: u64, bins: usize, base_rate: f64, ratio: f64, test: RateTest) -> Vec<Option<usize>> {
    (0..runs)
        .map(|seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let canary_traffic = Poisson::new(20.0).unwrap();
            let baseline_traffic = Poisson::new(60.0).unwrap();
            let series: Vec<RateBin> = (0..bins)
                .map(|t| {
                    let drift = 1.0 + 0.5 * (t as f64 / bins as f64 * std::f64::consts::TAU).sin();
                    let rate = base_rate * drift;
                    let n = canary_traffic.sample(&mut rng) as u64;
                    let m = baseline_traffic.sample(&mut rng) as u64;
                    RateBin {
                        canary_total: n,
                        canary_bad: Binomial::new(n, (rate * ratio).min(1.0)).unwrap().sample(&mut rng),
                        baseline_total: m,
                        baseline_bad: Binomial::new(m, rate).unwrap().sample(&mut rng),
                    }
                })
                .collect();
            test.look(&series).rejected_at
        })
        .collect()
}

fn share(rejections: &[Option<usize>]) -> f64 {
    rejections.iter().filter(|r| r.is_some()).count() as f64 / rejections.len() as f64
}

#[test]
fn a_good_release_looked_at_every_bin_is_failed_in_at_most_alpha_of_runs() {
    let test = RateTest::new(0.05, 1.0).unwrap();
    // 2,000 bakes of 600 bins at 2 % errors: about 12,000 bad events each. At α = 5 %
    // the count of false failures is at most about 100 + 3σ (σ ≈ 9.7) if the bound holds.
    let runs = bakes(2000, 600, 0.02, 1.0, test);
    let false_failures = runs.iter().filter(|r| r.is_some()).count();
    eprintln!("{false_failures} of 2000 good bakes failed");
    assert!(false_failures <= 130, "{false_failures} of 2000 good bakes failed");
    // Not vacuous: the evidence does move, and a fixed-level test at every look would
    // have failed far more.
    assert!(false_failures > 0, "no run ever crossed: the test looks too little");
}

#[test]
fn a_release_below_the_allowed_ratio_is_failed_even_less_often() {
    let test = RateTest::new(0.05, 1.25).unwrap();
    let runs = bakes(1000, 600, 0.02, 1.1, test);
    assert!(share(&runs) <= 0.05, "{}", share(&runs));
}

#[test]
fn twice_the_baseline_s_errors_are_found_within_a_short_bake() {
    // A one-box serving about 20 requests a bin beside a baseline of 60, 2 % errors in
    // the baseline; 300 bins hold about 6,000 canary requests. At α = 1 %.
    let test = RateTest::new(0.01, 1.0).unwrap();
    let runs = bakes(1000, 300, 0.02, 2.0, test);
    let mut at: Vec<usize> = runs.iter().flatten().copied().collect();
    at.sort_unstable();
    let median = at[at.len() / 2];
    eprintln!("found in {} of runs, median bin {median}", share(&runs));
    assert!(share(&runs) >= 0.99, "found in {} of runs", share(&runs));
    assert!(median <= 150, "median bin of detection {median}");
}

#[test]
fn sparse_errors_on_the_canary_alone_are_found_where_a_rank_test_sees_no_shift() {
    // 10 % errors on a one-box serving ~20 requests a bin, none in the baseline: most
    // bins have 0 to 3 errors, so per-bin error rates share a median of 0 and more.
    let test = RateTest::new(0.01, 1.0).unwrap();
    let runs = bakes(500, 10, 0.0, 1.0, test);
    assert_eq!(share(&runs), 0.0, "no errors anywhere, nothing to find");
    let runs: Vec<Option<usize>> = (0..500u64)
        .map(|seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let series: Vec<RateBin> = (0..10)
                .map(|_| RateBin {
                    canary_total: 20,
                    canary_bad: Binomial::new(20, 0.1).unwrap().sample(&mut rng),
                    baseline_total: 60,
                    baseline_bad: 0,
                })
                .collect();
            test.look(&series).rejected_at
        })
        .collect();
    eprintln!("sparse one-box errors found in {} of runs", share(&runs));
    assert!(share(&runs) >= 0.99, "found in {} of runs", share(&runs));
}

#[test]
fn a_latency_tail_that_grows_is_found_and_the_same_distribution_is_not_failed() {
    let test = ExceedanceTest { rate: RateTest::new(0.05, 1.0).unwrap() };
    // Four buckets: the baseline puts 50/30/19/1 % of requests in them.
    let baseline = [0.5, 0.3, 0.19, 0.01];
    let heavier = [0.5, 0.3, 0.16, 0.04];
    let draw = |rng: &mut ChaCha8Rng, n: u64, shares: &[f64; 4]| -> Vec<u64> {
        let mut left = n;
        let mut mass = 1.0;
        let mut out = Vec::new();
        for s in shares {
            let k = if mass <= 0.0 { left } else { Binomial::new(left, (s / mass).min(1.0)).unwrap().sample(rng) };
            out.push(k);
            left -= k;
            mass -= s;
        }
        out
    };
    let run = |seed: u64, canary: &[f64; 4]| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let bins: Vec<LatencyBin> = (0..120)
            .map(|_| LatencyBin { canary: draw(&mut rng, 20, canary), baseline: draw(&mut rng, 60, &baseline) })
            .collect();
        test.look(4, &bins).rejected()
    };
    let false_failures = (0..500).filter(|&s| run(s, &baseline)).count();
    assert!(false_failures <= 25 + 15, "{false_failures} of 500");
    let found = (0..500).filter(|&s| run(s, &heavier)).count();
    eprintln!("heavier tail found in {found} of 500; the same distribution failed in {false_failures} of 500");
    assert!(found >= 450, "found in {found} of 500");
}
