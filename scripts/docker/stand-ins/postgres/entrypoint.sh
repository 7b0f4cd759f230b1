#!/bin/bash
# The stand-in's entrypoint: the official postgres image's contract, as the
# Dockerfile beside this lists it. Not the official script.
set -euo pipefail

if [ "${1:0:1}" = - ]; then set -- postgres "$@"; fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?the stand-in, like the official image, needs POSTGRES_PASSWORD}"
    user=${POSTGRES_USER:-postgres}
    db=${POSTGRES_DB:-$user}
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 -D "$PGDATA" >/dev/null
    printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
    printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
    # The init scripts' server: its socket only, so nothing connects early.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$user")
    if [ "$db" != postgres ]; then
        "${psql[@]}" --dbname postgres --set db="$db" <<<'CREATE DATABASE :"db";' >/dev/null
    fi
    for file in /docker-entrypoint-initdb.d/*; do
        case "$file" in
            *.sh) echo "stand-in: running $file"; . "$file" ;;
            *.sql) echo "stand-in: running $file"; "${psql[@]}" --dbname "$db" -f "$file" ;;
            *.sql.gz) echo "stand-in: running $file"; gunzip -c "$file" | "${psql[@]}" --dbname "$db" ;;
            *) ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    echo "stand-in: initialised $PGDATA"
fi

exec "$@"
