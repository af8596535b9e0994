#!/usr/bin/env bash
# Schemathesis (PyPI) drives the server's own OpenAPI document against a running server
# with an admin token: no 5xx, no status, content type or body the document does not
# describe. Bounded in time; exits non-zero on any failure.
#
# Uses target/debug/rollwave (built by `cargo test --workspace` or `cargo build`) and the
# venv target/ci-venv (created here if missing). VENV=… picks another one.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${VENV:-target/ci-venv}"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q schemathesis openapi-spec-validator
fi
[ -x target/debug/rollwave ] || cargo build -q --bin rollwave
rollwave="$PWD/target/debug/rollwave"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

token="rw_$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"

ROLLWAVE_BOOTSTRAP_TOKEN="$token" "$rollwave" server --driver noop --noop-delay 200ms \
  --db "sqlite://$work/db" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server_pid=$!

deadline=$((SECONDS + 60))
ready() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' "$base/readyz" 2>/dev/null
}
until ready; do
  if ! kill -0 "$server_pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "the server did not become ready:" >&2
    cat "$work/server.log" >&2
    exit 1
  fi
  sleep 0.2
done

# Data for the reads to find: a service with two regions and a release in it.
cat >"$work/web.yaml" <<'EOF'
service: web
environments:
  prod:
    regions:
      r1: { zones: { z1: 1 } }
      r2: { zones: { z2: 1 } }
stages:
  - { name: prod, environment: prod }
EOF
export ROLLWAVE_SERVER="$base" ROLLWAVE_TOKEN="$token"
"$rollwave" service apply "$work/web.yaml" >/dev/null
"$rollwave" release create web v1 >/dev/null

# Schemathesis keeps a cache in its working directory: run it in the scratch one.
venv="$(cd "$venv" && pwd)"
st() { (cd "$work" && "$venv/bin/schemathesis" "$@"); }
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
common=(-H "Authorization: Bearer $token" --checks "$checks" --request-timeout 10 --seed 1
  --suppress-health-check all --generation-database none)

# The seeded service's names, so that the first pass reaches the handlers' logic rather
# than their 404s; `wait` is fixed at 1 s there so that the long polls (a host's desired
# state, a region's routes) answer within the request timeout.
cat >"$work/schemathesis.toml" <<'EOF'
[parameters]
service = "web"
environment = "prod"
host = "z1-1"
region = "r1"
version = "v1"
wait = 1
EOF

status=0
# Left out of every pass: the event stream, which never ends by design (tests/api.rs
# reads it). Revoking tokens runs on its own, last: a revoked run token would turn the
# rest into 401s.
skip=(--exclude-path /v1/events/stream --exclude-path "/v1/tokens/{id}" --exclude-path "/v1/tokens/{id}/revoke")
st --config-file "$work/schemathesis.toml" run "$base/v1/openapi.json" "${common[@]}" --max-time 90 "${skip[@]}" \
  || status=1
# Every parameter generated: unknown names and odd values (the long polls' unknown hosts
# and services answer at once; known ones wait at most the handlers' 60 s cap).
st run "$base/v1/openapi.json" "${common[@]}" --max-time 60 "${skip[@]}" || status=1
st run "$base/v1/openapi.json" "${common[@]}" --max-time 30 \
  --include-path "/v1/tokens/{id}" --include-path "/v1/tokens/{id}/revoke" || status=1

if [ $status -ne 0 ]; then
  echo "schemathesis found failures; the server's log is:" >&2
  tail -n 50 "$work/server.log" >&2
fi
exit $status
