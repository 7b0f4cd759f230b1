#!/usr/bin/env bash
# The service on this machine, without Docker, from Debian's packages, with
# data kept under .local/ (LOCAL_DIR) between runs. Settings come from
# .env.local; the real environment wins.
#
#   local.sh run    make run: PostgreSQL, Redis and the service (debug build) in the
#                   foreground on BIND (127.0.0.1:8000); Ctrl-C stops them all
#   local.sh up     make local: the whole topology in the background, PostgreSQL,
#                   Redis, the service with its workers (release build) and
#                   nginx with the shipped nginx.conf on NGINX_LISTEN (127.0.0.1:8080)
#   local.sh down   make local-down: stops all that; committed data stays
#
# Both create the database and the demo user (demo / demo-password) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

services=scripts/services.sh
local_dir=${LOCAL_DIR:-.local}
mode=${1:-}
case "$mode" in run|up|down) ;; *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;; esac

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

stop_servers() {
    "$services" redis-stop "$local_dir/redis" || true
    "$services" pg-stop "$local_dir/postgres" || true
}

# The service's graceful stop: SIGTERM to the master, which drains its
# workers for up to GRACEFUL_TIMEOUT.
stop_service() {
    local pid
    [ -s "$local_dir/api.pid" ] || return 0
    pid=$(cat "$local_dir/api.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $(((${GRACEFUL_TIMEOUT:-30} + 5) * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$local_dir/api.pid"
}

if [ "$mode" = down ]; then
    scripts/nginx.sh stop "$local_dir/nginx"
    stop_service
    stop_servers
    echo "stopped; the data stays in $local_dir"
    exit 0
fi

if [ "$mode" = up ]; then
    "$services" ensure-packages postgres redis nginx
    profile=release
else
    "$services" ensure-packages postgres redis
    profile=debug
fi
mkdir -p "$local_dir"
chmod 755 "$local_dir"
# Whatever fails half-way, nothing is left running.
trap 'scripts/nginx.sh stop "$local_dir/nginx"; stop_service; stop_servers' EXIT

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
package=$(scripts/package-name.sh)
if [ "$profile" = release ]; then cargo build --release --bin "$package"; else cargo build --bin "$package"; fi
service=${CARGO_TARGET_DIR:-target}/$profile/$package
"$service" db migrate
if ! out=$(echo demo-password | "$service" users add demo --name "Demo User" 2>&1); then
    grep -q taken <<<"$out" || { echo "$out" >&2; exit 1; }
fi

if [ "$mode" = run ]; then
    trap stop_servers EXIT
    echo "serving on http://$BIND (docs: http://$BIND/docs); Ctrl-C stops"
    # In the background so that a SIGTERM to this script reaches the service
    # too (a foreground child would hold the trap until it exits by itself).
    "$service" serve &
    api_pid=$!
    trap 'kill -TERM "$api_pid" 2>/dev/null || true' INT TERM
    while kill -0 "$api_pid" 2>/dev/null; do wait "$api_pid" || true; done
    exit 0
fi

# up: the service detached from this terminal, then nginx in front of it.
stop_service
setsid "$service" serve >>"$local_dir/api.log" 2>&1 </dev/null &
echo $! >"$local_dir/api.pid"
# Either worker may answer on BIND, so a second look could find the other
# one still waiting on a dependency: the first ready answer decides.
ready=
for _ in $(seq 1 100); do
    curl -sf "http://$BIND/readyz" >/dev/null 2>&1 && { ready=1; break; }
    kill -0 "$(cat "$local_dir/api.pid")" 2>/dev/null || break
    sleep 0.2
done
[ -n "$ready" ] || { tail -n 30 "$local_dir/api.log" >&2; echo "local.sh: the service did not become ready" >&2; exit 1; }

# nginx wants absolute paths; the settings may be relative to the project.
NGINX_STATIC_ROOT=$(realpath "$NGINX_STATIC_ROOT")
# Its upstream is the service on BIND (and the worker ports beside it).
export API_HOST=${BIND%:*} API_PORT=${BIND##*:}
scripts/nginx.sh stop "$local_dir/nginx"
scripts/nginx.sh start "$local_dir/nginx"
trap - EXIT
echo "up: http://$NGINX_LISTEN (nginx) -> the service on $BIND, PostgreSQL :$pg_port, Redis :$redis_port"
echo "logs: $local_dir/api.log, $local_dir/nginx/nginx.log; stop with make local-down"
