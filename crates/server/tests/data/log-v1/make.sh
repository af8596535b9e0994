#!/usr/bin/env bash
# Remakes this fixture: runs a rollwave server of the release under test (the binary given
# as $1, by default the workspace's target/debug/rollwave) through a session that writes
# every log record kind and every input kind, then dumps its database and its answers here.
#
#   cargo build --bin rollwave && crates/server/tests/data/log-v1/make.sh
#
# Needs curl, jq and sqlite3. Takes about a minute. Polling with sleep is fine here: this
# is a script that drives a real server, not a test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../../../../../target/debug/rollwave}
work=$(mktemp -d)
trap 'kill "${traffic_pid:-}" "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
db="sqlite://$work/rollwave.db"
port=${ROLLWAVE_FIXTURE_PORT:-7171}
base="http://127.0.0.1:$port"
ADMIN=rw_0000000000000000000000000000000000000000000000000000000000000001
export ROLLWAVE_BOOTSTRAP_TOKEN=$ADMIN ROLLWAVE_SERVER=$base ROLLWAVE_TOKEN=$ADMIN

start() { # DRIVER
    "$bin" server --db "$db" --listen "127.0.0.1:$port" --driver "$1" --noop-delay 100ms \
        --host-timeout 2s --datapoint-bin 1s --node-id fixture-v1 2>>"$work/server.log" &
    server_pid=$!
    wait_for "the server answers" curl -sf "$base/healthz"
}
stop() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=; }
api() { # METHOD PATH [BODY]
    curl -sf -X "$1" -H "Authorization: Bearer $ADMIN" -H 'content-type: application/json' \
        "$base$2" ${3:+--data "$3"}
}
wait_for() { # WHAT COMMAND...
    local what=$1; shift
    for _ in $(seq 600); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "timed out waiting until $what; the last events:" >&2
    api GET '/v1/events?after=0&limit=1000' | jq -c '.events[-15:][] | [.service, .release, .kind, .scope, .reason]' >&2 || true
    exit 1
}
outcome_is() { [ "$(api GET "/v1/services/$1/releases/$2" | jq -r .outcome)" = "$3" ]; }
has_event() { # SERVICE VERSION KIND [REASON-PART]
    api GET "/v1/services/$1/releases/$2" |
        jq -e --arg k "$3" --arg r "${4:-}" 'any(.events[]; .kind == $k and ((.reason // "") | contains($r)))'
}
any_event() { # SERVICE KIND
    api GET "/v1/events?after=0&limit=1000&service=$1" | jq -e --arg k "$2" 'any(.events[]; .kind == $k)'
}
logged() { [ "$(sqlite3 "$work/rollwave.db" "SELECT COUNT(*) FROM log WHERE body LIKE '{\"type\":\"$1\"%'")" -ge "$2" ]; }

# Traffic as routers would push it: the one-box of each environment on the new version
# (in beta failing $work/err of its 100 requests), every other host on the old one (in
# beta failing $work/errold of them).
buckets() { echo "[0,0,$1,0,0,0,0,0,0,0,0,0,0]"; }
sample() { echo "{\"host\":\"$1\",\"version\":\"$2\",\"requests\":100,\"errors\":$3,\"latency_buckets\":$(buckets 100)}"; }
push_traffic() {
    local new old err errold
    new=$(cat "$work/new"); old=$(cat "$work/old"); err=$(cat "$work/err"); errold=$(cat "$work/errold")
    api POST /v1/metrics "{\"service\":\"shop\",\"environment\":\"beta\",\"samples\":[$(sample b1-1 "$new" "$err"),$(sample b1-2 "$old" "$errold")]}" || true
    api POST /v1/metrics "{\"service\":\"shop\",\"environment\":\"prod\",\"samples\":[$(sample p1-1 "$new" 0),$(sample p1-2 "$old" 0),$(sample p2-1 "$old" 0),$(sample p2-2 "$old" 0)]}" || true
}
traffic() { while [ -e "$work/traffic" ]; do push_traffic >/dev/null; sleep 0.3; done; }
release() { # SERVICE VERSION NEW OLD ERRORS
    echo "$3" >"$work/new"; echo "$4" >"$work/old"; echo "$5" >"$work/err"
    api POST "/v1/services/$1/releases" "{\"version\":\"$2\",\"artifact\":\"https://example.com/$1-$2.tgz\",\"sha256\":null}" >/dev/null
}

# --- Part 1: the noop driver; service shop (stage test, judge, alarm, approval) -------
start noop
api POST /v1/services "{\"file\":\"shop.yaml\",\"manifest\":$(jq -Rs . <"$here/shop.yaml")}" >/dev/null
api POST /v1/tokens '{"name":"dep","role":"deployer"}' >/dev/null
api POST /v1/tokens '{"name":"ag","role":"agent","host":"shop/prod/p1-1"}' >/dev/null
touch "$work/traffic"; echo v0 >"$work/new"; echo v0 >"$work/old"; echo 0 >"$work/err"; echo 0 >"$work/errold"
traffic & traffic_pid=$!

# v1: its beta test passes, the judge passes its one-boxes; prod waits for approval,
# which comes after the operator held and resumed stage prod.
release shop v1 v1 v0 0
wait_for "v1 waits for approval" has_event shop v1 blocked approval
api POST /v1/services/shop/hold '{"stage":"prod"}' >/dev/null
api POST /v1/services/shop/resume '{"stage":"prod"}' >/dev/null
api POST /v1/services/shop/releases/v1/approve '{}' >/dev/null
wait_for "v1 completes" outcome_is shop v1 completed

# v2: once its beta one-box bakes, beta fails 30% of its requests on every host: the
# zone alarm fires where v2 deploys and halts it; the operator retries it, then rolls it
# back. Then beta heals and the alarm clears.
release shop v2 v2 v1 0
wait_for "v2's one-box bakes" has_event shop v2 bake_started
echo 30 >"$work/errold"; echo 30 >"$work/err"
wait_for "v2 is halted" outcome_is shop v2 halted
wait_for "the alarm fired" any_event shop alarm_fired
api POST /v1/services/shop/releases/v2/retry '{}' >/dev/null
wait_for "v2 is retried" has_event shop v2 release_resumed
api POST /v1/services/shop/releases/v2/rollback '{}' >/dev/null
wait_for "v2 is rolled back" outcome_is shop v2 rolled_back
echo 0 >"$work/errold"; echo 0 >"$work/err"
wait_for "the alarm clears" any_event shop alarm_cleared

# v3: healthy; the whole service held and resumed on the way; approved; completes.
release shop v3 v3 v1 0
api POST /v1/services/shop/hold '{}' >/dev/null
api POST /v1/services/shop/resume '{}' >/dev/null
wait_for "v3 waits for approval" has_event shop v3 blocked approval
api POST /v1/services/shop/releases/v3/approve '{}' >/dev/null
wait_for "v3 completes" outcome_is shop v3 completed
rm "$work/traffic"; wait "$traffic_pid"; traffic_pid=
stop

# --- Part 2: the agent driver; service fleet (register, report, lost) -----------------
start agent
api POST /v1/services "{\"file\":\"fleet.yaml\",\"manifest\":$(jq -Rs . <"$here/fleet.yaml")}" >/dev/null
for host in f1-1 f1-2; do
    api POST /v1/hosts/register "{\"service\":\"fleet\",\"environment\":\"prod\",\"host\":\"$host\",\"region\":\"r1\",\"zone\":\"f1\",\"address\":null}" >/dev/null
done
release fleet v1 v1 v0 0
# Each host does what an agent does: asks what to run, reports it ran (one hook passed).
report() {
    local host=$1 desired
    desired=$(api GET "/v1/services/fleet/hosts/prod/$host/desired?wait=0")
    [ "$(jq -r .version <<<"$desired")" = v1 ] || return 0
    api POST "/v1/services/fleet/hosts/prod/$host/report" \
        "{\"command\":$(jq .command <<<"$desired"),\"ok\":true,\"reason\":null,\"hooks\":[{\"name\":\"start\",\"exit_code\":0,\"duration_ms\":12,\"timed_out\":false,\"ok\":true,\"output\":\"started\\n\"}]}" >/dev/null
}
fleet_done() { report f1-1; report f1-2; outcome_is fleet v1 completed; }
wait_for "fleet v1 completes" fleet_done
# Then both hosts fall silent and are lost.
wait_for "both fleet hosts are lost" logged host_lost 2

# --- The answers, then the database as it is at rest ----------------------------------
api GET /v1/services/shop/releases | jq -c . >"$here/releases.json"
api GET /v1/services/fleet/releases | jq -c . >"$here/fleet-releases.json"
"$bin" status shop --output json >"$here/status.json"
stop
sqlite3 "$work/rollwave.db" .dump >"$here/database.sql"
sqlite3 "$work/rollwave.db" "SELECT kind, COUNT(*) FROM log GROUP BY kind" >&2
sqlite3 "$work/rollwave.db" "SELECT json_extract(body, '$.type') t, COUNT(*) FROM log WHERE kind = 'input' GROUP BY t" >&2
