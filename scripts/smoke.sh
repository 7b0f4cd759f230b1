#!/usr/bin/env bash
# Smoke-tests a running stack through nginx: the one make local starts, and
# the Docker stacks in scripts/stacks-test.sh.
#
#   smoke.sh BASE_URL          e.g. http://127.0.0.1:8080
#   smoke.sh --kept BASE_URL   after the stack was stopped and started again:
#                              it answers, and what the last run wrote is there
#
# Expects the demo user (demo / demo-password). Exits non-zero on the first
# thing that is wrong, saying what.
set -euo pipefail
kept=false
if [ "${1:-}" = --kept ]; then kept=true; shift; fi
base=${1:?usage: smoke.sh [--kept] BASE_URL}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

fail() { echo "smoke: $*" >&2; exit 1; }

# request METHOD PATH [curl args...]: sets status, and the headers and body
# files.
request() {
    local method=$1 path=$2; shift 2
    status=$(curl -s -o "$scratch/body" -D "$scratch/headers" -w '%{http_code}' -X "$method" "$@" "$base$path") \
        || fail "$method $path: no answer"
}
expect_status() { [ "$status" = "$1" ] || fail "expected $1, got $status: $(cat "$scratch/body")"; }
expect_header() { grep -qi "^$1" "$scratch/headers" || fail "no '$1' header in: $(cat "$scratch/headers")"; }
# login: signs in as the demo user; sets token.
login() {
    request POST /login -H 'Content-Type: application/json' -d '{"username": "demo", "password": "demo-password"}'
    expect_status 200
    expect_header 'authorization: Bearer '
    token=$(sed -E 's/.*"token":"([^"]+)".*/\1/' "$scratch/body")
}

request GET /healthz
expect_status 200
expect_header 'server: nginx\s*$'
expect_header 'x-content-type-options: nosniff'
expect_header 'x-request-id: '

if [ "$kept" = true ]; then
    # The name the last run's setName wrote.
    login
    request GET /getName -H "Authorization: Bearer $token"
    expect_status 200
    grep -q '"name":"Smoke Test"' "$scratch/body" || fail "the data did not survive the restart: $(cat "$scratch/body")"
    echo "smoke: $base OK after a restart"
    exit 0
fi

request GET /v1/hello
expect_status 200

request GET /static/assets/img/happy.png
expect_status 200
expect_header 'content-type: image/png'
expect_header 'cache-control: max-age='

request GET /metrics
expect_status 404

login
request POST /setName -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name": "Smoke Test"}'
expect_status 200
request GET /getName -H "Authorization: Bearer $token"
expect_status 200
grep -q '"name":"Smoke Test"' "$scratch/body" || fail "getName: $(cat "$scratch/body")"

request POST /logout -H "Authorization: Bearer $token"
expect_status 204
request GET /getName -H "Authorization: Bearer $token"
expect_status 401
expect_header 'x-frame-options: DENY'

echo "smoke: $base OK"
