#!/usr/bin/env bash
# new-migration.sh NAME [MODULE]: `make migration NAME=add_x [MODULE=auth]`.
# Writes the next numbered migration, api/migrations/V<n>__NAME.sql (or the
# module's own, api/src/modules/MODULE/migrations/), for you to fill in. The
# build embeds it; `make test` then checks that init.sql describes the
# schema the migrations build.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:-}
module=${2:-}
if ! [[ $name =~ ^[a-z0-9_]+$ ]]; then
    echo "usage: make migration NAME=add_nickname [MODULE=auth] (NAME: lowercase letters, digits, _)" >&2
    exit 2
fi
if [ -n "$module" ]; then
    dir=api/src/modules/$module/migrations
    # A module's migrations are embedded and listed in modules.rs when the
    # module starts its history (its V1): a file in a folder no one reads
    # would never run.
    [ -d "$dir" ] || { echo "module '$module' has no migrations/ yet: give it its first by hand, wired as modules/auth's are" >&2; exit 2; }
else
    dir=api/migrations
fi
last=$(find "$dir" -maxdepth 1 -name 'V*__*.sql' -printf '%f\n' | sed -E 's/^V([0-9]+)__.*/\1/' | sort -n | tail -n 1)
file=$dir/V$((${last:-0} + 1))__$name.sql
cat >"$file" <<SQL
-- $name: what it changes and why. Runs once per database, in a
-- transaction; while the previous release still serves beside this one,
-- add and backfill here, and drop in a later migration.
SQL
echo "wrote $file: write the change in it, make the same change in init.sql, then make test"
