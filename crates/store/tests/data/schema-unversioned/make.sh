#!/usr/bin/env bash
# Remakes the schema-only dumps of a database created by the last release whose schema
# was not versioned (no schema_migrations table): runs that release's server (the binary
# given as $1) on an empty SQLite file and on an empty PostgreSQL database until it
# answers, stops it, and dumps each schema. PostgreSQL is the server named by
# ROLLWAVE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?the rollwave binary of the release whose schema to dump}
pg=${ROLLWAVE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

schema_of() { # DB-URL
    ROLLWAVE_BOOTSTRAP_TOKEN= "$bin" server --db "$1" --listen 127.0.0.1:7172 --driver noop \
        --node-id schema-fixture 2>"$work/server.log" &
    local pid=$!
    for _ in $(seq 300); do curl -sf http://127.0.0.1:7172/healthz >/dev/null && break; sleep 0.1; done
    kill -TERM "$pid"; wait "$pid" || true
}

schema_of "sqlite://$work/unversioned.db"
sqlite3 "$work/unversioned.db" .schema >"$here/sqlite.sql"

db=rollwave_schema_fixture_$$
psql -q "$pg" -c "CREATE DATABASE $db"
schema_of "${pg%/*}/$db"
# psql's \restrict lines (newer pg_dump) are for psql alone; the test runs the SQL itself.
pg_dump --schema-only --no-owner --no-privileges "${pg%/*}/$db" | grep -v '^\\' >"$here/postgres.sql"
psql -q "$pg" -c "DROP DATABASE $db"
