#!/usr/bin/env bash
# Runs the README's walkthrough exactly as written against the README's run
# command, and checks that every output line the README shows (`# {...}`,
# `# HTTP/...`, `# authorization: ...`; a trailing … means "starts with")
# appears, in order. The run command gets free ports and a scratch data
# directory through the environment, which wins over .env.local, so a
# developer's own `make run` on port 8000 is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
services=scripts/services.sh

block=$(awk '/<!-- walkthrough/ {found=1; next} found && /^```sh/ {inside=1; next} inside && /^```/ {exit} inside {print}' README.md)
[ -n "$block" ] || { echo "check-readme: no walkthrough block in README.md" >&2; exit 1; }

scratch=$(mktemp -d -t api-readme-XXXXXX)
chmod 755 "$scratch"
# Relative, like the default .local/, so path handling is what users get;
# but in the scratch directory, which the postgres user can always reach.
local_dir=$scratch/local
export LOCAL_DIR=$(realpath --relative-to=. -m "$local_dir")
export BIND="127.0.0.1:$("$services" free-port)"
export DATABASE_URL="postgres://api:api@127.0.0.1:$("$services" free-port)/api"
export REDIS_URL="redis://127.0.0.1:$("$services" free-port)/0"

scripts/run.sh >"$scratch/run.log" 2>&1 &
run_pid=$!
finish() {
    kill -TERM "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
    rm -rf "$scratch"
}
trap finish EXIT

for _ in $(seq 1 600); do
    curl -sf "http://$BIND/readyz" >/dev/null 2>&1 && break
    kill -0 "$run_pid" 2>/dev/null || { cat "$scratch/run.log" >&2; echo "check-readme: the run command exited" >&2; exit 1; }
    sleep 0.5
done
curl -sf "http://$BIND/readyz" >/dev/null || { cat "$scratch/run.log" >&2; echo "check-readme: service not ready" >&2; exit 1; }

# The only change to the block: the address the run command was given.
output=$(bash -euo pipefail -c "${block//127.0.0.1:8000/$BIND}" 2>&1 | tr -d '\r')

rest=$output
failed=0
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
    exit 1
fi
# Stopping the run command stops everything it started.
kill -TERM "$run_pid"
wait "$run_pid" 2>/dev/null || true
if pgrep -f -- "$local_dir" >/dev/null; then
    pgrep -af -- "$local_dir" >&2
    echo "check-readme: the run command left these running after it stopped" >&2
    exit 1
fi
echo "check-readme: README walkthrough OK ($(grep -cE '^# (\{|HTTP/|authorization:)' <<<"$block") outputs matched)"
