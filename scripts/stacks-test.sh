#!/usr/bin/env bash
# The Docker stacks, run for real on an engine (the test command runs this
# after the rest; so does .github/workflows/docker.yml):
#   image    every Dockerfile stage builds (runtime builds chef, planner and
#            builder; dev and proxy the rest); the service's image runs as
#            uid 10001 with a read-only root and a writable /tmp
#   prod     `make prod`: every healthcheck healthy, the migrations applied,
#            the README walkthrough and scripts/smoke.sh through nginx on the
#            published port, PostgreSQL and Redis out of the host's reach,
#            the data kept across `docker compose restart` and down/up
#   profiles the monitoring profile's Prometheus scrapes the service; Grafana,
#            Jaeger and pgAdmin run where their images can be had (here they
#            cannot, and it says so)
#   swarm    compose.prod.yaml as a stack on a single-node Swarm (`make
#            swarm`) answers through nginx, and `docker service update
#            --force` replaces the service with no failed request from a
#            client polling all along
#   dev      `make dev`: it answers through nginx, and an edit to a source
#            file is rebuilt and served with the stack left running
#
#   stacks-test.sh [image prod profiles swarm dev]   (all by default)
#
# scripts/docker-engine.sh provides the engine (a private one when none
# answers) and stand-ins for images no registry serves here. The stacks run
# from a copy of the working tree (the dev test edits a file), on free
# ports, under their own project names; named volumes that only speed a
# rebuild (dev's target/) are kept between runs, data volumes are not.
# The README's Docker block must be exactly the commands run here
# (`readme_step`): the last check compares them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
services=$repo/scripts/services.sh
package=$(sed -nE 's/^name = "(.*)"$/\1/p' api/Cargo.toml | head -n 1)
wanted=${*:-image prod profiles swarm dev}
started=$(date +%s)

passed=0
failed=0
skipped=0
ok() { echo "stacks: ok    $*"; passed=$((passed + 1)); }
# took SECTION: how long since the last one ended (the note in the output).
last=$started
took() { echo "stacks: ($1 took $(($(date +%s) - last)) s)"; last=$(date +%s); }
bad() { echo "stacks: FAIL  $*" >&2; failed=$((failed + 1)); }
skip() { echo "stacks: SKIP  $*"; skipped=$((skipped + 1)); }
# check NAME COMMAND...: one named property, its output kept for a failure.
check() {
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then ok "$name"; else bad "$name"; echo "$output" | tail -n 30 >&2; fi
}
runs() { [[ " $wanted " == *" $1 "* ]]; }

# One run at a time on a machine: two would share project names, ports and
# the private engine, and one's clean-up would pull the other's stack down.
exec 9>"${TMPDIR:-/tmp}/$package-stacks-test.lock"
if ! flock -n 9; then
    echo "stacks: another run holds the lock; waiting for it (at most 60 minutes)"
    flock -w 3600 9 || { echo "stacks: the other run did not finish" >&2; exit 1; }
fi

# Compose v2: the docker plugin, else the pinned binary of deploy-tools.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    PATH="$(scripts/deploy-tools.sh):$PATH"
fi

engine=$(scripts/docker-engine.sh start)
export "${engine?}"
private=false
[[ "$DOCKER_HOST" == *"/$package-docker/"* ]] && private=true
while IFS= read -r image; do export "${image?}"; done < <(scripts/docker-engine.sh stand-ins)

scratch=$(mktemp -d -t stacks-test-XXXXXX)
tree=$scratch/tree
mkdir -p "$tree"
# What git would commit, edits included: the clone's own files, no target/.
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
    | tar -c --null -T - | tar -x -C "$tree"
cd "$tree"

export NGINX_PORT
NGINX_PORT=$("$services" free-port)
# .env.prod with its placeholders filled in, as a deployment's copy is.
prod_env=$scratch/env.prod
sed "s/CHANGE_ME/stacks-$(openssl rand -hex 12)/g" .env.prod >"$prod_env"
sed -i "s/^NGINX_PORT=.*/NGINX_PORT=$NGINX_PORT/" "$prod_env"
export PROD_ENV_FILE=$prod_env
compose=(docker compose)
docker compose version >/dev/null 2>&1 || compose=(docker-compose)
# What the Makefile runs (make prod, make dev), for the checks' own calls.
prod=("${compose[@]}" -p "$package-prod" -f compose.prod.yaml -f compose.prod.single-host.yaml --env-file "$prod_env")
dev=("${compose[@]}" -f compose.yaml)

# The README's Docker block, one command a line, comments dropped.
documented=$(awk '/<!-- docker:/ {found=1; next} found && /^```sh/ {inside=1; next} inside && /^```/ {exit} inside {print}' README.md \
    | sed -E 's/[[:space:]]+#.*$//' | grep -v '^#' | grep -v '^$' | sort -u)
steps=()
# readme_step COMMAND: runs a command the README's Docker block shows.
readme_step() {
    steps+=("$1")
    bash -c "$1"
}
# Services without accounts (rendered with auth=false) show no `make user`.
has_users() { grep -q 'make user' <<<"$documented"; }

cleanup() {
    set +e
    cd "$tree"
    "${prod[@]}" --profile monitoring down --volumes --timeout 5 >/dev/null 2>&1
    "${dev[@]}" down --timeout 5 >/dev/null 2>&1
    docker volume rm "$package-dev_pgdata" >/dev/null 2>&1
    docker stack rm "$package" >/dev/null 2>&1
    docker swarm leave --force >/dev/null 2>&1
    [ -n "${dev_pid:-}" ] && kill "$dev_pid" 2>/dev/null
    [ -n "${poller_pid:-}" ] && kill "$poller_pid" 2>/dev/null
    cd "$repo"
    [ "$private" = true ] && scripts/docker-engine.sh stop
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

container() { "${prod[@]}" ps -q "$1"; }
healthy() {
    local id status
    for id in $("${prod[@]}" ps -q); do
        status=$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id")
        [[ "$status" == *" healthy" ]] || { echo "$status"; return 1; }
    done
}
# wait_for SECONDS COMMAND...: until it succeeds, bounded.
wait_for() {
    local limit=$1
    shift
    for ((i = 0; i < limit; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
    "$@"
}
answers() { curl -sf --max-time 5 "http://127.0.0.1:$NGINX_PORT/v1/hello" >/dev/null; }

# ------------------------------------------------------------------- image
if runs image || runs prod; then
    if readme_step "make prod" >"$scratch/prod-up.log" 2>&1; then
        ok "make prod builds the images and comes up healthy"
    else
        bad "make prod"; tail -n 40 "$scratch/prod-up.log" >&2
        "${prod[@]}" logs --no-color --tail 40 >&2 || true
    fi
fi

if runs image; then
    api_image=$(docker inspect -f '{{.Config.Image}}' "$(container api)")
    non_root() { [ "$(docker run --rm --entrypoint id "$api_image" -u)" = 10001 ]; }
    check "the service's image runs as uid 10001" non_root
    read_only_root() {
        [ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$(container api)")" = true ] \
            && ! docker exec "$(container api)" sh -c 'echo x > /probe' 2>/dev/null \
            && docker exec "$(container api)" sh -c 'echo x > /tmp/probe'
    }
    check "the service's root filesystem is read-only, /tmp is writable" read_only_root
    check "the dev stage builds" "${dev[@]}" build api
fi

# -------------------------------------------------------------------- prod
if runs prod; then
    check "every container is healthy" healthy
    # Every migration file, the core's and each module's, is a row in one
    # of the *schema_history tables.
    migrations=$(find api -name 'V*__*.sql' | wc -l)
    applied() {
        docker exec "$(container db)" psql -U api -d api -tAc "
            SELECT sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', table_name), false, true, '')))[1]::text::int)
            FROM information_schema.tables WHERE table_name LIKE '%schema_history'"
    }
    all_applied() { [ "$(applied)" = "$migrations" ] || { echo "applied: $(applied)"; return 1; }; }
    check "all $migrations migrations were applied (the service applies them before it listens)" all_applied
    if has_users; then
        readme_step "printf 'demo-password\\n' | make user STACK=prod USERNAME=demo NAME='Demo User'" \
            >"$scratch/user.log" 2>&1 || cat "$scratch/user.log" >&2
    fi
    check "the README walkthrough through nginx on the published port" \
        "$repo/scripts/check-readme.sh" walkthrough "127.0.0.1:$NGINX_PORT"
    check "the smoke test through nginx" scripts/smoke.sh "http://127.0.0.1:$NGINX_PORT"
    # Out of the host's reach: nothing published, and the host has no route
    # to its addresses but the default one (nothing is sent to find out:
    # a probe would leave the machine by that route).
    unreachable() {
        local name=$1 address route
        [ -z "$(docker port "$(container "$name")")" ] || { echo "$name publishes a port"; return 1; }
        for address in $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(container "$name")"); do
            route=$(ip -o route get "$address")
            case "$route" in
                *" dev br-"* | *" dev docker"*) echo "the host routes to $name at $route"; return 1 ;;
            esac
        done
    }
    check "PostgreSQL is out of the host's reach" unreachable db
    check "Redis is out of the host's reach" unreachable redis
    "${prod[@]}" restart >/dev/null 2>&1
    kept() { wait_for 120 answers && scripts/smoke.sh --kept "http://127.0.0.1:$NGINX_PORT"; }
    check "docker compose restart keeps users and sessions" kept
    readme_step "make down STACK=prod" >/dev/null 2>&1
    readme_step "make prod" >"$scratch/prod-again.log" 2>&1 || tail -n 20 "$scratch/prod-again.log" >&2
    check "make down and make prod keep the data (named volumes)" scripts/smoke.sh --kept "http://127.0.0.1:$NGINX_PORT"
fi

took "image and prod"

# ---------------------------------------------------------------- profiles
if runs profiles; then
    if docker image inspect "${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}" >/dev/null 2>&1 \
        || timeout 60 docker pull -q "${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}" >/dev/null 2>&1; then
        "${prod[@]}" --profile monitoring up --detach --wait --wait-timeout 120 prometheus >"$scratch/prometheus.log" 2>&1 \
            || tail -n 20 "$scratch/prometheus.log" >&2
        scraped() {
            docker exec "$(container prometheus)" wget -qO- 'http://127.0.0.1:9090/api/v1/query?query=up' \
                | grep -q '"value":\[[0-9.]*,"1"\]'
        }
        check "the monitoring profile's Prometheus scrapes the service" wait_for 60 scraped
    else
        skip "Prometheus: its image cannot be had here"
    fi
    for image in "${GRAFANA_IMAGE:-grafana/grafana-oss:11.2.0}" "${JAEGER_IMAGE:-jaegertracing/all-in-one:1.62.0}" \
        "${PGADMIN_IMAGE:-dpage/pgadmin4:8.11}"; do
        if docker image inspect "$image" >/dev/null 2>&1 || timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
            # Where they can be had (the GitHub workflow): they start.
            case "$image" in
                *grafana*) check "Grafana starts" "${prod[@]}" --profile monitoring up --detach --wait --wait-timeout 180 grafana ;;
                *jaeger*) check "Jaeger starts" "${prod[@]}" --profile monitoring up --detach --wait --wait-timeout 180 jaeger ;;
                *pgadmin*) skip "pgAdmin belongs to the dev stack's admin profile, checked there" ;;
            esac
        else
            skip "$image cannot be had here (no registry, no stand-in): not started"
        fi
    done
fi
if runs prod || runs profiles || runs image; then
    "${prod[@]}" --profile monitoring down --volumes --timeout 10 >/dev/null 2>&1 || true
fi

took "profiles"

# ------------------------------------------------------------------- swarm
if runs swarm; then
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null 2>&1 || true
    # `docker stack rm` keeps the stack's volumes, and a database left by an
    # earlier run has that run's password.
    remove_stack_volumes() {
        local volume
        for volume in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$package"); do
            wait_for 60 docker volume rm "$volume" >/dev/null 2>&1 || true
        done
    }
    remove_stack_volumes
    # The images the stack names are the ones make prod built, on this node.
    "${prod[@]}" build >/dev/null 2>&1
    if ! readme_step "make swarm" >"$scratch/swarm.log" 2>&1; then
        bad "make swarm"; cat "$scratch/swarm.log" >&2
    elif check "make swarm deploys a stack that answers through nginx" wait_for 180 answers; then
        printf 'demo-password\n' | docker exec -i "$(docker ps -q -f "label=com.docker.swarm.service.name=${package}_api" | head -n 1)" \
            "$package" users add demo >/dev/null 2>&1 || true
        # The poller: five requests a second, under the per-address budget
        # (RATE_LIMIT_PER_MINUTE, 600), each failure written down.
        : >"$scratch/poll.failures"
        (
            while :; do
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$NGINX_PORT/v1/hello") || true
                echo "$code" >>"$scratch/poll.codes"
                [ "$code" = 200 ] || echo "$(date +%T.%N) $code" >>"$scratch/poll.failures"
                sleep 0.2
            done
        ) &
        poller_pid=$!
        sleep 2
        docker service update --force --detach "${package}_api" >"$scratch/update.log" 2>&1 \
            || cat "$scratch/update.log" >&2
        update_state() { docker service inspect -f '{{.UpdateStatus.State}}' "${package}_api"; }
        updated() { [ "$(update_state)" = completed ]; }
        # start-first: the new task healthy, the old one stopped, 30 s of
        # monitoring (deploy.update_config).
        wait_for 300 updated >/dev/null 2>&1 || true
        sleep 3
        kill "$poller_pid" 2>/dev/null || true
        wait "$poller_pid" 2>/dev/null || true
        poller_pid=
        requests=$(wc -l <"$scratch/poll.codes")
        state=$(update_state)
        no_failure() {
            [ "$state" = completed ] && [ ! -s "$scratch/poll.failures" ] && [ "$requests" -gt 50 ] && return
            head -n 20 "$scratch/poll.failures"
            docker service ps --no-trunc "${package}_api" | head -n 5
            docker service logs --tail 20 "${package}_nginx" 2>&1 | grep -v '"status":200' | tail -n 10
            return 1
        }
        check "a rolling update completes ($state) with no failed request out of $requests" no_failure
    fi
    readme_step "make swarm-down" >/dev/null 2>&1 || true
    wait_for 60 bash -c "! docker network ls --format '{{.Name}}' | grep -q '^${package}_'" || true
    remove_stack_volumes
    docker swarm leave --force >/dev/null 2>&1 || true
fi

took "swarm"

# --------------------------------------------------------------------- dev
if runs dev; then
    # make dev runs in the foreground, as a developer's terminal would.
    steps+=("make dev")
    make dev >"$scratch/dev.log" 2>&1 &
    dev_pid=$!
    dev_up() { "${dev[@]}" ps --format '{{.Health}}' api 2>/dev/null | grep -qx healthy && answers; }
    if check "make dev answers through nginx" wait_for 1200 dev_up; then
        api_started=$(docker inspect -f '{{.State.StartedAt}}' "$("${dev[@]}" ps -q api)")
        if has_users; then
            readme_step "printf 'demo-password\\n' | make user USERNAME=demo NAME='Demo User'" >/dev/null 2>&1 || true
        fi
        # The edit: /v1/hello's greeting, in the mounted source.
        sed -i 's/"Hello, world!"/"Hello, edited world!"/' api/src/routes/v1/mod.rs
        edited() { curl -sf --max-time 5 "http://127.0.0.1:$NGINX_PORT/v1/hello" | grep -q 'edited world'; }
        check "an edit is rebuilt and served" wait_for 600 edited
        not_restarted() { [ "$(docker inspect -f '{{.State.StartedAt}}' "$("${dev[@]}" ps -q api)")" = "$api_started" ]; }
        check "...with the stack left running" not_restarted
    else
        tail -n 40 "$scratch/dev.log" >&2
    fi
    readme_step "make down" >/dev/null 2>&1 || true
    kill "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
    dev_pid=
    docker volume rm "$package-dev_pgdata" >/dev/null 2>&1 || true
fi

took "dev"

# ------------------------------------------------------------------ README
if [ "$wanted" = "image prod profiles swarm dev" ]; then
    ran=$(printf '%s\n' "${steps[@]}" | sort -u)
    check "the README's Docker block is exactly what ran here" \
        diff <(echo "$documented") <(echo "$ran")
fi

echo "stacks: $(($(date +%s) - started)) s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
