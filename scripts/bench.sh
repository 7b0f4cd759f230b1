#!/usr/bin/env bash
# make bench: the service's speed and memory through the shipped nginx, with
# nginx's own ceilings measured in the same run on the same machine.
#
#   bench.sh           the full run: docs/benchmarks.md and docs/benchmarks.json
#   bench.sh --smoke   about a second per figure, one round, results in a
#                      scratch directory; fails if any figure errs (make test
#                      runs it)
#
# It starts make local's topology (release build, WORKERS workers, nginx with
# nginx.conf) on free ports with a scratch data directory, so a running
# make local is left alone, and stops it at the end. Every figure is measured
# BENCH_ROUNDS times (3), round after round, and the report gives each one's
# median and spread: one lucky run cannot carry a claim. A figure held to a
# reference (a ceiling, pgbench, the hash bound) is measured between two
# slices of that reference, and held to their mean. The figures:
#   ceilings  nginx answering `return 200` itself, and the same nginx
#             (same upstream keepalive) proxying to a second nginx that
#             answers `return 200`: the best any proxied service could do
#   service   each endpoint through nginx, and /v1/hello straight to the service
#   floor     /v1/hello from poem and poem-openapi alone (api/examples/floor.rs),
#             two processes behind the same nginx as the workers: what the
#             framework leaves of the ceiling before the service's own work
#   pgbench   PostgreSQL alone running /setName's statement, the bound
#             for /setName across many users
#   hash      one password verification a core at once: cores / hash time
#             bounds the logins a second
#   memory    the service's RSS (the master and its processes) idle (at start, and once the load
#             is over) and at peak under each figure
# Settings: BENCH_DURATION (seconds a figure, 10), BENCH_CONNECTIONS (64),
# BENCH_THREADS (wrk's, 2), BENCH_ROUNDS (3), WORKERS (2), BENCH_OUT (docs).
set -euo pipefail
cd "$(dirname "$0")/.."
services=scripts/services.sh

smoke=0
[ "${1:-}" = --smoke ] && smoke=1
duration=${BENCH_DURATION:-10}
warmup=2
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
rounds=${BENCH_ROUNDS:-3}
out=${BENCH_OUT:-docs}
# The latency probe: GET /v1/hello from a few connections, each waiting
# PACE ms between its requests, so that the probe itself loads the machine
# little (a few hundred requests a second).
few=8 pace=10
probe="GET /v1/hello, paced ($few connections, a request each ${pace} ms)"
# Seconds the service is left alone before its idle memory is read: past the
# hashing threads' IDLE_RELEASE (passwords.rs).
settle=12
if [ "$smoke" = 1 ]; then
    duration=1 warmup=0 connections=8 threads=1 rounds=1 settle=0
fi
# The commit measured, as the report states it.
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    commit+=" with uncommitted changes"
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

ceilings=() floor_pids=()
finish() {
    local dir pid
    for dir in "${ceilings[@]}"; do scripts/nginx.sh stop "$dir" || true; done
    for pid in "${floor_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    scripts/local.sh down >/dev/null 2>&1 || true
    # Which answers were not 2xx, and why, once nginx and the service have
    # stopped writing their logs and before the logs go.
    python3 scripts/bench_report.py --explain "$LOCAL_DIR/nginx/nginx.log" "$LOCAL_DIR/api.log" || true
    rm -rf "$scratch"
}
trap finish EXIT

echo "bench: starting the topology (release build)"
started=$SECONDS
scripts/local.sh up >"$scratch/local-up.log" 2>&1 || { cat "$scratch/local-up.log" >&2; exit 1; }
echo "bench: up in $((SECONDS - started)) s"
# Memory (KiB) of the master and its workers together, now: RSS, and PSS
# (each page shared among them, the binary's code above all, counted once).
master=$(cat "$LOCAL_DIR/api.pid")
# The master and every process below it: its workers, and any process of
# theirs.
service_pids() {
    local queue=("$master") pid
    while [ ${#queue[@]} -gt 0 ]; do
        pid=${queue[0]} queue=("${queue[@]:1}")
        echo "$pid"
        queue+=($(pgrep -P "$pid" || true))
    done
}
memory_now() {
    local field=$1 total=0 pid
    for pid in $(service_pids); do
        total=$((total + $(awk -v field="$field:" '$1 == field {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
rss_now() { memory_now Rss; }
# Before any load, before anyone signs in: the service just started.
sleep 1
started_rss=$(rss_now) started_pss=$(memory_now Pss)
# nginx's upstream is the service, as make local's is.
export API_HOST=${BIND%:*} API_PORT=${BIND##*:}
pg_port=$(sed -E 's#^[a-z]+://[^@]*@[^:]+:([0-9]+).*#\1#' <<<"$DATABASE_URL")
pg_user=$(sed -E 's#^[a-z]+://([^:@]+).*#\1#' <<<"$DATABASE_URL")
psql=("$("$services" pg-bin)/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d "${DATABASE_URL##*/}" -qtA)
# The service's binary, and the floor's example, are named after its package.
package=$(scripts/package-name.sh)
service=${CARGO_TARGET_DIR:-target}/release/$package

# A user, an admin and a user for the login figures to sign in as, 128 users for /setName across many
# users, and 10,000 more to search through.
password=bench-password-1
printf '%s\n' "$password" | "$service" users add bench-user >/dev/null
printf '%s\n' "$password" | "$service" users add bench-admin --admin >/dev/null
# Signs in thousands of times, which ends its older sessions: no other
# figure uses it.
printf '%s\n' "$password" | "$service" users add bench-login >/dev/null
many=128
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
# The first 128 members' headers, one a line, for bench.lua (BENCH_HEADERS).
members=$scratch/members
for i in $(seq 1 "$many"); do
    echo "Authorization: Bearer $(token_of "$(printf 'member%05d' "$i")")"
done >"$members"
[ "$(grep -c 'Bearer .' "$members")" = "$many" ] || { echo "bench: not every member could sign in" >&2; exit 1; }
member_ids=$("${psql[@]}" -c "SELECT min(id) || ' ' || max(id) FROM users WHERE username BETWEEN 'member00001' AND 'member$(printf '%05d' "$many")'")

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
# The floor: poem and poem-openapi answering /v1/hello with nothing of the
# service around them, one current-thread process a worker, behind the
# shipped nginx.conf as the workers are. The smoke run takes the debug
# build the test suite has made already (test-hooks and all): its speed is
# never read.
if [ "$smoke" = 1 ]; then
    cargo build -q -p "$package" --features test-hooks --example floor
    floor_bin=${CARGO_TARGET_DIR:-target}/debug/examples/floor
else
    cargo build -q --release -p "$package" --example floor
    floor_bin=${CARGO_TARGET_DIR:-target}/release/examples/floor
fi
floor_port=$(port "$WORKERS")
for slot in $(seq 0 $((WORKERS - 1))); do
    # Started from a subshell, so that the figures' `wait` for their sampler
    # does not wait for these too.
    floor_pids+=("$("$floor_bin" "127.0.0.1:$((floor_port + slot))" >"$scratch/floor-$slot.log" 2>&1 </dev/null & echo $!)")
done
floor=$scratch/floor-nginx
floor_listen=127.0.0.1:$(port)
NGINX_LISTEN=$floor_listen API_PORT=$floor_port FIRST_WORKER_PORT=$floor_port scripts/nginx.sh start "$floor"
ceilings+=("$floor")
for _ in $(seq 1 100); do
    curl -sf "http://$floor_listen/v1/hello" >/dev/null && break
    sleep 0.1
done

# Peak RSS of the master and its processes and peak PostgreSQL connections of the
# service's user, sampled four times a second while a figure runs. The
# sampler shares the cores it measures, so it is one process, at nice 19,
# reading /proc and starting nothing: a shell loop starting pgrep, awk and
# psql each time (psql's backend at PostgreSQL's priority) put bursts of
# work in front of the service's async threads, and raised the paced probe's
# p99 by half or more (docs/benchmarks.md, round five).
postmaster=$(head -n 1 "$LOCAL_DIR/postgres/data/postmaster.pid")
sample() {
    local stop=$1 result=$2
    nice -n 19 python3 - "$master" "$postmaster" "$pg_user" "$stop" >"$result" <<'PY'
import os
import re
import sys
import time

master, postmaster, user, stop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
# PostgreSQL titles each backend "postgres: [CLUSTER: ]USER DATABASE
# HOST(PORT) STATE": pg_stat_activity's usename, without a connection of
# our own.
backend = re.compile(rb"postgres: (?:[^:\0]*: )?" + re.escape(user.encode()) + rb" ")


def read(path, mode="r"):
    try:
        with open(path, mode) as file:
            return file.read()
    except OSError:  # the process ended between the listing and the read
        return None


def children():
    """Every process below the master (its workers, and any process of
    theirs), and the postmaster's children, from each process's parent in
    /proc/PID/stat (the field after the parenthesised name)."""
    below = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read(f"/proc/{entry}/stat")
            if stat:
                below.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    service, queue = [], list(below.get(master, []))
    while queue:
        pid = queue.pop()
        service.append(pid)
        queue.extend(below.get(pid, []))
    return {master: service, postmaster: below.get(postmaster, [])}


def rss_kib(workers):
    # statm's resident pages are RSS, from the kernel's counters: no walk of
    # the page tables, as smaps_rollup makes.
    statms = (read(f"/proc/{pid}/statm") for pid in [master] + workers)
    return sum(int(statm.split()[1]) * page_kib for statm in statms if statm)


def connections(backends):
    titles = (read(f"/proc/{pid}/cmdline", "rb") for pid in backends)
    return sum(1 for title in titles if title and backend.match(title))


peak_rss = peak_pg = 0
workers_seen = False
# At least one sample, however late this process got a core: at nice 19,
# a short figure (a smoke run's second) can end before it starts.
while True:
    found = children()
    workers_seen |= bool(found[master])
    peak_rss = max(peak_rss, rss_kib(found[master]))
    peak_pg = max(peak_pg, connections(found[postmaster]))
    if os.path.exists(stop):
        break
    time.sleep(0.25)
if not workers_seen:
    sys.exit(f"bench: the service's master ({master}) had no workers to sample")
print(peak_rss, peak_pg)
PY
}

results=$scratch/results.jsonl
: >"$results"
round=1
# record NAME KIND URL METHOD RSS PG TARGET MEASURED [PSS]: one line of
# results. RECORD_EXTRA, if set, is more of its JSON members.
record() {
    printf '{"round":%s,"name":"%s","kind":"%s","url":"%s","method":"%s","peak_rss_kib":%s,"pss_kib":%s,"peak_pg_connections":%s,"target":%s,"wrk":%s%s}\n' \
        "$round" "$1" "$2" "${3#http://*/}" "$4" "$5" "${9:-null}" "$6" "$7" "$8" "${RECORD_EXTRA:+,$RECORD_EXTRA}" >>"$results"
}
# A figure held to a reference (the proxied ceiling, pgbench, cores / hash
# time, the paced probe alone) is measured between two slices of that
# reference, each half a figure's time, and held to their mean: the
# reference is taken at the same minute as the figure, before it and after
# it, so that a machine whose speed drifts (this one's moved by a fifth
# within minutes) moves both alike. A slice records itself as a part of its
# reference's figure (the report adds a round's slices up into it) and
# leaves its requests/s and p99 in slice_rps and slice_p99 for the figure
# after it.
slice=$(((duration + 1) / 2))
slice_rps= slice_p99=
# A second's pause before each slice, so that what the figure before it left
# running (a request's work can go on for a moment after its client has
# gone) is over before the reference is taken.
pause=1
[ "$smoke" = 1 ] && pause=0
export BENCH_NOTES="A figure held to a reference (the proxied ceiling, or the figure its target names) is measured between two slices of that reference, each half a figure's time, and held to the slices' mean; the reference's own row gives the means of its slices."
# slice_record NAME KIND URL METHOD LINE: one slice's line, and its rps
# (and p99, for a latency). The slice functions below pause first.
slice_record() {
    slice_rps=$(sed -nE 's/.*"rps":([0-9.]+).*/\1/p' <<<"$5")
    slice_p99=$(sed -nE 's/.*"p99_ms":([0-9.]+).*/\1/p' <<<"$5")
    [ -n "$slice_rps" ] || { echo "bench: $1 gave no requests/s: $5" >&2; return 1; }
    RECORD_EXTRA='"slice":true' record "$1" "$2" "$3" "$4" null null null "$5"
}
# proxied_slice [warm]: the proxied ceiling, one slice (after a warm-up if
# asked).
proxied_slice() {
    local url=http://$proxied_listen/v1/hello
    echo "bench: round $round: nginx proxying to nginx (a slice)"
    export BENCH_METHOD=GET BENCH_BODY= BENCH_HEADER=
    [ "${1:-}" = warm ] && warm "$url"
    sleep "$pause"
    slice_record "nginx proxying to nginx" ceiling "$url" GET "$(wrk_line "$url" "$connections" "$slice")"
}
# wrk_line URL [CONNECTIONS SECONDS]: wrk's one JSON line (bench.lua) for
# the request in BENCH_METHOD, BENCH_BODY, BENCH_HEADER and BENCH_HEADERS.
wrk_line() {
    local c=${2:-$connections} seconds=${3:-$duration} t=$threads
    [ "$c" -lt "$t" ] && t=$c
    BENCH_THREADS_USED=$t wrk -t "$t" -c "$c" -d "${seconds}s" --timeout 10s -s scripts/bench.lua "$1" | tail -n 1
}
warm() {
    if [ "$warmup" -gt 0 ]; then
        BENCH_THREADS_USED=$threads wrk -t "$threads" -c "$connections" -d "${warmup}s" -s scripts/bench.lua "$1" >/dev/null
    fi
}
# figure NAME KIND URL [METHOD BODY HEADER TARGET]: HEADER is one "Name:
# value" to send; TARGET, what the report holds the figure to (JSON, see
# scripts/bench_report.py). FIGURE_CONNECTIONS, if set, replaces
# BENCH_CONNECTIONS. BESIDE, if set, names the slice function of the
# figure's reference: its slice_rps is the one before, and BESIDE runs the
# one after.
figure() {
    local name=$1 kind=$2 url=$3 method=${4:-GET} body=${5:-} header=${6:-} target=${7:-null} line rss pg before
    echo "bench: round $round: $name"
    before=$slice_rps
    export BENCH_METHOD=$method BENCH_BODY=$body BENCH_HEADER=$header
    warm "$url"
    rm -f "$scratch/stop" "$scratch/peaks"
    sample "$scratch/stop" "$scratch/peaks" &
    line=$(wrk_line "$url" "${FIGURE_CONNECTIONS:-$connections}")
    touch "$scratch/stop"
    wait
    read -r rss pg <"$scratch/peaks"
    case "$kind" in ceiling | floor) rss=null pg=null ;; esac
    local extra=
    slice_rps= slice_p99=
    if [ -n "${BESIDE:-}" ]; then
        [ -n "$before" ] || { echo "bench: $name: no slice of its reference just before it" >&2; return 1; }
        "$BESIDE"
        extra="\"beside\":[$before,$slice_rps]"
    fi
    RECORD_EXTRA=$extra record "$name" "$kind" "$url" "$method" "$rss" "$pg" "$target" "$line"
}
# idle NAME [RSS PSS]: the service's memory after SETTLE quiet seconds, or
# as given.
idle() {
    local rss=${2:-} pss=${3:-}
    echo "bench: round $round: $1"
    if [ -z "$rss" ]; then
        sleep "$settle"
        rss=$(rss_now) pss=$(memory_now Pss)
    fi
    record "$1" idle "" "" "$rss" null '{"max_rss_mib":30}' null "$pss"
}

# pgbench_slice: PostgreSQL alone, as many clients as the service has
# connections (WORKERS x DATABASE_POOL_SIZE), running what /setName commits
# (users.rs set_name: the UPDATE and the outbox INSERT in one statement) for
# the same 128 users, one slice. (The service's outbox relay moves these
# events as they come, as it moves its own during /setName: it keeps up,
# so none are left for the figure after.)
pgbench_slice() {
    local name="pgbench: the same transaction" clients=$((WORKERS * DATABASE_POOL_SIZE)) text tps failed count
    echo "bench: round $round: $name (a slice)"
    sleep "$pause"
    cat >"$scratch/set-name.sql" <<'SQL'
\set id random(:first, :last)
WITH changed AS (UPDATE users SET name = 'Bench User', name_version = name_version + 1, updated_at = now() WHERE id = :id RETURNING name, name_version), recorded AS (INSERT INTO outbox (event_id, type, user_id, data, traceparent) SELECT gen_random_uuid(), 'user.name_changed', :id, jsonb_build_object('user_id', (:id)::bigint, 'name', 'Bench User'::text), NULL FROM changed) SELECT name, name_version FROM changed;
SQL
    read -r first last <<<"$member_ids"
    text=$(PGPASSWORD=$(sed -E 's#^[a-z]+://[^:]+:([^@]*)@.*#\1#' <<<"$DATABASE_URL") \
        "$("$services" pg-bin)/pgbench" -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -n -M prepared \
        -c "$clients" -j "$threads" -T "$slice" -D first="$first" -D last="$last" \
        -f "$scratch/set-name.sql" "${DATABASE_URL##*/}" 2>&1) || { echo "$text" >&2; return 1; }
    tps=$(sed -nE 's/^tps = ([0-9.]+) \(without initial connection time\)/\1/p' <<<"$text")
    count=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$text")
    failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' <<<"$text")
    slice_record "$name" pgbench "" "" \
        "{\"requests\":${count:-0},\"seconds\":$slice,\"rps\":${tps:-0},\"p50_ms\":null,\"p99_ms\":null,\"non_2xx\":${failed:-0},\"socket_errors\":0}"
}

# hash_slice: the logins a second the cores allow, one slice. A login is one
# password check, which keeps a core busy for as long as one verification
# takes; `users hash-time` measures that as the workers hash, one a core at
# once, each in memory it reuses, and prints the median in ms. Taken just
# before and just after the login figure (BESIDE), because this machine's
# speed moves by 10 to 25% within an hour, and once moved a hash's time by
# 70% between two rounds: a bound from another minute is a different
# machine's.
hash_slice() {
    local name="cores / hash time" samples=15 cores ms bound
    echo "bench: round $round: $name (a slice)"
    sleep "$pause"
    cores=$(nproc)
    ms=$("$service" users hash-time --samples "$samples" --threads "$cores")
    bound=$(awk -v cores="$cores" -v ms="$ms" 'BEGIN { printf "%.1f", cores / (ms / 1000) }')
    slice_record "$name" bound "" "" \
        "{\"requests\":$((samples * cores)),\"seconds\":null,\"rps\":$bound,\"p50_ms\":$ms,\"p99_ms\":null,\"non_2xx\":0,\"socket_errors\":0}"
}

# POST /login from 64 connections at once, alone.
login_figure() {
    figure "POST /login" nginx "http://$NGINX_LISTEN/login" POST "$(login_body bench-login)" "" \
        '{"share":0.90,"of":"cores / hash time","max_rss_mib":150}'
}

# probe_slice: the paced /v1/hello probe alone, one slice.
probe_slice() {
    local url=http://$NGINX_LISTEN/v1/hello
    echo "bench: round $round: $probe (a slice)"
    sleep "$pause"
    slice_record "$probe" nginx "$url" GET \
        "$(BENCH_METHOD=GET BENCH_BODY= BENCH_HEADER= BENCH_DELAY_MS=$pace wrk_line "$url" "$few" "$slice")"
}

# The paced /v1/hello probe while 64 connections sign in at once: whether
# hashing leaves the async threads their turn. The flood starts first and
# ends last. Held to the probe alone just before and just after it (its
# slices' mean p99), as a throughput is to its reference.
probe_under_login() {
    local flood hello_line rss pg before=$slice_p99
    [ -n "$before" ] || { echo "bench: no slice of $probe just before the flood" >&2; return 1; }
    echo "bench: round $round: $probe, during a login flood"
    BENCH_METHOD=POST BENCH_BODY="$(login_body bench-login)" BENCH_HEADER= \
        wrk_line "http://$NGINX_LISTEN/login" "$connections" $((duration + 2)) >/dev/null &
    flood=$!
    rm -f "$scratch/stop" "$scratch/peaks"
    sample "$scratch/stop" "$scratch/peaks" &
    sleep 1
    hello_line=$(BENCH_METHOD=GET BENCH_BODY= BENCH_HEADER= BENCH_DELAY_MS=$pace wrk_line "http://$NGINX_LISTEN/v1/hello" "$few")
    wait "$flood"
    touch "$scratch/stop"
    wait
    read -r rss pg <"$scratch/peaks"
    probe_slice
    RECORD_EXTRA="\"beside_p99\":[$before,$slice_p99]" \
        record "$probe, during a login flood" nginx "http://$NGINX_LISTEN/v1/hello" GET "$rss" "$pg" \
        "{\"p99_at_most\":2,\"of\":\"$probe\"}" "$hello_line"
}

BENCH_NOTES+="
\"cores / hash time\" is the logins a second the cores allow: $(nproc) cores divided by one password verification's time (its p50 ms), with $(nproc) running at once, one a core, each in memory it reuses, as the workers hash."

round=0
idle "idle, just started" "$started_rss" "$started_pss"
for round in $(seq 1 "$rounds"); do
    figure "nginx return 200" ceiling "http://$own_listen/v1/hello"
    proxied_slice warm
    BESIDE=proxied_slice figure "GET /v1/hello" nginx "http://$NGINX_LISTEN/v1/hello" GET "" "" '{"share":0.80}'
    BESIDE=proxied_slice figure "GET /v1/hello, poem alone" floor "http://$floor_listen/v1/hello"
    BESIDE=proxied_slice figure "GET /getName" nginx "http://$NGINX_LISTEN/getName" GET "" "Authorization: Bearer $user_token" '{"share":0.50}'
    figure "GET /v1/hello, direct" direct "http://$BIND/v1/hello"
    figure "POST /setName, one user" nginx "http://$NGINX_LISTEN/setName" POST '{"name":"Bench User"}' "Authorization: Bearer $user_token"
    pgbench_slice
    BESIDE=pgbench_slice BENCH_HEADERS=$members figure "POST /setName, many users" nginx "http://$NGINX_LISTEN/setName" POST '{"name":"Bench User"}' "" \
        '{"share":0.50,"of":"pgbench: the same transaction"}'
    figure "GET /v2/users?q=member01" nginx "http://$NGINX_LISTEN/v2/users?q=member01" GET "" "Authorization: Bearer $admin_token"
    hash_slice
    BESIDE=hash_slice login_figure
    probe_slice
    probe_under_login
done
idle "idle, after the load"

BENCH_SMOKE=$smoke BENCH_RESULTS=$results BENCH_OUT=$out BENCH_COMMIT=$commit BENCH_ROUNDS=$rounds \
BENCH_DURATION=$duration BENCH_CONNECTIONS=$connections BENCH_THREADS=$threads \
    python3 scripts/bench_report.py
