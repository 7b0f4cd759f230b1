#!/usr/bin/env bash
# Starts and stops project-local PostgreSQL and Redis servers from Debian's
# packages, without Docker and without touching the system's own instances.
# The test command, make run, make local and the outage tests all go through
# here (nginx has scripts/nginx.sh).
#
#   services.sh ensure-packages [postgres] [redis] [nginx] [python-venv] [prometheus] [wrk] [chromium] [openssl]
#                                    install what is named (and curl) if missing
#   services.sh free-port [COUNT]    print a free loopback TCP port, the first of
#                                    COUNT free ones in a row (1)
#   services.sh pg-start DIR PORT [throwaway]
#                                    initdb DIR (first time) and start it on 127.0.0.1:PORT;
#                                    throwaway turns fsync off (tests only)
#   services.sh pg-stop DIR          fast shutdown
#   services.sh pg-bin               print the directory holding initdb and pg_ctl
#   services.sh redis-start DIR PORT [persist]
#   services.sh redis-stop DIR
set -euo pipefail

die() { echo "services.sh: $*" >&2; exit 1; }

# Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off PATH.
pg_bin() {
    local dir
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
    done
    if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
        dirname "$(command -v initdb)"; return 0
    fi
    return 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
    else return 1
    fi
}

ensure_packages() {
    local missing=() want
    for want in "$@"; do
        case "$want" in
            postgres) pg_bin >/dev/null || missing+=(postgresql postgresql-contrib) ;;
            redis) command -v redis-server >/dev/null || missing+=(redis-server) ;;
            nginx)
                command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
                command -v envsubst >/dev/null || missing+=(gettext-base)
                ;;
            python-venv) missing+=(python3 python3-venv python3-pip) ;;
            # promtool and the server, for the metrics tests. Under systemd
            # Debian also starts its own Prometheus on :9090; the tests run
            # theirs on free ports and leave it alone.
            prometheus) command -v promtool >/dev/null || missing+=(prometheus) ;;
            # The HTTP load generator of make bench.
            wrk) command -v wrk >/dev/null || missing+=(wrk) ;;
            # Headless Chromium and its WebDriver server, for the docs
            # page's browser tests (api/tests/api/docs_page.rs).
            chromium)
                command -v chromium >/dev/null || missing+=(chromium)
                command -v chromedriver >/dev/null || missing+=(chromium-driver)
                ;;
            # The openssl command, which makes the TLS tests' certificates
            # (api/tests/api/tls.rs).
            openssl) command -v openssl >/dev/null || missing+=(openssl) ;;
            *) die "ensure-packages: unknown server '$want'" ;;
        esac
    done
    command -v curl >/dev/null || missing+=(curl ca-certificates)
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "services.sh: installing ${missing[*]}" >&2
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        die "missing packages: ${missing[*]}. Install them (sudo apt-get install ${missing[*]}) and run this again."
    fi
    # Debian's postgresql package starts a system cluster on 5432; it is not ours
    # and is left alone: ours run on their own ports.
    if [[ " $* " == *" postgres "* ]]; then
        pg_bin >/dev/null || die "postgresql is installed but initdb was not found"
    fi
}

# Below the kernel's ephemeral range, where outgoing connections and port-0
# binds take ports: a port picked there can be gone before the server binds it.
# Above make local's fixed ports (.env.local: 8000 to 8080, 15432, 16379), so
# that a test's server cannot hold one when make local starts.
free_port() {
    local count=${1:-1} port low=32768 next first=20000
    [ -r /proc/sys/net/ipv4/ip_local_port_range ] && read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    [ "$low" -gt $((first + 1000)) ] || die "the ephemeral port range starts too low ($low) to pick ports under it"
    for _ in $(seq 1 200); do
        port=$((first + RANDOM % (low - first - count)))
        for ((next = port; next < port + count; next++)); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$next") 2>/dev/null; then continue 2; fi
        done
        echo "$port"; return 0
    done
    die "no free port found"
}

# initdb and postgres refuse to run as root; as root we run them as the
# 'postgres' system user that Debian's package creates.
run_pg() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root needs the 'postgres' user (from the postgresql package)"
        # From /, which postgres may enter: the caller's directory may be private.
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

pg_start() {
    local dir=$1 port=$2 throwaway=${3:-} bin durability=""
    [ "$throwaway" = throwaway ] && durability="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    bin=$(pg_bin) || die "PostgreSQL server programs not found; run: $0 ensure-packages"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$dir"
        runuser -u postgres -- test -x "$dir" 2>/dev/null \
            || die "the postgres user cannot reach $dir: a directory above it is private to root. Run as a regular user, or pick a reachable directory (LOCAL_DIR=/var/tmp/... make run)."
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        # trust on loopback only: these are throwaway or single-developer clusters.
        run_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
    fi
    run_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
        -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=200 $durability" start >/dev/null \
        || { tail -n 20 "$dir/postgres.log" >&2; die "PostgreSQL did not start on port $port"; }
}

pg_stop() {
    local dir=$1 bin
    bin=$(pg_bin) || return 0
    [ -f "$dir/data/postmaster.pid" ] || return 0
    dir=$(cd "$dir" && pwd) # run_pg runs from /
    run_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null || true
}

redis_start() {
    local dir=$1 port=$2 persist=${3:-}
    command -v redis-server >/dev/null || die "redis-server not found; run: $0 ensure-packages"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local save=(--save "" --appendonly no)
    [ "$persist" = persist ] && save=(--appendonly yes)
    redis-server --bind 127.0.0.1 --port "$port" --daemonize yes \
        --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "${save[@]}" \
        || die "redis-server did not start on port $port"
    # Answering is not enough: while a kept dataset loads, Redis refuses
    # every command with LOADING (seconds, for a bench's leftovers), and
    # a service started then finds it failing.
    for _ in $(seq 1 600); do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.05
    done
    die "redis-server is not answering PING on port $port"
}

redis_stop() {
    local dir=$1 pid
    [ -f "$dir/redis.pid" ] || return 0
    pid=$(cat "$dir/redis.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/redis.pid"
}

cmd=${1:-}
shift || true
case "$cmd" in
    ensure-packages) ensure_packages "$@" ;;
    free-port) free_port "$@" ;;
    pg-bin) pg_bin || die "PostgreSQL server programs not found" ;;
    pg-start) [ $# -ge 2 ] || die "usage: pg-start DIR PORT [throwaway]"; pg_start "$@" ;;
    pg-stop) [ $# -eq 1 ] || die "usage: pg-stop DIR"; pg_stop "$@" ;;
    redis-start) [ $# -ge 2 ] || die "usage: redis-start DIR PORT [persist]"; redis_start "$@" ;;
    redis-stop) [ $# -eq 1 ] || die "usage: redis-stop DIR"; redis_stop "$@" ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
