#!/usr/bin/env bash
# The test command (`make test`): installs what is missing, starts throwaway
# PostgreSQL and Redis on free loopback ports unless TEST_DATABASE_URL and
# TEST_REDIS_URL point at servers already, runs the lints, the whole test
# suite, the README walkthrough and a smoke run of make bench, and stops
# what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

# A one-off build (CI's fresh clone) gains nothing from incremental
# compilation, whose caches would double the target directory's size.
if [ "${CI:-}" = true ]; then
    export CARGO_INCREMENTAL=0
fi

services=scripts/services.sh
# nginx for the tests through the shipped nginx.conf; Chromium and
# chromedriver for the docs page's browser tests; openssl for the TLS tests'
# certificates.
"$services" ensure-packages postgres redis nginx chromium openssl

scratch=$(mktemp -d -t make-test-XXXXXX)
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
# What ships is linted as it ships; the tests need the test-only routes and
# counters of the `test-hooks` feature.
cargo clippy --workspace --lib --bins -- -D warnings
cargo clippy --workspace --all-targets --features test-hooks -- -D warnings
cargo test --workspace --features test-hooks
# The fuzz targets, a few seconds each (the nightly toolchain, for them
# alone): what parses untrusted input must not panic on any of it.
scripts/fuzz.sh
scripts/check-readme.sh
# make bench as a smoke run, a second a figure: it must work and every
# request must succeed; its speed is never judged here. First the report's
# arithmetic, on made-up figures.
python3 scripts/bench_report.py --self-test
scripts/bench.sh --smoke

# The Docker stacks, for real (scripts/stacks-test.sh): images built, make
# prod, the Swarm stack and make dev, on an engine (a private one when none
# answers). STACKS names which (all by default); STACKS=none leaves them
# out, as the template's renders do: their stack files are the root's with
# the name changed, and the root's own run covers them.
if [ "${STACKS:-}" != none ]; then
    # shellcheck disable=SC2086
    scripts/stacks-test.sh ${STACKS:-}
fi

# bench.sh ran make local's release build: it must carry no test hooks.
package=$(scripts/package-name.sh)
release=${CARGO_TARGET_DIR:-target}/release/$package
if grep -q -a '/__test/' "$release"; then
    echo "test: the release build $release serves /__test routes; they belong behind the test-hooks feature" >&2
    exit 1
fi
echo "test: the release build has no test hooks"
