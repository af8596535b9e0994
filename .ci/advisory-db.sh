#!/usr/bin/env bash
# Seeds cargo-deny's advisory database from the committed snapshot of RustSec's
# advisory-db (.ci/advisory-db.tar.gz: github.com/rustsec/advisory-db at commit
# bf5c0d245a92671908518d7e765914d437954ed6, 2026-08-21, without its .git), for a CI
# machine that cannot reach GitHub; then `cargo deny --offline check` reads it.
# cargo-deny dates the database by its HEAD commit, so the commit made here carries the
# snapshot's date: deny.toml's maximum-db-staleness then says how old it may get.
# To refresh: replace the tarball with a newer snapshot and the commit and date here.
set -euo pipefail
cd "$(dirname "$0")/.."
db="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
rm -rf "$db"
mkdir -p "$db"
tar -xzf .ci/advisory-db.tar.gz -C "$db"
export GIT_AUTHOR_DATE=2026-08-21T08:28:40+02:00 GIT_COMMITTER_DATE=2026-08-21T08:28:40+02:00
git -C "$db" init -q
git -C "$db" add -A
git -C "$db" -c user.name=rustsec-snapshot -c user.email=snapshot@localhost commit -qm "advisory-db bf5c0d2"
