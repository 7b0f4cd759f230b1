#!/usr/bin/env bash
# Measures how evenly requests spread over worker processes behind nginx with
# upstream keepalive, for two socket designs (docs/serving.md, "Load spread"):
#   shared     one master, WORKERS workers sharing its inherited socket
#   per-port   WORKERS single-process servers on a port each, nginx balancing
# Each request asks a test-only route which worker pid answered.
#
#   scripts/measure-load-spread.sh [WORKERS=2] [REQUESTS=2000] [CLIENTS=16] [KEEPALIVE=8] [KEEPALIVE_REQUESTS=1000]
#
# KEEPALIVE and KEEPALIVE_REQUESTS are nginx's upstream keepalive settings:
# idle connections kept per nginx worker, and requests before a connection
# is closed (1000 is nginx's default).
#
# Loopback only; bounded by REQUESTS; everything it starts is stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${1:-2} requests=${2:-2000} clients=${3:-16} keepalive=${4:-8} keepalive_requests=${5:-1000}
services=scripts/services.sh

command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 1; }
package=$(sed -nE 's/^name = "(.*)"$/\1/p' api/Cargo.toml | head -n 1)
cargo build --quiet --release --bin "$package"
binary=${CARGO_TARGET_DIR:-target}/release/$package

scratch=$(mktemp -d -t load-spread-XXXXXX)
chmod 755 "$scratch"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

# The pid route touches neither PostgreSQL nor Redis, which are reached
# lazily, so unreachable addresses are fine here.
serve() {
    env -i PATH="$PATH" DATABASE_URL=postgres://none@127.0.0.1:1/none REDIS_URL=redis://127.0.0.1:1/0 \
        TEST_HOOKS=true THREADS=1 LOG_FORMAT=json RUST_LOG=warn "$binary" serve "$@" >>"$scratch/serve.log" 2>&1 &
    pids+=($!)
}

wait_for() {
    for _ in $(seq 1 100); do
        curl -sf "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "nothing answered at $1" >&2
    exit 1
}

# nginx as the shipped configuration will run it towards the service:
# HTTP/1.1 upstream keepalive with an empty Connection header.
# Sets nginx_port.
run_nginx() {
    local name=$1; shift
    local dir=$scratch/nginx-$name
    nginx_port=$("$services" free-port)
    mkdir -p "$dir/logs" "$dir/tmp"
    chmod -R 777 "$dir"
    {
        echo "worker_processes 1; pid $dir/nginx.pid; error_log $dir/logs/error.log warn;"
        echo "events { worker_connections 1024; }"
        echo "http { access_log off; client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp;"
        echo "  upstream service {"
        for upstream in "$@"; do echo "    server $upstream;"; done
        echo "    keepalive $keepalive; keepalive_requests $keepalive_requests;"
        echo "  }"
        echo "  server { listen 127.0.0.1:$nginx_port;"
        echo "    location / { proxy_pass http://service; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
        echo "  }"
        echo "}"
    } >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >/dev/null 2>&1 &
    pids+=($!)
    wait_for "http://127.0.0.1:$nginx_port/__test/pid"
}

measure() {
    local name=$1 port=$2
    seq "$requests" | xargs -P "$clients" -I{} curl -s "http://127.0.0.1:$port/__test/pid" \
        | grep -E '^[0-9]+$' | sort | uniq -c | sort -rn >"$scratch/$name.counts"
    local answered max min
    answered=$(awk '{s += $1} END {print s}' "$scratch/$name.counts")
    max=$(head -n 1 "$scratch/$name.counts" | awk '{print $1}')
    min=$(tail -n 1 "$scratch/$name.counts" | awk '{print $1}')
    [ "$(wc -l <"$scratch/$name.counts")" -lt "$workers" ] && min=0
    printf '%-9s answered %5d of %d; per worker: %s; busiest/idlest = %s\n' "$name" "$answered" "$requests" \
        "$(awk '{printf "%s ", $1}' "$scratch/$name.counts")" \
        "$(awk -v max="$max" -v min="$min" 'BEGIN { if (min == 0) print "inf"; else printf "%.2f", max / min }')"
}

echo "workers=$workers requests=$requests clients=$clients nginx keepalive=$keepalive keepalive_requests=$keepalive_requests"

port=$("$services" free-port)
serve --workers "$workers" --bind "127.0.0.1:$port"
wait_for "http://127.0.0.1:$port/__test/pid"
run_nginx shared "127.0.0.1:$port"
measure shared "$nginx_port"

upstreams=()
for _ in $(seq 1 "$workers"); do
    port=$("$services" free-port)
    serve --no-master --bind "127.0.0.1:$port"
    wait_for "http://127.0.0.1:$port/__test/pid"
    upstreams+=("127.0.0.1:$port")
done
run_nginx per-port "${upstreams[@]}"
measure per-port "$nginx_port"
