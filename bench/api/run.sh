#!/usr/bin/env bash
# The control plane's API under 10,000 simulated hosts, on SQLite and on PostgreSQL.
#
# For each backend: a fresh database, `rollwave server --driver agent` (release build)
# pinned to CPU 0, and the load generator (crates/server/examples/loadgen.rs) pinned to
# CPU 1. Every host registers, then long-polls `desired?after=…&wait=10` (so an idle host
# completes a request every 10 s); when its command changes it "installs" for about a
# second and reports. After a warm-up the generator measures a fixed window, during
# which it creates a release and approves it, so that a real rollout runs through all
# hosts. Latency per class: a long-poll that delivered a change, as its lag after the
# change first reached any host (fan-out); a long-poll that timed out, as the time beyond
# its wait (overhead); a report, as its round trip. Registration happens in the warm-up.
# Server CPU is (utime+stime) from /proc/PID/stat over the window's wall time;
# "peak" is the busiest second. "other" is the machine's CPU use by everything else
# (other builds, …) during the window: noise. Goal: p99 < 50 ms and < 1 core.
#
#   bench/api/run.sh                         # 10,000 hosts, 100 s window, both backends
#   HOSTS=2000 MEASURE=60 BACKENDS=sqlite bench/api/run.sh
#   PG_URL=postgres://postgres@127.0.0.1:5432 bench/api/run.sh
#   BIN=/tmp/rollwave-before bench/api/run.sh     # a prebuilt server (skips its build)
#   OUT=/tmp/api-bench bench/api/run.sh           # keep logs and every request's latency (CSV)
set -euo pipefail
cd "$(dirname "$0")/../.."

HOSTS=${HOSTS:-10000}
WAIT=${WAIT:-10}
STAGGER=${STAGGER:-10}
WARMUP=${WARMUP:-15}
MEASURE=${MEASURE:-100}
RELEASE_AT=${RELEASE_AT:-5}
BACKENDS=${BACKENDS:-sqlite postgres}
BASE_PORT=${BASE_PORT:-17170}
OUT=${OUT:-}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
TOKEN=rw_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

if [ "$(nproc)" -lt 2 ]; then
  echo "this benchmark needs two CPUs (one for the server, one for the load generator)" >&2
  exit 2
fi
# Each simulated host holds a connection: the server and the generator need an fd each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((HOSTS + 1000)) ]; then
  echo "open files are limited to $(ulimit -n), too few for $HOSTS hosts; raise the hard limit" >&2
  exit 2
fi

# BIN and LOADGEN name prebuilt binaries (to compare builds); otherwise both are built.
bin=${BIN:-target/release/rollwave}
loadgen=${LOADGEN:-target/release/examples/loadgen}
[ -n "${BIN:-}" ] || cargo build --release --quiet --bin rollwave
[ -n "${LOADGEN:-}" ] || cargo build --release --quiet -p rollwave-server --example loadgen

work=$(mktemp -d)
pids=()
databases=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for db in "${databases[@]}"; do
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  done
  if [ -n "$OUT" ]; then mkdir -p "$OUT" && cp "$work"/*.log "$work"/*.out "$work"/*.csv "$work"/*.result "$OUT"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

hz=$(getconf CLK_TCK)
# utime + stime of a process (and its threads), in clock ticks.
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The same summed over the postgres processes serving the benchmark's database ($1), and
# the server-wide ones (WAL writer, checkpointer, …); empty for SQLite.
pg_pids() {
  [ -n "$1" ] || return 0
  psql -Atq "$PG_URL/postgres" -c \
    "SELECT pid FROM pg_stat_activity WHERE datname = '$1' OR backend_type <> 'client backend'"
}
pg_ticks() {
  local sum=0 t pid
  for pid in "$@"; do t=$(ticks "$pid"); sum=$((sum + t)); done
  echo "$sum"
}
# Busy ticks of the whole machine.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
now_ns() { date +%s%N; }

wait_for_port() {
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing is listening on port $1; see $2" >&2
  exit 1
}

# Runs one backend; leaves "key=value …" in $work/$1.result.
run() {
  local name=$1 db=$2 port=$3 pg_db=${4:-} server_pid cpu0 pg0 busy0 t0 cpu1 pg1 busy1 t1 sampler lg
  local pgp=()
  local log="$work/$name.server.log"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is taken; set BASE_PORT to another value" >&2
    exit 2
  fi
  ROLLWAVE_BOOTSTRAP_TOKEN=$TOKEN taskset -c 0 "$bin" server --db "$db" --listen "127.0.0.1:$port" \
    --driver agent --node-id "bench-$name" >"$log" 2>&1 &
  server_pid=$!
  pids+=("$server_pid")
  wait_for_port "$port" "$log"
  echo "== $name: load $(cut -d' ' -f1-3 /proc/loadavg) before; server pid $server_pid" >&2
  while IFS= read -r line; do
    echo "$line" >>"$work/$name.loadgen.out"
    case $line in
      "MEASURE start"*)
        mapfile -t pgp < <(pg_pids "$pg_db")
        t0=$(now_ns); cpu0=$(ticks "$server_pid"); pg0=$(pg_ticks "${pgp[@]}"); busy0=$(busy_ticks)
        # The busiest second of the server.
        ( prev=$cpu0; while sleep 1; do cur=$(ticks "$server_pid"); echo $((cur - prev)); prev=$cur; done ) \
          >"$work/$name.seconds" 2>/dev/null &
        sampler=$!
        ;;
      "MEASURE end"*)
        t1=$(now_ns); cpu1=$(ticks "$server_pid"); pg1=$(pg_ticks "${pgp[@]}"); busy1=$(busy_ticks)
        kill "$sampler" 2>/dev/null || true
        ;;
      RESULT*) echo "${line#RESULT }" >"$work/$name.result" ;;
      *) echo "$line" >&2 ;;
    esac
  done < <(ROLLWAVE_TOKEN=$TOKEN taskset -c 1 "$loadgen" --target "127.0.0.1:$port" --hosts "$HOSTS" \
    --wait "$WAIT" --stagger "$STAGGER" --warmup "$WARMUP" --measure "$MEASURE" --release-at "$RELEASE_AT" \
    --samples "$work/$name.samples.csv")
  local rss
  rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$server_pid/status")
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  if [ ! -s "$work/$name.result" ] || [ -z "${t1:-}" ]; then
    echo "$name: the load generator gave no result; server log:" >&2
    tail -20 "$log" >&2
    return 1
  fi
  local peak
  peak=$(sort -n "$work/$name.seconds" | tail -1)
  # The generator measures its own CPU over the window.
  lg=$(tr ' ' '\n' <"$work/$name.result" | awk -F= '$1 == "loadgen_cpu" { print $2 }')
  awk -v t0="$t0" -v t1="$t1" -v c0="$cpu0" -v c1="$cpu1" -v p0="$pg0" -v p1="$pg1" -v b0="$busy0" -v b1="$busy1" \
    -v lg="${lg:-0}" -v hz="$hz" -v peak="${peak:-0}" -v pg="$name" -v rss="$rss" 'BEGIN {
      wall = (t1 - t0) / 1e9
      server = (c1 - c0) / hz / wall; db = (p1 - p0) / hz / wall
      other = (b1 - b0) / hz / wall - server - lg - (pg == "postgres" ? db : 0)
      printf "server_cpu=%.2f peak_cpu=%.2f db_cpu=%s other_cpu=%.2f rss_mb=%.0f\n",
        server, peak / hz, (pg == "postgres" ? sprintf("%.2f", db) : "-"), other, rss / 1024 }' \
    >>"$work/$name.result"
  echo "== $name: load $(cut -d' ' -f1-3 /proc/loadavg) after" >&2
}

i=0
for backend in $BACKENDS; do
  port=$((BASE_PORT + i))
  i=$((i + 1))
  case $backend in
    sqlite) run sqlite "sqlite://$work/bench.db" "$port" ;;
    postgres)
      db="rw_bench_$$_$i"
      psql -q "$PG_URL/postgres" -c "CREATE DATABASE $db" >/dev/null
      databases+=("$db")
      run postgres "$PG_URL/$db" "$port" "$db"
      ;;
    *) echo "unknown backend $backend: use sqlite or postgres" >&2; exit 2 ;;
  esac
done

# One column per backend.
get() { tr ' ' '\n' <"$work/$1.result" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
row() {
  local label=$1; shift
  printf "%-46s" "$label"
  for backend in $BACKENDS; do
    local cell="" key value
    for key in "$@"; do
      value=$(get "$backend" "$key")
      case $value in *.*) value=$(printf "%.1f" "$value") ;; esac
      cell="$cell${cell:+ / }$value"
    done
    printf " %24s" "$cell"
  done
  echo
}
echo
echo "$HOSTS hosts, long-poll wait ${WAIT} s; ${MEASURE} s window after a ${WARMUP} s warm-up, release at +${RELEASE_AT} s"
echo "server pinned to CPU 0, load generator to CPU 1; latencies in ms as p50 / p99 / max"
printf "%-46s" "backend"
for backend in $BACKENDS; do printf " %24s" "$backend"; done
echo
row "requests/s (long-polls + reports)" rps
row "long-poll, change delivered: lag" changed_p50 changed_p99 changed_max
row "long-poll, timed out: time beyond the wait" timedout_p50 timedout_p99 timedout_max
row "report (POST)" report_p50 report_p99 report_max
row "register (warm-up: all hosts within ${STAGGER} s)" register_p50 register_p99 register_max
row "count: changes / timed out / reports" changed_n timedout_n report_n
row "server CPU, cores: window / busiest second" server_cpu peak_cpu
row "postgres CPU, cores (window)" db_cpu
row "server peak RSS, MB" rss_mb
row "errors" errors
row "rollout: outcome / hosts on it / lead time s" outcome on_version lead_s
row "noise, cores: rest of machine / loadgen" other_cpu loadgen_cpu
