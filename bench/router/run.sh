#!/usr/bin/env bash
# Router throughput and latency, side by side with the limit and with nginx.
#
# Two backends (crates/router/examples/backend.rs, release build) on 127.0.0.1; wrk
# (pinned to CPU 0) sends GET / with an x-rollwave-key header cycling over 1000 keys to:
#   direct   one backend, no proxy: the limit
#   router   `rollwave router` (release) with a 10% sticky canary split, pinned to CPU 1
#   nginx    nginx with split_clients doing the same 10% split, one worker, pinned to CPU 1
# Each target gets a warm-up, then a measured run of the same duration and connections.
# Then the router's peak memory with 10,000 open client connections.
#
#   bench/router/run.sh                       # 10 s per target, 64 connections
#   DURATION=30s CONNECTIONS=128 bench/router/run.sh
#   SKIP_BUILD=1 BIN_DIR=target/release bench/router/run.sh   # use binaries built already
#   COMPARE_BIN=/tmp/rollwave-before bench/router/run.sh      # also measure another build of
#                                                             # the router, in the same run
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-3s}
CONNECTIONS=${CONNECTIONS:-64}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
BASE_PORT=${BASE_PORT:-18080}
STABLE_PORT=$((BASE_PORT + 1))
CANARY_PORT=$((BASE_PORT + 2))
ROUTER_PORT=$((BASE_PORT + 10))
ADMIN_PORT=$((BASE_PORT + 11))
NGINX_PORT=$((BASE_PORT + 20))

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  echo "installing wrk and nginx" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "this benchmark needs two CPUs (one for wrk, one for the proxy)" >&2
  exit 2
fi
for port in $STABLE_PORT $CANARY_PORT $ROUTER_PORT $ADMIN_PORT $NGINX_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken; set BASE_PORT to another value" >&2
    exit 2
  fi
done

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --release --quiet --bin rollwave
  cargo build --release --quiet -p rollwave-router --example backend
fi
bin=${BIN_DIR:-target/release}/rollwave
backend=${BIN_DIR:-target/release}/examples/backend

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# Room for the idle-connection run: the client's sockets and the router's.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((IDLE_CONNECTIONS + 1000)) ]; then
  IDLE_CONNECTIONS=$(($(ulimit -n) - 1000))
  echo "open-file limit $(ulimit -n): holding only $IDLE_CONNECTIONS connections" >&2
fi

wait_for_port() {
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "nothing is listening on port $1" >&2
  exit 1
}

# Backends share CPU 0 with wrk, so the proxy under test has CPU 1 to itself; "direct"
# is the same machine minus the proxy.
taskset -c 0 "$backend" "$STABLE_PORT" stable & pids+=($!)
taskset -c 0 "$backend" "$CANARY_PORT" canary & pids+=($!)
wait_for_port "$STABLE_PORT"
wait_for_port "$CANARY_PORT"

cat > "$work/keys.lua" <<'LUA'
-- Requests built once per thread; each carries one of 1000 sticky keys.
local requests = {}
local n = 0
init = function(args)
  for i = 1, 1000 do
    requests[i] = wrk.format("GET", "/", { ["x-rollwave-key"] = "user-" .. i })
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

# Prints "req/s p50_ms p99_ms errors" for one measured run against $1.
measure() {
  local url=$1 connections=${2:-$CONNECTIONS}
  taskset -c 0 wrk -t1 -c"$connections" -d"$WARMUP" -s "$work/keys.lua" "$url" >/dev/null
  taskset -c 0 wrk -t1 -c"$connections" -d"$DURATION" -s "$work/keys.lua" "$url" \
    | awk '/^RESULT/ { printf "%.0f %.3f %.3f %d\n", $2 / ($3 / 1e6), $4 / 1000, $5 / 1000, $6 }'
}

cat > "$work/routes.yaml" <<YAML
salt: bench-v1
canary_share: 10%
key: { header: x-rollwave-key, cookie: rollwave_key }
hosts:
  - { address: 127.0.0.1:$STABLE_PORT, version: v1, track: stable }
  - { address: 127.0.0.1:$CANARY_PORT, version: v2, track: canary }
YAML

mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 10;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream stable { server 127.0.0.1:$STABLE_PORT; keepalive 256; }
  upstream canary { server 127.0.0.1:$CANARY_PORT; keepalive 256; }
  split_clients "bench-v1:\${http_x_rollwave_key}" \$track {
    10% canary;
    *   stable;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
    keepalive_requests 1000000;
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header x-rollwave-track \$track;
      add_header x-rollwave-track \$track;
      proxy_pass http://\$track;
    }
  }
}
NGINX

echo "measuring: ${DURATION} per target after a ${WARMUP} warm-up, ${CONNECTIONS} connections, wrk on CPU 0" >&2
direct=$(measure "http://127.0.0.1:$STABLE_PORT/")

# Starts `$1 router` on CPU 1 and sets router_pid.
start_router() {
  taskset -c 1 "$1" router --routes "$work/routes.yaml" --listen "127.0.0.1:$ROUTER_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" 2>"$work/router.log" & router_pid=$!
  pids+=("$router_pid")
  wait_for_port "$ROUTER_PORT"
}

if [ -n "${COMPARE_BIN:-}" ]; then
  start_router "$COMPARE_BIN"
  compare=$(measure "http://127.0.0.1:$ROUTER_PORT/")
  kill "$router_pid"
  wait "$router_pid" 2>/dev/null || true
fi

start_router "$bin"
router=$(measure "http://127.0.0.1:$ROUTER_PORT/")
metrics=$(exec 3<>"/dev/tcp/127.0.0.1/$ADMIN_PORT"; printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3; cat <&3)
canary_share=$(echo "$metrics" | awk -F' ' '/^rollwave_router_requests_total/ {
  if ($1 ~ /track="canary"/) c += $2; t += $2 } END { if (t > 0) printf "%.2f%%", 100 * c / t }')

taskset -c 1 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' & pids+=($!)
wait_for_port "$NGINX_PORT"
nginx=$(measure "http://127.0.0.1:$NGINX_PORT/")

# Memory: the router's resident set while $IDLE_CONNECTIONS clients each send one request
# and then keep their connection open.
cat > "$work/hold.py" <<'PY'
import asyncio, sys

async def main(port, count):
    held, failed = [], 0
    gate = asyncio.Semaphore(200)

    async def one(i):
        nonlocal failed
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET / HTTP/1.1\r\nHost: bench\r\nx-rollwave-key: user-{i}\r\n\r\n".encode())
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                held.append(writer)
            except Exception:
                failed += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    print(f"OPEN {len(held)} {failed}", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
PY
rss_before=$(awk '/^VmRSS/ { print $2 }' "/proc/$router_pid/status")
taskset -c 0 python3 "$work/hold.py" "$ROUTER_PORT" "$IDLE_CONNECTIONS" > "$work/hold.txt" 2>&1 & hold_pid=$!
pids+=("$hold_pid")
for _ in $(seq 1 1200); do
  grep -q '^OPEN' "$work/hold.txt" && break
  kill -0 "$hold_pid" 2>/dev/null || break
  sleep 0.1
done
read -r _ held failed < <(grep '^OPEN' "$work/hold.txt" || echo "OPEN 0 $IDLE_CONNECTIONS")
rss_held=$(awk '/^VmRSS/ { print $2 }' "/proc/$router_pid/status")
kill "$hold_pid" 2>/dev/null || true

row() {
  read -r rps p50 p99 errors <<<"$2"
  printf "%-34s %10s %10s %10s %8s\n" "$1" "$rps" "$p50" "$p99" "$errors"
}
echo
printf "%-34s %10s %10s %10s %8s\n" "target (${CONNECTIONS} connections)" "req/s" "p50 ms" "p99 ms" "errors"
row "direct to one backend (limit)" "$direct"
row "rollwave router, 10% canary" "$router"
if [ -n "${COMPARE_BIN:-}" ]; then row "  the same, $(basename "$COMPARE_BIN")" "$compare"; fi
row "nginx split_clients, 10% canary" "$nginx"
read -r d_rps _ <<<"$direct"
read -r r_rps _ r_p99 _ <<<"$router"
read -r n_rps _ n_p99 _ <<<"$nginx"
echo
awk -v r="$r_rps" -v d="$d_rps" -v n="$n_rps" -v rp="$r_p99" -v np="$n_p99" 'BEGIN {
  printf "router throughput: %.1f%% of direct, %.1f%% of nginx; p99 %s ms vs nginx %s ms\n", 100*r/d, 100*r/n, rp, np }'
echo "router requests on the canary: ${canary_share:-unknown} (target 10%)"
awk -v held="$held" -v failed="$failed" -v before="$rss_before" -v after="$rss_held" 'BEGIN {
  printf "router holding %d open client connections (%d failed to open): resident memory %.1f MiB -> %.1f MiB (%.1f KiB per connection)\n",
    held, failed, before / 1024, after / 1024, (held > 0) ? (after - before) / held : 0 }'
