#!/bin/bash
# The stand-in's entrypoint: the official redis image's contract, as the
# Dockerfile beside this lists it. Not the official script.
set -euo pipefail

if [ "${1:0:1}" = - ]; then set -- redis-server "$@"; fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi

exec "$@"
