#!/bin/sh
# Keeps nginx's upstream servers on the service's current addresses. nginx
# resolves API_HOST (a name in compose and Swarm) once, as it loads its
# configuration: when the service's containers are replaced (a rolling
# update, `up` recreating one, a scale), their new addresses would never
# get traffic and the old ones would time out. This runs from the nginx
# image's /docker-entrypoint.d/ before nginx starts; it waits (bounded) for
# the name to resolve, since nginx refuses to start on an upstream name
# that does not, then watches the name and reloads nginx when its
# addresses change. A reload re-resolves every upstream and lets requests
# in flight finish on the old workers; between the change and the reload,
# proxy_next_upstream sends requests on to the addresses that answer.
#
# Written by hand: open-source nginx re-resolves upstream names only from
# 1.27.3 (`server ... resolve`), and a stack may run an older one.
#
#   API_HOST                  the name (an address needs no following)
#   API_HOST_WAIT             seconds to wait for it to resolve (120)
#   API_HOST_FOLLOW_INTERVAL  seconds between looks (1)
set -eu

host=${API_HOST:?}
case "$host" in
    *:* | *[!0-9.]*) ;;
    *) exit 0 ;; # an IPv4 address
esac
case "$host" in *:*) exit 0 ;; esac # an IPv6 address

# Every IPv4 address of the name, sorted, on one line. glibc's getent lists
# them all with ahostsv4; musl's (the Alpine image) has no ahostsv4 and its
# `hosts` prints only the first address, whose order Docker's DNS shuffles,
# so there busybox's nslookup lists them.
addresses() {
    if found=$(getent ahostsv4 "$host" 2>/dev/null); then
        printf '%s\n' "$found" | awk '{ print $1 }'
    else
        nslookup "$host" 2>/dev/null | awk '
            /^Name:/ { named = 1; next }
            named && /^Address/ && match($0, /[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/) { print substr($0, RSTART, RLENGTH) }'
    fi | sort -u | tr '\n' ' '
}

# Bounded by the clock: one lookup of a name that does not resolve yet can
# itself take seconds.
deadline=$(($(date +%s) + ${API_HOST_WAIT:-120}))
until [ -n "$(addresses)" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "follow-api-host: $host does not resolve after ${API_HOST_WAIT:-120}s; starting nginx anyway" >&2
        break
    fi
    sleep 1
done

follow() {
    known=$(addresses)
    echo "follow-api-host: $host is ${known:-unresolved}" >&2
    while sleep "${API_HOST_FOLLOW_INTERVAL:-1}"; do
        now=$(addresses)
        # No address at all (every task replaced at once): keep the last
        # configuration, whose reload would fail anyway.
        if [ -n "$now" ] && [ "$now" != "$known" ]; then
            echo "follow-api-host: $host is now $now; reloading nginx" >&2
            if nginx -s reload; then known=$now; fi
        fi
    done
}
# In the background, for nginx's lifetime: nginx becomes PID 1 and reaps it.
follow </dev/null &
