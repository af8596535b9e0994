#!/usr/bin/env bash
# What the one-box judge does to good and defective releases, measured with
# `rollwave study` on bench/judge/pipeline.yaml (one region of twelve hosts, a one-box of
# one host baking an hour in one-minute steps, the usual threshold alarms), for each
# judge method side by side in one run:
#
# - a good release: how often it is rolled back for nothing;
# - a release whose error rate is k times the baseline's (1 %), and one whose p99 latency
#   is k times the baseline's at the same median (a heavier tail): how often it is caught
#   while its one-box bakes, and how soon;
# - the smallest such defect caught at the one-box in 95 % of runs.
#
# `off` is the threshold alarms alone. Every figure is over RUNS runs (seeds 0..RUNS-1).
#
#   bench/judge/run.sh                 # 1000 runs per cell, 20 and 5 requests/s per host
#   RUNS=200 RATES=20 bench/judge/run.sh
#   SKIP_BUILD=1 bench/judge/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-1000}
RATES=${RATES:-"20 5"}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin rollwave
fi
bin=${ROLLWAVE_BIN:-target/release/rollwave}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$bin" "$work" "$RUNS" $RATES <<'PY'
import json, subprocess, sys, time

bin, work, runs, rates = sys.argv[1], sys.argv[2], int(sys.argv[3]), [float(r) for r in sys.argv[4:]]
methods = ["sequential", "mann_whitney", "off"]
base = open("bench/judge/pipeline.yaml").read()
for m in methods:
    open(f"{work}/pipeline-{m}.yaml", "w").write(base.replace("method: sequential", f"method: {m}"))

def study(method, rate, defect):
    scenario = (
        "start: 2026-11-30T08:00:00Z\n"
        f"traffic: {{ requests_per_host_per_s: {rate}, error_rate: 0.01, latency_p99_ms: 120 }}\n"
        "releases:\n"
        f"  - {{ version: v2, at: 0h{', defect: { ' + defect + ' }' if defect else ''} }}\n"
    )
    path = f"{work}/scenario.yaml"
    open(path, "w").write(scenario)
    started = time.monotonic()
    out = subprocess.run([bin, "study", f"{work}/pipeline-{method}.yaml", "--scenario", path,
                          "--runs", str(runs), "--json"], check=True, capture_output=True, text=True).stdout
    took = time.monotonic() - started
    release = json.loads(out)["releases"][0]
    return release, took

def pct(x):
    return f"{100 * x:.1f} %"

slowest = 0.0
for rate in rates:
    print(f"\n## {rate:g} requests/s per host, {runs} runs per cell\n")
    print("| release | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    cells = []
    for m in methods:
        r, took = study(m, rate, None)
        slowest = max(slowest, took)
        lo, hi = r["false_rollback_ci95"]
        cells.append(f"{pct(r['false_rollback_rate'])} rolled back ({pct(lo)}–{pct(hi)})")
    print("| good | " + " | ".join(cells) + " |")
    smallest = {}
    for metric, field, ks in [("errors", "error_rate", [1.25, 1.5, 2, 3]), ("p99", "latency_p99_ms", [1.25, 1.5, 2])]:
        for k in ks:
            value = 0.01 * k if field == "error_rate" else 120 * k
            cells = []
            for m in methods:
                r, took = study(m, rate, f"{field}: {value:g}")
                slowest = max(slowest, took)
                caught = r["caught_in_one_box"] / runs
                if caught >= 0.95:
                    smallest.setdefault((metric, m), k)
                p50 = r["detect_s"]["p50"]
                cells.append(f"{pct(caught)} at the one-box" + (f", p50 {p50:.0f} s" if p50 is not None and caught > 0 else ""))
            print(f"| {metric} ×{k:g} | " + " | ".join(cells) + " |")
    print("\nsmallest defect caught at the one-box in 95 % of runs:")
    for metric in ["errors", "p99"]:
        print(f"  {metric}: " + ", ".join(f"{m} " + (f"×{smallest[(metric, m)]:g}" if (metric, m) in smallest else "none tried")
                                         for m in methods))
print(f"\nslowest study of {runs} runs: {slowest:.2f} s")
PY
