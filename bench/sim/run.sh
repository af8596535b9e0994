#!/usr/bin/env bash
# Simulation cost against fleet size: 30 regions × 3 zones × N hosts per zone, five
# releases (one bad), 14 virtual days. Prints wall time and peak memory per size.
#
#   bench/sim/run.sh            # N = 11, 111, 1000 (≈1k, 10k, 90k hosts)
#   bench/sim/run.sh 1000 2000  # other sizes
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
bin=target/release/rollwave
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(11 111 1000)

make_manifest() {
  local n=$1
  {
    echo "service: bench"
    echo "environments:"
    echo "  prod:"
    echo "    regions:"
    for r in $(seq 1 30); do
      echo "      r$r: { zones: { r$r-a: $n, r$r-b: $n, r$r-c: $n } }"
    done
    echo "strategy:"
    echo "  one_box: { hosts: 1, max_share: 10%, bake: 1h }"
    echo "  rolling: { batch: 33%, zone_bake: 30m }"
    echo "  bake: { min_datapoints: 100 }"
    echo "stages:"
    echo "  - name: prod"
    echo "    environment: prod"
    echo "    waves:"
    echo "      - { name: wave-1, regions: [r1], bake: 12h }"
    echo "      - { name: wave-2, regions: [r2], bake: 4h }"
    echo "      - { name: wave-3, regions: [$(seq -s, -f 'r%g' 3 6)], bake: 3h }"
    echo "      - { name: wave-4, regions: [$(seq -s, -f 'r%g' 7 14)], bake: 2h }"
    echo "      - { name: wave-5, regions: [$(seq -s, -f 'r%g' 15 30)], bake: 2h }"
    echo "alarms:"
    echo "  - { name: errors, metric: error_rate, scope: zone, threshold: \"> 0.02\", period: 1m, datapoints: 3 of 5 }"
    echo "  - { name: latency, metric: latency_p99_ms, scope: region, threshold: \"> 800\", period: 1m, datapoints: 3 of 3 }"
    echo "watch: 24h"
  } > "$work/pipeline-$n.yaml"
}

cat > "$work/scenario.yaml" <<'YAML'
start: 2026-11-30T08:00:00Z
traffic: { requests_per_host_per_s: 20, error_rate: 0.001, latency_p99_ms: 120 }
releases:
  - { version: v2, at: 0h }
  - { version: v3, at: 30h }
  - { version: v4, at: 3d, defect: { error_rate: 0.05 } }
  - { version: v5, at: 5d }
  - { version: v6, at: 8d }
operators:
  - { at: 4d, action: rollback, release: v4 }
YAML

printf '%-12s %-10s %-12s %-14s %s\n' hosts/zone hosts wall_s peak_rss_mib outcomes
for n in "${sizes[@]}"; do
  make_manifest "$n"
  /usr/bin/time -f '%e %M' -o "$work/time" \
    "$bin" simulate "$work/pipeline-$n.yaml" --scenario "$work/scenario.yaml" --until 14d --json > "$work/out.json"
  read -r wall rss < "$work/time"
  outcomes=$(python3 -c 'import json,sys; print(" ".join(r["version"]+"="+r["outcome"] for r in json.load(open(sys.argv[1]))["releases"]))' "$work/out.json")
  printf '%-12s %-10s %-12s %-14s %s\n' "$n" "$((n * 90))" "$wall" "$((rss / 1024))" "$outcomes"
done
