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
#   profiles the monitoring profile's Prometheus scrapes the service; Grafana
#            and Jaeger start where their images can be had (here they
#            cannot, and it says so)
#   swarm    compose.prod.yaml as a stack on a single-node Swarm (`make
#            swarm`) publishes nginx's port alone and answers through it, and
#            `docker service update --force` replaces the service with no
#            failed request from a client polling all along
#   dev      `make dev`: it answers through nginx, an edit to a source file
#            is rebuilt and served with the stack left running; the admin
#            profile's pgAdmin starts where its image can be had
#
#   stacks-test.sh [image prod profiles swarm dev]   (all by default)
#
# scripts/docker-engine.sh provides the engine (a private one when none
# answers; without one and without root, every stack is skipped, except
# under CI=true) and stand-ins for images no registry serves here. The
# stacks run from a copy of the working tree (the dev test edits a file),
# on free ports, under project and stack names of their own (never the ones
# `make dev`, `make prod` and `make swarm` use), and a Swarm this run did not
# initialise is left alone. Named volumes that only speed a rebuild (dev's
# target/) are kept between runs, data volumes are not. The README's Docker
# block must be exactly the commands run here (`readme_step`): the last check
# compares them.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
services=$repo/scripts/services.sh
package=$(scripts/package-name.sh)
wanted=${*:-image prod profiles swarm dev}
started=$(date +%s)

passed=0
failed=0
skipped=0
ok() { echo "stacks: ok    $*"; passed=$((passed + 1)); }
bad() { echo "stacks: FAIL  $*" >&2; failed=$((failed + 1)); }
skip() { echo "stacks: SKIP  $*"; skipped=$((skipped + 1)); }
# took SECTION: how long since the last one ended.
last=$started
took() { echo "stacks: ($1 took $(($(date +%s) - last)) s)"; last=$(date +%s); }
# check NAME COMMAND...: one named property, its output kept for a failure.
check() {
    local name=$1 output
    shift
    if output=$("$@" 2>&1); then ok "$name"; else bad "$name"; echo "$output" | tail -n 30 >&2; fi
}
runs() { [[ " $wanted " == *" $1 "* ]]; }

# One run at a time on a machine: two would share ports, volumes and the
# private engine, and one's clean-up would pull the other's stacks down.
exec 9>"${TMPDIR:-/tmp}/$package-stacks-test.lock"
if ! flock -n 9; then
    echo "stacks: another run holds the lock; waiting for it (at most 60 minutes)"
    flock -w 3600 9 || { echo "stacks: the other run did not finish" >&2; exit 1; }
fi

# The tests' own names: make and compose take them from the environment.
export DEV_PROJECT=$package-stacks-test-dev
export PROD_PROJECT=$package-stacks-test-prod
export SWARM_STACK=$package-stacks-test
private=false
swarm_ours=false
scratch=$(mktemp -d -t stacks-test-XXXXXX)
tree=$scratch/tree
prod=(true)
dev=(true)

cleanup() {
    set +e
    [ -n "${dev_pid:-}" ] && kill "$dev_pid" 2>/dev/null
    [ -n "${poller_pid:-}" ] && kill "$poller_pid" 2>/dev/null
    if [ -d "$tree" ] && [ -n "${DOCKER_HOST:-}" ]; then
        cd "$tree"
        "${prod[@]}" --profile monitoring down --volumes --timeout 5 >/dev/null 2>&1
        "${dev[@]}" --profile admin down --timeout 5 >/dev/null 2>&1
        docker volume rm "${DEV_PROJECT}_pgdata" >/dev/null 2>&1
        docker stack rm "$SWARM_STACK" >/dev/null 2>&1
        [ "$swarm_ours" = true ] && docker swarm leave --force >/dev/null 2>&1
    fi
    cd "$repo"
    if [ "$private" = true ]; then
        # The private engine's disk, bounded: images no tag names, and the
        # build cache past what a warm rebuild needs.
        docker image prune -f >/dev/null 2>&1
        docker builder prune -f --keep-storage 12GB >/dev/null 2>&1
        scripts/docker-engine.sh stop 9>&-
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Compose v2: the docker plugin, else the pinned binary of deploy-tools.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    PATH="$(scripts/deploy-tools.sh):$PATH"
fi

# The engine must not hold the lock: it outlives a run that dies.
engine_status=0
engine=$(scripts/docker-engine.sh start 9>&-) || engine_status=$?
if [ "$engine_status" = 3 ] && [ "${CI:-}" != true ]; then
    skip "every stack: no Docker engine answers, and starting a private one needs root"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi
[ "$engine_status" = 0 ] || { echo "stacks: no Docker engine" >&2; exit 1; }
while IFS= read -r line; do
    case "$line" in
        DOCKER_HOST=*) export "$line" ;;
        DOCKER_PRIVATE=1) private=true ;;
    esac
done <<<"$engine"
images=$(scripts/docker-engine.sh stand-ins 9>&-)
while IFS= read -r image; do [ -n "$image" ] && export "$image"; done <<<"$images"

mkdir -p "$tree"
# What git would commit, edits included: the clone's own files, no target/.
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' file; do [ ! -e "$file" ] || printf '%s\0' "$file"; done \
    | tar -c --null -T - | tar -x -C "$tree"
cd "$tree"

export NGINX_PORT
NGINX_PORT=$("$services" free-port)
# .env.prod with its placeholders filled in, as a deployment's copy is.
prod_env=$scratch/env.prod
sed "s/CHANGE_ME/stacks-$(openssl rand -hex 12)/g" .env.prod >"$prod_env"
sed -i "s/^NGINX_PORT=.*/NGINX_PORT=$NGINX_PORT/" "$prod_env"
export PROD_ENV_FILE=$prod_env
setting() { sed -n "s/^$1=//p" "$prod_env"; }
compose=(docker compose)
docker compose version >/dev/null 2>&1 || compose=(docker-compose)
# What the Makefile runs (make prod, make dev), for the checks' own calls.
prod=("${compose[@]}" -p "$PROD_PROJECT" -f compose.prod.yaml -f compose.prod.single-host.yaml --env-file "$prod_env")
dev=("${compose[@]}" -p "$DEV_PROJECT" -f compose.yaml)

# The README's Docker block, one command a line, comments dropped.
documented=$(awk '/<!-- docker:/ {found=1; next} found && /^```sh/ {inside=1; next} inside && /^```/ {exit} inside {print}' README.md \
    | sed -E 's/[[:space:]]+#.*$//' | { grep -v -e '^#' -e '^$' || true; } | sort -u)
steps=()
# readme_step COMMAND: runs a command the README's Docker block shows.
readme_step() {
    steps+=("$1")
    bash -c "$1"
}
# The block's commands for a running stack (`make cli ...`: in a service
# with accounts, adding the walkthrough's user), run as written once their
# stack is up: STACK=prod's after make prod, the others after make dev.
cli_steps() {
    local step
    while IFS= read -r step; do
        [ -n "$step" ] || continue
        readme_step "$step" >>"$scratch/cli.log" 2>&1 || { bad "$step"; tail -n 5 "$scratch/cli.log" >&2; }
    done < <(grep 'make cli' <<<"$documented" | { if [ "$1" = prod ]; then grep 'STACK=prod'; else grep -v 'STACK=prod'; fi; } || true)
}

# container SERVICE: the prod stack's container of it; fails when none runs.
container() {
    local id
    id=$("${prod[@]}" ps -q "$1" 2>/dev/null | awk 'NR == 1')
    [ -n "$id" ] || { echo "no $1 container runs" >&2; return 1; }
    echo "$id"
}
healthy() {
    local id status count=0
    for id in $("${prod[@]}" ps -q); do
        count=$((count + 1))
        status=$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id")
        [[ "$status" == *" healthy" ]] || { echo "$status"; return 1; }
    done
    [ "$count" -ge 4 ] || { echo "only $count containers run"; return 1; }
}
# wait_for SECONDS COMMAND...: until it succeeds, bounded.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { "$@"; return; }
        sleep 1
    done
}
answers() { curl -sf --max-time 5 "http://127.0.0.1:$NGINX_PORT/v1/hello" >/dev/null; }
# image_of COMPOSE... SERVICE: the image a service runs, as compose resolves it.
image_of() {
    local service=${*: -1}
    "${@:1:$#-1}" config --format json 2>/dev/null \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["services"][sys.argv[1]]["image"])' "$service" \
        || true
}
# can_have IMAGE: the image is here, or the engine pulls it.
can_have() { docker image inspect "$1" >/dev/null 2>&1 || timeout 120 docker pull -q "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------ image, prod
prod_up=false
if runs image || runs prod; then
    if readme_step "make prod" >"$scratch/prod-up.log" 2>&1; then
        ok "make prod builds the images and comes up healthy"
        prod_up=true
    else
        bad "make prod"
        tail -n 40 "$scratch/prod-up.log" >&2
        "${prod[@]}" logs --no-color --tail 40 >&2 || true
    fi
fi

if runs image && [ "$prod_up" = true ]; then
    non_root() {
        local image
        image=$(docker inspect -f '{{.Config.Image}}' "$(container api)")
        [ "$(docker run --rm --entrypoint id "$image" -u)" = 10001 ]
    }
    check "the service's image runs as uid 10001" non_root
    # Root itself cannot write to a read-only root filesystem.
    read_only_root() {
        local api
        api=$(container api)
        [ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$api")" = true ] \
            && ! docker exec -u 0 "$api" sh -c 'echo x > /probe' 2>/dev/null \
            && docker exec "$api" sh -c 'echo x > /tmp/probe'
    }
    check "the service's root filesystem is read-only, /tmp is writable" read_only_root
fi
if runs image; then
    check "the dev stage builds" "${dev[@]}" build api
fi

if runs prod && [ "$prod_up" = true ]; then
    check "every container is healthy" healthy
    # Every migration file, the core's and each module's, is a row in one
    # of the *schema_history tables.
    migrations=$(find api -name 'V*__*.sql' | wc -l)
    applied() {
        docker exec "$(container db)" psql -U "$(setting POSTGRES_USER)" -d "$(setting POSTGRES_DB)" -tAc "
            SELECT sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I', table_name), false, true, '')))[1]::text::int)
            FROM information_schema.tables WHERE table_name LIKE '%schema_history'"
    }
    all_applied() { [ "$(applied)" = "$migrations" ] || { echo "applied: $(applied)"; return 1; }; }
    check "all $migrations migrations were applied (the service applies them before it listens)" all_applied
    cli_steps prod
    check "the README walkthrough through nginx on the published port" \
        "$repo/scripts/check-readme.sh" walkthrough "127.0.0.1:$NGINX_PORT"
    check "the smoke test through nginx" scripts/smoke.sh "http://127.0.0.1:$NGINX_PORT"
    # Out of the host's reach: nothing published, and the host has no route
    # to its addresses but the default one (nothing is sent to find out:
    # a probe would leave the machine by that route).
    unreachable() {
        local id address route
        id=$(container "$1")
        [ -z "$(docker port "$id")" ] || { echo "$1 publishes a port"; return 1; }
        for address in $(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$id"); do
            route=$(ip -o route get "$address")
            case "$route" in
                *" dev br-"* | *" dev docker"*) echo "the host routes to $1 at $route"; return 1 ;;
            esac
        done
    }
    check "PostgreSQL is out of the host's reach" unreachable db
    check "Redis is out of the host's reach" unreachable redis
    kept() { wait_for 120 answers && scripts/smoke.sh --kept "http://127.0.0.1:$NGINX_PORT"; }
    "${prod[@]}" restart >/dev/null 2>&1 || bad "docker compose restart"
    check "docker compose restart keeps the data" kept
    readme_step "make down STACK=prod" >/dev/null 2>&1 || bad "make down STACK=prod"
    readme_step "make prod" >"$scratch/prod-again.log" 2>&1 || tail -n 20 "$scratch/prod-again.log" >&2
    check "make down and make prod keep the data (named volumes)" kept
elif runs prod; then
    bad "the prod stack's checks: not run, make prod failed"
fi
took "image and prod"

# ---------------------------------------------------------------- profiles
if runs profiles && [ "$prod_up" = true ]; then
    if can_have "${PROMETHEUS_IMAGE:-prom/prometheus:v2.53.2}"; then
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
    for service in grafana jaeger; do
        image=$(image_of "${prod[@]}" --profile monitoring "$service")
        if [ -n "$image" ] && can_have "$image"; then
            check "the monitoring profile's $service starts and is healthy" \
                "${prod[@]}" --profile monitoring up --detach --wait --wait-timeout 180 "$service"
        else
            skip "$service: ${image:-its image} cannot be had here (no registry, no stand-in): not started"
        fi
    done
elif runs profiles; then
    bad "the profiles: not run, make prod failed"
fi
if runs image || runs prod || runs profiles; then
    "${prod[@]}" --profile monitoring down --volumes --timeout 10 >/dev/null 2>&1 || true
fi
took "profiles"

# ------------------------------------------------------------------- swarm
if runs swarm; then
    swarm_state=$(docker info -f '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
    if [ "$swarm_state" != inactive ] && [ "$private" != true ]; then
        skip "the Swarm stack: this engine is in a Swarm already ($swarm_state); no test stack goes into it"
    else
        if [ "$swarm_state" = inactive ]; then
            docker swarm init --advertise-addr 127.0.0.1 >/dev/null && swarm_ours=true
        fi
        # `docker stack rm` keeps the stack's volumes, and a database left
        # by an earlier run has that run's password.
        remove_stack_volumes() {
            local volume
            for volume in $(docker volume ls -q --filter "label=com.docker.stack.namespace=$SWARM_STACK"); do
                wait_for 60 docker volume rm "$volume" >/dev/null 2>&1 || true
            done
        }
        remove_stack_volumes
        # The images the stack names are the ones make prod built, on this node.
        "${prod[@]}" build >/dev/null 2>&1 || bad "the images for the Swarm stack did not build"
        published() {
            local service ports
            for service in $(docker stack services -q "$SWARM_STACK"); do
                ports=$(docker service inspect -f '{{range .Endpoint.Spec.Ports}}{{.PublishedPort}} {{end}}' "$service")
                [ -z "$ports" ] || docker service inspect -f "{{.Spec.Name}} $ports" "$service"
            done
        }
        nginx_alone() {
            [ "$(published)" = "${SWARM_STACK}_nginx $NGINX_PORT " ] || { published; return 1; }
        }
        if ! readme_step "make swarm" >"$scratch/swarm.log" 2>&1; then
            bad "make swarm"
            cat "$scratch/swarm.log" >&2
        elif check "make swarm deploys a stack that answers through nginx" wait_for 180 answers; then
            check "the Swarm stack publishes nginx's port alone" nginx_alone
            # The poller: five requests a second, under the per-address budget
            # (RATE_LIMIT_PER_MINUTE, 600), each failure written down.
            : >"$scratch/poll.failures"
            : >"$scratch/poll.codes"
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
            docker service update --force --detach "${SWARM_STACK}_api" >"$scratch/update.log" 2>&1 \
                || cat "$scratch/update.log" >&2
            update_state() { docker service inspect -f '{{.UpdateStatus.State}}' "${SWARM_STACK}_api"; }
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
                docker service ps --no-trunc "${SWARM_STACK}_api" | head -n 5
                docker service logs --tail 20 "${SWARM_STACK}_nginx" 2>&1 | grep -v '"status":200' | tail -n 10
                return 1
            }
            check "a rolling update completes ($state) with no failed request out of $requests" no_failure
        fi
        readme_step "make swarm-down" >/dev/null 2>&1 || bad "make swarm-down"
        wait_for 60 bash -c "! docker network ls --format '{{.Name}}' | grep -q '^${SWARM_STACK}_'" || true
        remove_stack_volumes
        if [ "$swarm_ours" = true ]; then
            docker swarm leave --force >/dev/null 2>&1 || true
            swarm_ours=false
        fi
    fi
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
        dev_api() { "${dev[@]}" ps -q api; }
        api_started=$(docker inspect -f '{{.State.StartedAt}}' "$(dev_api)")
        cli_steps dev
        # The edit: /v1/hello's greeting, in the mounted source.
        sed -i 's/"Hello, world!"/"Hello, edited world!"/' api/src/routes/v1/mod.rs
        edited() { curl -sf --max-time 5 "http://127.0.0.1:$NGINX_PORT/v1/hello" | grep -q 'edited world'; }
        check "an edit is rebuilt and served" wait_for 600 edited
        not_restarted() { [ "$(docker inspect -f '{{.State.StartedAt}}' "$(dev_api)")" = "$api_started" ]; }
        check "...with the stack left running" not_restarted
        pgadmin=$(image_of "${dev[@]}" --profile admin pgadmin)
        if [ -n "$pgadmin" ] && can_have "$pgadmin"; then
            check "the admin profile's pgAdmin starts" \
                "${dev[@]}" --profile admin up --detach --wait --wait-timeout 180 pgadmin
        else
            skip "pgAdmin: ${pgadmin:-its image} cannot be had here (no registry, no stand-in): not started"
        fi
    else
        tail -n 40 "$scratch/dev.log" >&2
    fi
    readme_step "make down" >/dev/null 2>&1 || bad "make down"
    kill "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
    dev_pid=
    docker volume rm "${DEV_PROJECT}_pgdata" >/dev/null 2>&1 || true
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
