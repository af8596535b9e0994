#!/usr/bin/env bash
# Bulk OFREP evaluation throughput of `rollwave relay`, on one core.
#
# The relay (release build, standalone mode, current-thread runtime) is pinned to CPU 0;
# wrk (Debian's package, one thread) is pinned to CPU 1 and POSTs
# /ofrep/v1/evaluate/flags with a context cycling over 1000 targeting keys. The flag set
# has $FLAGS flags (default 50): a third static, a third targeted on the context's
# attributes (ends_with, in, ==), a third split by `fractional` on the key. Every answer
# is a full bulk evaluation (no If-None-Match, so never a 304).
#
#   bench/flags/relay.sh                         # 5 runs of 10 s, 50 flags, 64 connections
#   RUNS=3 DURATION=5s FLAGS=5 bench/flags/relay.sh
#   SKIP_BUILD=1 RELAY_BIN=target/release/rollwave bench/flags/relay.sh
#
# Anchor: Unleash Edge, 39k req/s on one CPU for 5 features and 6.9k for 350.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
FLAGS=${FLAGS:-50}
PORT=${PORT:-18116}

if ! command -v wrk >/dev/null; then
  echo "installing wrk" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "this benchmark needs two CPUs (one for the relay, one for wrk)" >&2
  exit 2
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "port $PORT is taken; set PORT to another value" >&2
  exit 2
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin rollwave
fi
bin=${RELAY_BIN:-target/release/rollwave}

work=$(mktemp -d)
relay_pid=
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

python3 - "$FLAGS" > "$work/flags.json" <<'PY'
import json, sys
n = int(sys.argv[1])
flags = {}
for i in range(n):
    kind = i % 3
    if kind == 0:
        flags[f"static-{i}"] = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
    elif kind == 1:
        flags[f"targeted-{i}"] = {
            "state": "ENABLED",
            "variants": {"a": "alpha", "b": "beta", "c": "gamma"},
            "defaultVariant": "a",
            "targeting": {"if": [
                {"ends_with": [{"var": "email"}, "@example.com"]}, "b",
                {"in": [{"var": "country"}, ["CA", "NZ", "FR"]]}, "c",
                {"==": [{"var": "plan"}, "free"]}, "a",
                None]},
        }
    else:
        flags[f"split-{i}"] = {
            "state": "ENABLED",
            "variants": {"small": 10, "large": 100},
            "defaultVariant": "small",
            "targeting": {"fractional": [["small", 50], ["large", 50]]},
        }
json.dump({"flags": flags}, sys.stdout)
PY

cat > "$work/bulk.lua" <<'LUA'
-- Requests built once: each carries one of 1000 contexts.
local requests = {}
local n = 0
init = function(args)
  local countries = { "CA", "US", "NZ", "DE" }
  for i = 1, 1000 do
    local body = string.format(
      '{"context":{"targetingKey":"user-%d","email":"u%d@%s","country":"%s","plan":"free"}}',
      i, i, (i % 2 == 0) and "example.com" or "example.org", countries[i % 4 + 1])
    requests[i] = wrk.format("POST", "/ofrep/v1/evaluate/flags", { ["Content-Type"] = "application/json" }, body)
  end
end
request = function()
  n = n % 1000 + 1
  return requests[n]
end
done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  io.write(string.format("RESULT %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), errors))
end
LUA

taskset -c 0 "$bin" relay --flags "$work/flags.json" --listen "127.0.0.1:$PORT" --workers 1 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 1 200); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.05
done
url="http://127.0.0.1:$PORT/ofrep/v1/evaluate/flags"
flags_in_answer=$(curl -s -X POST -H 'content-type: application/json' \
  -d '{"context":{"targetingKey":"user-1","email":"a@example.com"}}' "$url" \
  | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["flags"]))')
echo "relay on CPU 0 serving $flags_in_answer flags per bulk answer; wrk -t1 -c$CONNECTIONS on CPU 1; $RUNS runs of $DURATION" >&2

taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -s "$work/bulk.lua" "$url" >/dev/null
results=()
for run in $(seq 1 "$RUNS"); do
  line=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "$work/bulk.lua" "$url" \
    | awk '/^RESULT/ { printf "%.0f %.3f %.3f %d\n", $2 / ($3 / 1e6), $4 / 1000, $5 / 1000, $6 }')
  read -r rps p50 p99 errors <<<"$line"
  printf "run %d: %8s req/s  p50 %6s ms  p99 %6s ms  errors %s\n" "$run" "$rps" "$p50" "$p99" "$errors"
  results+=("$rps")
done
median=$(printf "%s\n" "${results[@]}" | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$relay_pid/status")
echo
echo "bulk evaluation of $flags_in_answer flags, relay on one core: median $median req/s over $RUNS runs (peak RSS $((rss / 1024)) MiB)"
echo "anchor: Unleash Edge 39k req/s on one CPU for 5 features, 6.9k for 350; goal >= 40k"
