#!/bin/bash
# The stand-in's entrypoint: the official redis image's contract, as the
# Dockerfile beside this lists it. Not the official script.
set -euo pipefail

if [ "${1:0:1}" = - ]; then set -- redis-server "$@"; fi

if [ "$1" = redis-server ]; then
    shift
    # Protected mode off, as the official build has it; a config file, if
    # any, must stay the first argument.
    if [ -n "${1:-}" ] && [ "${1:0:1}" != - ]; then
        set -- redis-server "$1" --protected-mode no "${@:2}"
    else
        set -- redis-server --protected-mode no "$@"
    fi
    if [ "$(id -u)" = 0 ]; then
        chown -R redis:redis /data
        exec setpriv --reuid=redis --regid=redis --init-groups "$@"
    fi
fi

exec "$@"
