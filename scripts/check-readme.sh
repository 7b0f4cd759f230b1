#!/usr/bin/env bash
# Checks the README's commands as a user runs them:
#   1. `make local` (scripts/local.sh up), then the README's walkthrough
#      exactly as written, through nginx: every output line the README shows
#      (`# {...}`, `# HTTP/...`, `# authorization: ...`; a trailing … means
#      "starts with") must appear, in order; then scripts/smoke.sh.
#   2. `make local-down`, which must stop everything it started, and a second
#      `make local` that still has the data written before it
#      (scripts/smoke.sh --kept).
#   3. `make run` (scripts/local.sh run) answers, and stops everything on
#      SIGTERM.
# Everything gets free ports and a scratch data directory through the
# environment, which wins over .env.local, so a developer's own stack on the
# usual ports is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
services=scripts/services.sh

block=$(awk '/<!-- walkthrough/ {found=1; next} found && /^```sh/ {inside=1; next} inside && /^```/ {exit} inside {print}' README.md)
[ -n "$block" ] || { echo "check-readme: no walkthrough block in README.md" >&2; exit 1; }

# walkthrough ADDRESS: the block as written, against nginx on ADDRESS; every
# output line it shows must appear, in order.
walkthrough() {
    local output rest expected failed=0
    output=$(bash -euo pipefail -c "${block//127.0.0.1:8080/$1}" 2>&1 | tr -d '\r')
    rest=$output
    while IFS= read -r expected; do
        expected=${expected#\# }
        expected=${expected%…}
        case "$rest" in
            *"$expected"*) rest=${rest#*"$expected"} ;;
            *) echo "check-readme: expected, in order: $expected" >&2; failed=1 ;;
        esac
    done < <(grep -E '^# (\{|HTTP/|authorization:)' <<<"$block")
    if [ "$failed" = 1 ]; then
        printf 'check-readme: the walkthrough printed:\n%s\n' "$output" >&2
        return 1
    fi
}

# `check-readme.sh walkthrough ADDRESS`: only that, against a stack that is
# up with the demo user (scripts/stacks-test.sh, through the Docker stacks).
if [ "${1:-}" = walkthrough ]; then
    walkthrough "${2:?usage: check-readme.sh walkthrough HOST:PORT}"
    exit
fi

scratch=$(mktemp -d -t check-readme-XXXXXX)
chmod 755 "$scratch"
# Relative, like the default .local/, so path handling is what users get;
# but in the scratch directory, which the postgres user can always reach.
local_dir=$scratch/local
export LOCAL_DIR=$(realpath --relative-to=. -m "$local_dir")
export BIND="127.0.0.1:$("$services" free-port)"
export FIRST_WORKER_PORT=$("$services" free-port 2) WORKERS=2
export NGINX_LISTEN="127.0.0.1:$("$services" free-port)"
# .env.local's servers, on free ports.
with_port() { sed -E "s#^([a-z]+://[^/]*:)[0-9]+#\1$2#" <<<"$1"; }
env_local() { sed -n "s/^$1=//p" .env.local; }
export DATABASE_URL=$(with_port "$(env_local DATABASE_URL)" "$("$services" free-port)")
export REDIS_URL=$(with_port "$(env_local REDIS_URL)" "$("$services" free-port)")

fail() {
    echo "check-readme: $*" >&2
    for log in "$local_dir"/api.log "$local_dir"/nginx/nginx.log "$scratch"/*.log; do
        [ -f "$log" ] && { echo "--- $log" >&2; tail -n 30 "$log" >&2; }
    done
    exit 1
}
finish() {
    [ -n "${run_pid:-}" ] && kill -TERM "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    scripts/local.sh down >/dev/null 2>&1 || true
    rm -rf "$scratch"
}
trap finish EXIT

# Nothing of ours may run once stopped: the servers (their command lines
# name the data directory) and the service and nginx (by pid).
assert_all_stopped() {
    local what=$1 pid
    shift
    for pid in "$@"; do
        ! kill -0 "$pid" 2>/dev/null || fail "$what: pid $pid still runs after stopping"
    done
    if pgrep -f -- "$local_dir" >/dev/null; then
        pgrep -af -- "$local_dir" >&2
        fail "$what: these still run after stopping"
    fi
}

# 1. make local, the walkthrough, the smoke test.
scripts/local.sh up >"$scratch/up.log" 2>&1 || fail "make local failed"
walkthrough "$NGINX_LISTEN" || fail "the walkthrough failed"
scripts/smoke.sh "http://$NGINX_LISTEN" >"$scratch/smoke.log" 2>&1 || fail "smoke test failed"

# 2. make local-down stops everything; a new make local has the data.
pids="$(cat "$local_dir/api.pid") $(cat "$local_dir/nginx/nginx.pid")"
scripts/local.sh down >"$scratch/down.log" 2>&1 || fail "make local-down failed"
# shellcheck disable=SC2086
assert_all_stopped "make local-down" $pids
scripts/local.sh up >"$scratch/up-again.log" 2>&1 || fail "make local failed the second time"
scripts/smoke.sh --kept "http://$NGINX_LISTEN" >"$scratch/kept.log" 2>&1 \
    || fail "after make local-down and make local again: $(cat "$scratch/kept.log")"
scripts/local.sh down >"$scratch/down.log" 2>&1 || fail "make local-down failed"

# 3. make run: the service in the foreground; SIGTERM stops it all.
scripts/local.sh run >"$scratch/run.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 600); do
    curl -sf "http://$BIND/readyz" >/dev/null 2>&1 && break
    kill -0 "$run_pid" 2>/dev/null || fail "make run exited"
    sleep 0.5
done
curl -sf "http://$BIND/v1/hello" >/dev/null || fail "make run: the service does not answer"
kill -TERM "$run_pid"
wait "$run_pid" 2>/dev/null || true
run_pid=
assert_all_stopped "make run"

echo "check-readme: make local, the walkthrough ($(grep -cE '^# (\{|HTTP/|authorization:)' <<<"$block") outputs matched), the smoke test, make local-down and make run OK"
