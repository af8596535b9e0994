#!/usr/bin/env python3
"""Reference values for rollwave's one-box judge (crates/core/src/judge.rs).

Run from this directory with `python3 judge_reference.py` (needs numpy and scipy:
`pip install scipy`). It rewrites `judge_reference.json`, which
`crates/core/tests/judge.rs` reads. The output is deterministic: the samples come from
numpy's PCG64 generator with fixed seeds and are rounded to short decimals. Short
decimals parse to the same f64 in Python and in serde_json.

For every case it computes, independently of the Rust code:

* `u` and `p_value`: `scipy.stats.mannwhitneyu(canary, baseline,
  alternative='two-sided', use_continuity=True, method='asymptotic')`. `u` is U of the
  canary: #{canary > baseline} + 0.5 * #{canary == baseline} over all pairs. The p-value
  uses the normal approximation with tie and continuity correction.

* `estimate`: the Hodges-Lehmann estimate of the shift canary - baseline. It is the
  median of all n*m pairwise differences `canary[i] - baseline[j]`, computed by brute
  force with numpy. For an even count it is the mean of the two middle values.

* `ci_low` and `ci_high`: the confidence interval for the shift. R's
  `wilcox.test(canary, baseline, conf.int=TRUE, exact=FALSE, correct=TRUE)` and
  Kayenta's MannWhitney (a port of it) invert the test. They run a root search
  (uniroot or Brent, absolute tolerance 1e-4) on

      wdiff(d, zq) = (dz(d) - 0.5 * sign(dz(d))) / sigma(d) - zq,
      dz(d)        = sum of the ranks of (canary - d) in c(canary - d, baseline)
                     - n(n+1)/2 - n*m/2,

  where sigma(d) is the tie-corrected standard deviation of the rank sum. The lower
  bound uses zq = +z and the upper bound uses zq = -z, with z = qnorm(1 - alpha/2) and
  alpha = 1 - confidence. wdiff is a step function of d. It only jumps where d equals a
  pairwise difference, and between jumps only the ties inside each sample count.
  So the root is always a pairwise difference, an order statistic D_(k) of the sorted
  differences D_(1) <= ... <= D_(n*m):

      sigma_ci = sqrt(n*m/12 * ((N + 1) - (T_canary + T_baseline) / (N*(N - 1)))),
                 N = n + m,  T = sum over tie groups of (t^3 - t) inside that sample
      k        = ceil(n*m/2 - 0.5 - z * sigma_ci), clamped to [1, n*m]
      ci_low   = D_(k)
      ci_high  = D_(n*m + 1 - k), clamped to [1, n*m] the same way

  This is the textbook normal-approximation order-statistic interval (Hollander and
  Wolfe; Lehmann) with the continuity correction written into the index. When the
  samples are too small for the confidence level, k < 1. The bounds are then clamped
  to the smallest and largest difference, which is also what R and Kayenta return
  (their `f.lower <= 0` / `f.upper >= 0` early exits).

  The script computes the interval twice and asserts that the two agree: once with the
  closed form above, and once by evaluating R's `wdiff` literally. That means ranking
  c(canary - d, baseline) with scipy.stats.rankdata, at midpoints between distinct
  differences, and binary-searching for the sign change. It also asserts that no
  index sits within 1e-6 of an integer, so float noise in z cannot move it.

* `canary_mean`, `baseline_mean`: math.fsum(x) / len(x).

If `Rscript` is on PATH, the script also runs R's wilcox.test on every case and prints
how far R lands from these values. R is never needed, and nothing it prints goes into the
JSON. With R 4.2.2 the p-values matched to 1e-14 and every interval bound matched
within R's uniroot tolerance (at most 9e-5). R's estimate is any root of dz/sigma = 0,
not the midpoint of the two middle differences, so it differed by up to that gap (5e-2
in clear_shift_up_latency). R gives no interval for tiny_one_vs_one,
constant_vs_constant and all_tied. In those cases every observation ties at the
smallest difference, R's sigma is 0 there, and R stops with an error. Kayenta's port
throws, and its judge classifies the metric as Error. The closed form above still
gives the clamped order statistics.
"""

import json
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy
from scipy import stats

OUT = Path(__file__).with_name("judge_reference.json")


def rounded(values, decimals):
    return [float(round(float(v), decimals)) for v in values]


def cases():
    """The fixed samples. Each case names what it exercises."""
    out = []

    def add(name, canary, baseline, confidence=0.98, note=""):
        out.append(
            {"name": name, "note": note, "confidence": confidence, "canary": list(canary), "baseline": list(baseline)}
        )

    rng = np.random.default_rng(20240611)
    add(
        "ties_small_integers",
        [int(v) for v in rng.integers(0, 6, 30)],
        [int(v) for v in rng.integers(0, 6, 30)],
        note="counts 0..5: heavy ties within and across samples",
    )
    rng = np.random.default_rng(7)
    add(
        "unequal_sizes",
        rounded(rng.normal(100.0, 15.0, 12), 3),
        rounded(rng.normal(104.0, 15.0, 40), 3),
        note="n=12 vs m=40, no real shift",
    )
    rng = np.random.default_rng(11)
    add(
        "clear_shift_up_latency",
        rounded(rng.lognormal(math.log(120.0), 0.2, 60) * 1.5, 3),
        rounded(rng.lognormal(math.log(120.0), 0.2, 60), 3),
        note="p99 latency, canary 1.5x slower",
    )
    rng = np.random.default_rng(13)
    add(
        "clear_shift_down_throughput",
        rounded(rng.normal(700.0, 40.0, 55), 2),
        rounded(rng.normal(1000.0, 40.0, 70), 2),
        note="requests/s, canary much lower",
    )
    rng = np.random.default_rng(17)
    base = rounded(rng.normal(50.0, 5.0, 40), 4)
    add(
        "identical_samples",
        list(reversed(base)),
        base,
        note="same multiset in another order",
    )
    add("tiny_one_vs_one", [1.5], [1.25], note="n=m=1: interval clamps to the only difference")
    add("tiny_two_vs_three", [3.0, 4.5], [1.0, 2.0, 2.5], note="interval clamps to [min, max] difference")
    add("tiny_three_vs_five", [0.8, 1.1, 0.9], [1.0, 1.2, 0.95, 1.05, 1.3])
    rng = np.random.default_rng(19)
    add(
        "error_rate_shift_up",
        rounded(rng.beta(4.0, 400.0, 80), 6),
        rounded(rng.beta(2.0, 400.0, 80), 6),
        note="error rate around 1 % vs 0.5 %",
    )
    rng = np.random.default_rng(23)
    add(
        "null_with_ties_confidence_095",
        rounded(rng.normal(10.0, 1.0, 45), 1),
        rounded(rng.normal(10.0, 1.0, 50), 1),
        confidence=0.95,
        note="one decimal: many ties; confidence 0.95",
    )
    add(
        "constant_vs_constant",
        [5.0] * 6,
        [3.0] * 8,
        note="each sample constant, different values: every difference is 2",
    )
    add("all_tied", [2.0] * 5, [2.0] * 7, note="one value everywhere: sigma of U is 0, p is 1")
    rng = np.random.default_rng(29)
    add(
        "mixed_sign_shift_down",
        rounded(rng.normal(-0.5, 1.0, 35), 3),
        rounded(rng.normal(0.5, 1.0, 30), 3),
        note="values around zero, canary lower",
    )
    rng = np.random.default_rng(37)
    add(
        "zero_inflated_error_rate",
        [0.0] * 30 + rounded(rng.beta(2.0, 300.0, 30), 6),
        [0.0] * 34 + rounded(rng.beta(2.0, 400.0, 26), 6),
        note="many exact zeros in both samples. The ties across samples count for the "
        "p-value but not for the interval, and here that moves the interval's index",
    )
    rng = np.random.default_rng(31)
    add(
        "large_2500_vs_1800",
        rounded(rng.gamma(9.0, 10.0, 2500) * 1.02, 1),
        rounded(rng.gamma(9.0, 10.0, 1800), 1),
        note="4.5 M pairs: exercises the selection path; one decimal gives many ties",
    )
    return out


def tie_term(values):
    _, counts = np.unique(np.asarray(values, dtype=np.float64), return_counts=True)
    counts = counts.astype(np.int64)
    return int(np.sum(counts**3 - counts))


def closed_form_ci(canary, baseline, confidence, diffs_sorted):
    n, m = len(canary), len(baseline)
    big_n = n + m
    z = stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0)
    t = tie_term(canary) + tie_term(baseline)
    sigma = math.sqrt(n * m / 12.0 * ((big_n + 1) - t / (big_n * (big_n - 1))))
    c = n * m / 2.0 - 0.5 - z * sigma
    if abs(c - round(c)) < 1e-6:
        raise SystemExit(f"index {c} too close to an integer: pick other samples")
    k = math.ceil(c)
    lo_k = min(max(k, 1), n * m)
    hi_k = min(max(n * m + 1 - k, 1), n * m)
    return diffs_sorted[lo_k - 1], diffs_sorted[hi_k - 1], k


def r_wdiff(canary, baseline, d, zq):
    """R's wdiff from wilcox.test.R (two-sided, correct=TRUE), literally."""
    x = np.asarray(canary) - d
    y = np.asarray(baseline)
    n, m = len(x), len(y)
    dr = stats.rankdata(np.concatenate([x, y]))
    _, nties = np.unique(dr, return_counts=True)
    dz = np.sum(dr[:n]) - n * (n + 1) / 2 - n * m / 2
    correction = np.sign(dz) * 0.5
    sigma = math.sqrt((n * m / 12) * ((n + m + 1) - np.sum(nties**3 - nties) / ((n + m) * (n + m - 1))))
    return (dz - correction) / sigma - zq


def inverted_ci(canary, baseline, confidence, diffs_sorted):
    """The interval found from R's wdiff by bisection over the gaps between differences."""
    distinct = np.unique(diffs_sorted)
    z = stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0)
    # Probe points: one below everything, the midpoints of the gaps, one above everything.
    def probe(i):
        if i == 0:
            return distinct[0] - 1.0
        if i == len(distinct):
            return distinct[-1] + 1.0
        return (distinct[i - 1] + distinct[i]) / 2.0

    def first_probe(pred):
        # The smallest probe index i in [0, len] with pred(probe(i)); len + 1 if none.
        lo, hi = 0, len(distinct) + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if mid <= len(distinct) and not pred(probe(mid)):
                lo = mid + 1
            else:
                hi = mid
        return lo

    # Lower bound: wdiff(d, +z) falls from > 0 to <= 0 as d grows; the jump sits at
    # distinct[i - 1] when probe i is the first non-positive one.
    i = first_probe(lambda d: r_wdiff(canary, baseline, d, z) <= 0)
    low = distinct[0] if i == 0 else distinct[min(i, len(distinct)) - 1]
    # Upper bound: wdiff(d, -z) falls from >= 0 to < 0.
    i = first_probe(lambda d: r_wdiff(canary, baseline, d, -z) < 0)
    high = distinct[-1] if i > len(distinct) else distinct[max(i, 1) - 1]
    return float(low), float(high)


def compute(case):
    canary = np.asarray(case["canary"], dtype=np.float64)
    baseline = np.asarray(case["baseline"], dtype=np.float64)
    res = stats.mannwhitneyu(canary, baseline, alternative="two-sided", use_continuity=True, method="asymptotic")
    diffs = np.subtract.outer(canary, baseline).ravel()
    diffs.sort()
    estimate = float(np.median(diffs))
    ci_low, ci_high, k = closed_form_ci(canary, baseline, case["confidence"], diffs)
    inv_low, inv_high = inverted_ci(canary, baseline, case["confidence"], diffs)
    # Floats only: (canary[i] - d) < baseline[j] and canary[i] - baseline[j] > d can
    # disagree by an ulp. Two differences that are equal on paper, such as 100.3 - 100.0
    # and 50.3 - 50.0, are then ranked either way. That moves a bound by ~1e-14 of
    # the data's scale, and no more.
    scale = float(np.max(np.abs(diffs))) or 1.0
    for a, b in ((inv_low, ci_low), (inv_high, ci_high)):
        assert abs(a - b) <= 1e-12 * scale, (case["name"], (inv_low, inv_high), (ci_low, ci_high))
    u_brute = float(np.sum(diffs > 0) + 0.5 * np.sum(diffs == 0))
    assert u_brute == float(res.statistic), (case["name"], u_brute, res.statistic)
    p = float(res.pvalue)
    if not math.isfinite(p):
        raise SystemExit(f"{case['name']}: p-value {p}")
    return {
        **case,
        "u": float(res.statistic),
        "p_value": p,
        "estimate": estimate,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        "ci_index": k,
        "canary_mean": math.fsum(case["canary"]) / len(case["canary"]),
        "baseline_mean": math.fsum(case["baseline"]) / len(case["baseline"]),
    }


R_SCRIPT = r"""
lines <- readLines(commandArgs(trailingOnly = TRUE)[1])
for (i in seq(1, length(lines), by = 3)) {
  conf <- as.numeric(lines[i])
  x <- as.numeric(strsplit(lines[i + 1], ",")[[1]])
  y <- as.numeric(strsplit(lines[i + 2], ",")[[1]])
  r <- tryCatch(
    suppressWarnings(wilcox.test(x, y, conf.int = TRUE, exact = FALSE, correct = TRUE, conf.level = conf)),
    error = function(e) NULL)
  if (is.null(r)) cat("NA NA NA NA NA\n") else
    cat(sprintf("%.17g %.17g %.17g %.17g %.17g\n", r$statistic, r$p.value, r$estimate, r$conf.int[1], r$conf.int[2]))
}
"""


def cross_check_with_r(results):
    if shutil.which("Rscript") is None:
        print("Rscript not found: skipping the optional cross-check with R")
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "cases.txt"
        script = Path(tmp) / "check.R"
        with data.open("w") as f:
            for r in results:
                f.write(f"{r['confidence']}\n")
                f.write(",".join(repr(float(v)) for v in r["canary"]) + "\n")
                f.write(",".join(repr(float(v)) for v in r["baseline"]) + "\n")
        script.write_text(R_SCRIPT)
        try:
            out = subprocess.run(
                ["Rscript", str(script), str(data)], check=True, capture_output=True, text=True
            ).stdout.split("\n")
        except subprocess.CalledProcessError as e:
            print(f"R failed: {e.stderr}")
            return
    print(f"{'case':34} {'U':>4} {'p rel diff':>11} {'est diff':>10} {'low diff':>10} {'high diff':>10}")
    for r, line in zip(results, out):
        if line.startswith("NA"):
            print(f"{r['name']:34} R stops: its sigma is 0 where every difference ties")
            continue
        w, p, est, lo, hi = (float(v) for v in line.split())
        p_rel = abs(p - r["p_value"]) / max(abs(r["p_value"]), 1e-300)
        print(
            f"{r['name']:34} {'ok' if w == r['u'] else 'DIFF':>4} {p_rel:11.2e} {est - r['estimate']:10.2e} "
            f"{lo - r['ci_low']:10.2e} {hi - r['ci_high']:10.2e}"
        )


def main():
    results = [compute(c) for c in cases()]
    for r in results:
        for v in r["canary"] + r["baseline"]:
            # Short decimals only, so serde_json parses exactly what Python wrote.
            assert len(repr(float(v)).replace("-", "").replace(".", "").lstrip("0")) <= 15, v
    doc = {
        "generator": "crates/core/tests/data/judge_reference.py",
        "scipy": scipy.__version__,
        "numpy": np.__version__,
        "cases": results,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({len(results)} cases)")
    for r in results:
        print(
            f"  {r['name']:34} n={len(r['canary']):5} m={len(r['baseline']):5} U={r['u']:<10} p={r['p_value']:.3e} "
            f"est={r['estimate']:.6g} ci=[{r['ci_low']:.6g}, {r['ci_high']:.6g}] k={r['ci_index']}"
        )
    cross_check_with_r(results)


if __name__ == "__main__":
    sys.exit(main())
