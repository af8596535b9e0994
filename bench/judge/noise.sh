#!/usr/bin/env bash
# What hosts that differ by nature do to the one-box judge: `rollwave study` on
# bench/judge/pipeline.yaml (one region of twelve hosts, a one-box of one host judged for
# an hour), with each host's error rate and latency its own factor of the scenario's
# (log-normal, `host_spread` = σ of its logarithm, drawn once per run) and traffic
# swinging ±50 % over the day. Side by side, for each spread:
#
# - sequential: the default judge (errors allowed ×1.0, slow shares ×1.25);
# - sequential ×1.5: the same judge told, in the manifest, to allow ×1.5 on both;
# - mann_whitney: Kayenta's rank test with its defaults.
#
# Rows: how often a good release is rolled back, and how often errors ×2 and p99 ×1.5
# are caught at the one-box. Every cell is RUNS runs (seeds 0..RUNS-1).
#
#   bench/judge/noise.sh                  # 1000 runs per cell
#   RUNS=200 SPREADS="0 0.2" bench/judge/noise.sh
#   SKIP_BUILD=1 bench/judge/noise.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-1000}
SPREADS=${SPREADS:-"0 0.1 0.2 0.3"}
SWING=${SWING:-0.5}
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin rollwave
fi
bin=${ROLLWAVE_BIN:-target/release/rollwave}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$bin" "$work" "$RUNS" "$SWING" $SPREADS <<'PY'
import json, subprocess, sys

bin, work, runs, swing, spreads = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), [float(s) for s in sys.argv[5:]]
base = open("bench/judge/pipeline.yaml").read()
default = "judge: { method: sequential, alpha: 0.01 }"
assert default in base
judges = {
    "sequential": default,
    "sequential ×1.5": "judge: { method: sequential, alpha: 0.01, metrics: [{ metric: error_rate, allowed_increase: 1.5 }, { metric: latency_p99_ms, allowed_increase: 1.5 }] }",
    "mann_whitney": "judge: { method: mann_whitney }",
}
for i, (name, judge) in enumerate(judges.items()):
    open(f"{work}/pipeline-{i}.yaml", "w").write(base.replace(default, judge))

def study(i, spread, defect):
    scenario = (
        "start: 2026-11-30T08:00:00Z\n"
        f"traffic: {{ requests_per_host_per_s: 20, error_rate: 0.01, latency_p99_ms: 120, host_spread: {spread}, daily_swing: {swing} }}\n"
        "releases:\n"
        f"  - {{ version: v2, at: 0h{', defect: { ' + defect + ' }' if defect else ''} }}\n"
    )
    path = f"{work}/scenario.yaml"
    open(path, "w").write(scenario)
    out = subprocess.run([bin, "study", f"{work}/pipeline-{i}.yaml", "--scenario", path, "--runs", str(runs), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["releases"][0]

def pct(x):
    return f"{100 * x:.1f} %"

print(f"\n20 requests/s per host on average, daily swing ±{swing * 100:g} %, {runs} runs per cell\n")
print("| host spread | release | " + " | ".join(judges) + " |")
print("|---|---|" + "---|" * len(judges))
for spread in spreads:
    for label, defect in [("good, rolled back", None), ("errors ×2, caught at the one-box", "error_rate: 0.02"),
                          ("p99 ×1.5, caught at the one-box", "latency_p99_ms: 180")]:
        cells = []
        for i in range(len(judges)):
            r = study(i, spread, defect)
            if defect is None:
                lo, hi = r["false_rollback_ci95"]
                cells.append(f"{pct(r['false_rollback_rate'])} ({pct(lo)}–{pct(hi)})")
            else:
                cells.append(pct(r["caught_in_one_box"] / runs))
        print(f"| {spread:g} | {label} | " + " | ".join(cells) + " |")
PY
