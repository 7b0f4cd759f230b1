#!/usr/bin/env bash
# The run command (`make run`): installs what is missing, starts PostgreSQL and
# Redis from Debian's packages under .local/ (data kept between runs), applies
# init.sql, creates the demo user (demo / demo-password) and serves the API in
# the foreground on BIND (127.0.0.1:8000). Ctrl-C stops the service and both
# servers. Settings come from .env.local; the real environment wins.
set -euo pipefail
cd "$(dirname "$0")/.."

services=scripts/services.sh
local_dir=${LOCAL_DIR:-.local}

# Same precedence as the binary: a variable already set is kept.
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    name=${line%%=*}
    [ -n "${!name:-}" ] || export "$line"
done < .env.local

# postgres://USER:PASSWORD@HOST:PORT/DATABASE and redis://HOST:PORT/N
url_part() { sed -E "s#^[a-z]+://(([^:@/]*)(:([^@/]*))?@)?[^:/]+:([0-9]+)(/([^?]*))?.*#\\$1#" <<<"$2"; }
pg_user=$(url_part 2 "$DATABASE_URL")
pg_password=$(url_part 4 "$DATABASE_URL")
pg_port=$(url_part 5 "$DATABASE_URL")
pg_database=$(url_part 7 "$DATABASE_URL")
redis_port=$(url_part 5 "$REDIS_URL")

"$services" ensure-packages postgres redis
mkdir -p "$local_dir"
chmod 755 "$local_dir"

stop_servers() {
    "$services" redis-stop "$local_dir/redis" || true
    "$services" pg-stop "$local_dir/postgres" || true
}
trap stop_servers EXIT

"$services" pg-start "$local_dir/postgres" "$pg_port"
"$services" redis-start "$local_dir/redis" "$redis_port" persist

# The cluster trusts loopback connections; the role and database are the ones
# DATABASE_URL names, created on the first run.
psql=("$("$services" pg-bin)/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qtA)
"${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$pg_user'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE ROLE \"$pg_user\" LOGIN PASSWORD '$pg_password'"
"${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$pg_database'" | grep -q 1 \
    || "${psql[@]}" -c "CREATE DATABASE \"$pg_database\" OWNER \"$pg_user\""

# The binary is named after the package in api/Cargo.toml.
package=$(sed -nE 's/^name = "(.*)"$/\1/p' api/Cargo.toml | head -n 1)
cargo build --bin "$package"
service=${CARGO_TARGET_DIR:-target}/debug/$package
"$service" db init
if ! out=$(echo demo-password | "$service" users add demo --name "Demo User" 2>&1); then
    grep -q taken <<<"$out" || { echo "$out" >&2; exit 1; }
fi

echo "serving on http://$BIND (docs: http://$BIND/docs); Ctrl-C stops"
# In the background so that a SIGTERM to this script reaches the service too
# (a foreground child would hold the trap until it exits by itself).
"$service" serve &
api_pid=$!
trap 'kill -TERM "$api_pid" 2>/dev/null || true' INT TERM
while kill -0 "$api_pid" 2>/dev/null; do wait "$api_pid" || true; done
