#!/usr/bin/env bash
# The test command (`make test`): installs what is missing, starts throwaway
# PostgreSQL and Redis on free loopback ports unless TEST_DATABASE_URL and
# TEST_REDIS_URL point at servers already, runs the lints, the whole test
# suite, the README walkthrough and a smoke run of make bench, and stops
# what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

services=scripts/services.sh
"$services" ensure-packages postgres redis

scratch=$(mktemp -d -t api-test-XXXXXX)
chmod 755 "$scratch" # the postgres user must reach its data directory
cleanup() {
    "$services" redis-stop "$scratch/redis" || true
    "$services" pg-stop "$scratch/pg" || true
    rm -rf "$scratch"
}
trap cleanup EXIT

if [ -z "${TEST_DATABASE_URL:-}" ]; then
    port=$("$services" free-port)
    "$services" pg-start "$scratch/pg" "$port" throwaway
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
fi
if [ -z "${TEST_REDIS_URL:-}" ]; then
    port=$("$services" free-port)
    "$services" redis-start "$scratch/redis" "$port"
    export TEST_REDIS_URL="redis://127.0.0.1:$port/0"
fi
echo "test servers: PostgreSQL ${TEST_DATABASE_URL%%\?*}, Redis $TEST_REDIS_URL"

# The checkers of the deployment files (api/tests/api/deploy.rs).
DEPLOY_TOOLS=$(scripts/deploy-tools.sh)
export DEPLOY_TOOLS

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
scripts/check-readme.sh
# make bench as a smoke run, a second a figure: it must work and every
# request must succeed; its speed is never judged here.
scripts/bench.sh --smoke
