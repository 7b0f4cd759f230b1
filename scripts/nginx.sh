#!/usr/bin/env bash
# Runs the shipped nginx.conf without Docker, filled in the way the official
# nginx image fills it: nginx/15-api-upstreams.envsh first, then envsubst of
# the NGINX_* variables only. make local and the tests go through here.
#
#   nginx.sh render OUT     fill nginx.conf in from the environment into OUT
#   nginx.sh check DIR      render DIR/nginx.conf and have nginx test it (-t)
#   nginx.sh start DIR      check, then start nginx with DIR as its prefix
#                           (detached; its output in DIR/nginx.log)
#   nginx.sh stop DIR       graceful stop (waits for it)
#
# The environment: API_HOST, API_PORT, FIRST_WORKER_PORT and WORKERS (for
# the envsh), and the NGINX_* settings nginx.conf names (all described in
# .env). NGINX_CONF_FILE names another file to fill in than nginx.conf (the
# tests enable its commented examples this way).
set -euo pipefail

die() { echo "nginx.sh: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/.." && pwd)

render() {
    local out=$1 names missing
    command -v envsubst >/dev/null || die "envsubst is missing (apt-get install gettext-base)"
    # shellcheck source=../nginx/15-api-upstreams.envsh
    . "$root/nginx/15-api-upstreams.envsh"
    names=$(env | sed -n 's/^\(NGINX_[A-Z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
    envsubst "$names" <"${NGINX_CONF_FILE:-$root/nginx.conf}" >"$out"
    missing=$(grep -o '\${NGINX_[A-Z0-9_]*}' "$out" | sort -u | tr '\n' ' ' || true)
    [ -z "$missing" ] || die "not set: $missing"
}

# nginx run by root hands requests to an unprivileged user, which may not
# read a project below a private home directory; locally it is this user.
user_flag() {
    if [ "$(id -u)" = 0 ]; then echo "user $(id -un);"; fi
}

# Sets dir to DIR made absolute.
check() {
    dir=$1
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    render "$dir/nginx.conf"
    nginx -e stderr -p "$dir" -c "$dir/nginx.conf" -g "$(user_flag)" -t -q \
        || die "nginx rejected $dir/nginx.conf"
}

start() {
    local dir
    check "$1"
    # Detached from the terminal: Ctrl-C in it is not meant for nginx.
    setsid nginx -e stderr -p "$dir" -c "$dir/nginx.conf" -g "daemon off; $(user_flag)" \
        >>"$dir/nginx.log" 2>&1 </dev/null &
    for _ in $(seq 1 50); do
        [ -s "$dir/nginx.pid" ] && return 0
        kill -0 $! 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$dir/nginx.log" >&2
    die "nginx did not start"
}

stop() {
    local dir=$1 pid
    [ -s "$dir/nginx.pid" ] || return 0
    pid=$(cat "$dir/nginx.pid")
    kill -QUIT "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$dir/nginx.pid"; return 0; }
        sleep 0.1
    done
    kill -TERM "$pid" 2>/dev/null || true
}

cmd=${1:-}
shift || true
case "$cmd" in
    render) [ $# -eq 1 ] || die "usage: render OUT"; render "$1" ;;
    check) [ $# -eq 1 ] || die "usage: check DIR"; check "$1" ;;
    start) [ $# -eq 1 ] || die "usage: start DIR"; start "$1" ;;
    stop) [ $# -eq 1 ] || die "usage: stop DIR"; stop "$1" ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
