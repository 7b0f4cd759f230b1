#!/usr/bin/env bash
# Measures how evenly requests spread over the worker processes behind nginx
# (docs/serving.md, "Load spread"), for the two socket designs `serve` has,
# both behind the shipped nginx.conf (upstream keepalive) via scripts/nginx.sh:
#   shared     the workers share the master's one socket; nginx has one
#              upstream server
#   per-port   each worker also has its own port (FIRST_WORKER_PORT); nginx
#              has one upstream server per worker
# TEST_HOOKS adds an X-Worker-Pid header to every answer; this counts them.
#
#   scripts/measure-load-spread.sh [WORKERS=4] [REQUESTS=4000] [CLIENTS=32]
#
# Loopback only; bounded by REQUESTS; everything it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-4} requests=${2:-4000} clients=${3:-32}
services=scripts/services.sh

"$services" ensure-packages nginx
package=$(scripts/package-name.sh)
# TEST_HOOKS needs the routes of the test-hooks feature.
cargo build --quiet --release --features test-hooks --bin "$package"
binary=${CARGO_TARGET_DIR:-target}/release/$package

scratch=$(mktemp -d -t load-spread-XXXXXX)
chmod 755 "$scratch"
serve_pid=
cleanup() {
    scripts/nginx.sh stop "$scratch/nginx" 2>/dev/null || true
    [ -n "$serve_pid" ] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT

# /v1/hello touches neither the database nor anything else reached lazily,
# so unreachable addresses are fine here.
run() {
    local name=$1 first_worker_port=$2
    local port nginx_port
    port=$("$services" free-port)
    nginx_port=$("$services" free-port)
    env -i PATH="$PATH" DATABASE_URL=postgres://none@127.0.0.1:1/none REDIS_URL=redis://127.0.0.1:1/0 \
        TEST_HOOKS=true THREADS=1 LOG_FORMAT=json RUST_LOG=warn WORKERS="$workers" BIND="127.0.0.1:$port" \
        ${first_worker_port:+FIRST_WORKER_PORT=$first_worker_port} \
        "$binary" serve >>"$scratch/serve.log" 2>&1 &
    serve_pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    sleep 0.5 # every worker up

    (set -a; . ./.env.local; set +a
     NGINX_LISTEN=127.0.0.1:$nginx_port NGINX_STATIC_ROOT=$PWD/static API_HOST=127.0.0.1 API_PORT=$port \
        WORKERS=$workers FIRST_WORKER_PORT=$first_worker_port scripts/nginx.sh start "$scratch/nginx")

    seq "$requests" | xargs -P "$clients" -I{} \
        curl -s -o /dev/null -D - "http://127.0.0.1:$nginx_port/v1/hello" \
        | tr -d '\r' | sed -n 's/^x-worker-pid: //Ip' | sort | uniq -c | sort -rn >"$scratch/$name.counts"
    local answered max min
    answered=$(awk '{s += $1} END {print s + 0}' "$scratch/$name.counts")
    max=$(head -n 1 "$scratch/$name.counts" | awk '{print $1}')
    min=$(tail -n 1 "$scratch/$name.counts" | awk '{print $1}')
    [ "$(wc -l <"$scratch/$name.counts")" -lt "$workers" ] && min=0
    printf '%-9s answered %5d of %d; per worker: %s; busiest/idlest = %s\n' "$name" "$answered" "$requests" \
        "$(awk '{printf "%s ", $1}' "$scratch/$name.counts")" \
        "$(awk -v max="${max:-0}" -v min="$min" 'BEGIN { if (min == 0) print "inf"; else printf "%.2f", max / min }')"

    scripts/nginx.sh stop "$scratch/nginx"
    kill -TERM "$serve_pid"
    wait "$serve_pid" 2>/dev/null || true
    serve_pid=
}

echo "workers=$workers requests=$requests clients=$clients (nginx: the shipped nginx.conf)"
run shared ""
run per-port "$("$services" free-port "$workers")"
