#!/usr/bin/env bash
# make bench: the service's speed through the shipped nginx, with nginx's own
# ceilings measured in the same run on the same machine.
#
#   bench.sh           the full run: docs/benchmarks.md and docs/benchmarks.json
#   bench.sh --smoke   about a second per figure, results in a scratch
#                      directory; fails if any figure errs (make test runs it)
#
# It starts make local's topology (release build, WORKERS workers, nginx with
# nginx.conf) on free ports with a scratch data directory, so a running
# make local is left alone, and stops it at the end. The figures:
#   ceilings  nginx answering `return 200` itself, and the same nginx
#             (same upstream keepalive) proxying to a second nginx that
#             answers `return 200`: the best any proxied service could do
#   service   each endpoint through nginx, and /v1/hello straight to the service
# Settings: BENCH_DURATION (seconds a figure, 10), BENCH_CONNECTIONS (64),
# BENCH_THREADS (wrk's, 2), WORKERS (2), BENCH_OUT (docs).
set -euo pipefail
cd "$(dirname "$0")/.."
services=scripts/services.sh

smoke=0
[ "${1:-}" = --smoke ] && smoke=1
duration=${BENCH_DURATION:-10}
warmup=2
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
out=${BENCH_OUT:-docs}
if [ "$smoke" = 1 ]; then
    duration=1 warmup=0 connections=8 threads=1
fi

"$services" ensure-packages postgres redis nginx wrk
command -v python3 >/dev/null || "$services" ensure-packages python-venv

scratch=$(mktemp -d -t bench-XXXXXX)
chmod 755 "$scratch" # the postgres user must reach its data directory
[ "$smoke" = 1 ] && out=${BENCH_OUT:-$scratch/out}
mkdir -p "$out"

# make local's settings with free ports and scratch data, and the limits that
# would turn a load test into 429s lifted (the report lists them, BENCH_LIFTED).
port() { "$services" free-port "$@"; }
with_port() { sed -E "s#^([a-z]+://[^/]*:)[0-9]+#\1$2#" <<<"$1"; }
env_local() { sed -n "s/^$1=//p" .env.local; }
export LOCAL_DIR=$scratch/local
export WORKERS=${WORKERS:-2}
export BIND=127.0.0.1:$(port) FIRST_WORKER_PORT=$(port "$WORKERS")
export NGINX_LISTEN=127.0.0.1:$(port)
export DATABASE_URL=$(with_port "$(env_local DATABASE_URL)" "$(port)")
export REDIS_URL=$(with_port "$(env_local REDIS_URL)" "$(port)")
export RATE_LIMIT_PER_MINUTE=1000000000
export BENCH_LIFTED=RATE_LIMIT_PER_MINUTE
# wrk's connections all come from one address (limit_conn's largest: 65535).
export NGINX_CONNECTIONS_PER_ADDRESS=65535
BENCH_LIFTED+=" NGINX_CONNECTIONS_PER_ADDRESS"
export NGINX_LOGIN_RATE=1000000r/s NGINX_LOGIN_BURST=1000000
BENCH_LIFTED+=" NGINX_LOGIN_RATE NGINX_LOGIN_BURST"
# Every attempt holds a place in its account's count while it is checked,
# so one account allows LOGIN_MAX_FAILURES logins at once; wrk's 64
# connections log in as one user.
export LOGIN_MAX_FAILURES=1000000000
BENCH_LIFTED+=" LOGIN_MAX_FAILURES"
# The rest as make local has it (a variable already set wins).
while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    name=${line%%=*}
    [ -n "${!name:-}" ] || export "$line"
done <.env.local
export NGINX_STATIC_ROOT=$(realpath "$NGINX_STATIC_ROOT")
export DATABASE_POOL_SIZE=${DATABASE_POOL_SIZE:-16}

ceilings=()
finish() {
    local dir
    for dir in "${ceilings[@]}"; do scripts/nginx.sh stop "$dir" || true; done
    scripts/local.sh down >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap finish EXIT

echo "bench: starting the topology (release build)"
started=$SECONDS
scripts/local.sh up >"$scratch/local-up.log" 2>&1 || { cat "$scratch/local-up.log" >&2; exit 1; }
echo "bench: up in $((SECONDS - started)) s"
# nginx's upstream is the service, as make local's is.
export API_HOST=${BIND%:*} API_PORT=${BIND##*:}
pg_port=$(sed -E 's#^[a-z]+://[^@]*@[^:]+:([0-9]+).*#\1#' <<<"$DATABASE_URL")
pg_user=$(sed -E 's#^[a-z]+://([^:@]+).*#\1#' <<<"$DATABASE_URL")
psql=("$("$services" pg-bin)/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d "${DATABASE_URL##*/}" -qtA)

# A user and an admin to sign in as, and 10,000 more to search through.
# (The service's binary is named after its package.)
package=$(sed -nE 's/^name = "(.*)"$/\1/p' api/Cargo.toml | head -n 1)
service=${CARGO_TARGET_DIR:-target}/release/$package
password=bench-password-1
printf '%s\n' "$password" | "$service" users add bench-user >/dev/null
printf '%s\n' "$password" | "$service" users add bench-admin --admin >/dev/null
"${psql[@]}" -c "INSERT INTO users (username, name, password_hash)
    SELECT 'member' || lpad(i::text, 5, '0'), 'Member ' || i, password_hash
    FROM generate_series(1, 10000) AS i, (SELECT password_hash FROM users WHERE username = 'bench-user') AS u
    ON CONFLICT DO NOTHING" >/dev/null
login_body() { printf '{"username":"%s","password":"%s"}' "$1" "$password"; }
token_of() {
    curl -sf -X POST "http://$BIND/login" -H 'Content-Type: application/json' -d "$(login_body "$1")" \
        | sed -E 's/.*"token":"([^"]+)".*/\1/'
}
user_token=$(token_of bench-user)
admin_token=$(token_of bench-admin)

# The ceilings. The shipped nginx.conf, filled in as for the service, with
# its catch-all location answering itself...
own=$scratch/ceiling-own
mkdir -p "$own"
perl -0pe 's#location / \{\s*proxy_pass http://api;\s*\}#location / {\n            return 200 "ok\\n";\n        }#' \
    nginx.conf >"$own/source.conf"
grep -q 'return 200 "ok' "$own/source.conf" || { echo "bench: nginx.conf's 'location /' was not found" >&2; exit 1; }
own_listen=127.0.0.1:$(port)
NGINX_CONF_FILE=$own/source.conf NGINX_LISTEN=$own_listen scripts/nginx.sh start "$own"
ceilings+=("$own")
# ...and proxying, with the same upstream settings, to a second nginx whose
# only job is `return 200`.
backend=$scratch/ceiling-backend
mkdir -p "$backend"
backend_port=$(port)
cat >"$backend/source.conf" <<CONF
worker_processes auto;
pid nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000;
    server {
        listen 127.0.0.1:$backend_port;
        location / { return 200 "ok\n"; }
    }
}
CONF
NGINX_CONF_FILE=$backend/source.conf scripts/nginx.sh start "$backend"
ceilings+=("$backend")
proxied=$scratch/ceiling-proxied
proxied_listen=127.0.0.1:$(port)
NGINX_LISTEN=$proxied_listen API_PORT=$backend_port FIRST_WORKER_PORT= scripts/nginx.sh start "$proxied"
ceilings+=("$proxied")

# Peak RSS (KiB) of the master and its workers, and peak PostgreSQL
# connections of the service's user, sampled while a figure runs.
master=$(cat "$LOCAL_DIR/api.pid")
sample() {
    local stop=$1 result=$2 rss pg peak_rss=0 peak_pg=0 pid
    while [ ! -e "$stop" ]; do
        rss=0
        for pid in "$master" $(pgrep -P "$master" || true); do
            rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
        done
        pg=$("${psql[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE usename = '$pg_user'" 2>/dev/null || echo 0)
        [ "$rss" -gt "$peak_rss" ] && peak_rss=$rss
        [ "$pg" -gt "$peak_pg" ] && peak_pg=$pg
        sleep 0.25
    done
    echo "$peak_rss $peak_pg" >"$result"
}

results=$scratch/results.jsonl
: >"$results"
# figure NAME KIND URL [METHOD BODY HEADER TARGET]: HEADER is one "Name:
# value" to send; TARGET, what the report holds the figure to (JSON, see
# scripts/bench_report.py).
figure() {
    local name=$1 kind=$2 url=$3 method=${4:-GET} body=${5:-} header=${6:-} target=${7:-null} line peaks
    echo "bench: $name"
    export BENCH_METHOD=$method BENCH_BODY=$body BENCH_HEADER=$header
    if [ "$warmup" -gt 0 ]; then
        wrk -t "$threads" -c "$connections" -d "${warmup}s" -s scripts/bench.lua "$url" >/dev/null
    fi
    rm -f "$scratch/stop" "$scratch/peaks"
    sample "$scratch/stop" "$scratch/peaks" &
    line=$(wrk -t "$threads" -c "$connections" -d "${duration}s" --timeout 10s -s scripts/bench.lua "$url" | tail -n 1)
    touch "$scratch/stop"
    wait
    read -r rss pg <"$scratch/peaks"
    if [ "$kind" = ceiling ]; then rss=null pg=null; fi
    printf '{"name":"%s","kind":"%s","url":"%s","method":"%s","peak_rss_kib":%s,"peak_pg_connections":%s,"target":%s,"wrk":%s}\n' \
        "$name" "$kind" "${url#http://*/}" "$method" "$rss" "$pg" "$target" "$line" >>"$results"
}

figure "nginx return 200" ceiling "http://$own_listen/v1/hello"
figure "nginx proxying to nginx" ceiling "http://$proxied_listen/v1/hello"
figure "GET /v1/hello" nginx "http://$NGINX_LISTEN/v1/hello" GET "" "" '{"share":0.70}'
figure "GET /v1/hello, direct" direct "http://$BIND/v1/hello"
figure "GET /getName" nginx "http://$NGINX_LISTEN/getName" GET "" "Authorization: Bearer $user_token" '{"share":0.40}'
figure "POST /setName" nginx "http://$NGINX_LISTEN/setName" POST '{"name":"Bench User"}' "Authorization: Bearer $user_token"
figure "GET /v2/users?q=member01" nginx "http://$NGINX_LISTEN/v2/users?q=member01" GET "" "Authorization: Bearer $admin_token"
# A login is one password check, which keeps a core busy for hash_ms: the
# cores bound the logins a second.
hash_ms=$("$service" users hash-time)
login_bound=$(awk -v cores="$(nproc)" -v ms="$hash_ms" 'BEGIN { printf "%.1f", cores / (ms / 1000) }')
export BENCH_NOTES="One password verification takes $(printf '%.1f' "$hash_ms") ms on one core here, so logins are bounded by $(nproc) cores / $(printf '%.1f' "$hash_ms") ms = $(printf '%.0f' "$login_bound")/s."
figure "POST /login" nginx "http://$NGINX_LISTEN/login" POST "$(login_body bench-user)" "" \
    "{\"share\":0.85,\"of\":\"cores / hash time\",\"rps\":$login_bound}"

BENCH_SMOKE=$smoke BENCH_RESULTS=$results BENCH_OUT=$out \
BENCH_DURATION=$duration BENCH_CONNECTIONS=$connections BENCH_THREADS=$threads \
    python3 scripts/bench_report.py
