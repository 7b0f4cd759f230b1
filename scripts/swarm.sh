#!/usr/bin/env bash
# `make swarm`: compose.prod.yaml as a Swarm stack named SWARM_STACK, its
# ${...} filled in from PROD_ENV_FILE (.env.prod). `docker stack deploy`
# has no --env-file, so this reads the file the way compose's --env-file
# does: NAME=value lines and # comments, values taken literally (a `$`,
# a backtick or a space in a secret stays what it is), and a variable the
# environment already has wins over the file. Values are not unquoted:
# write them bare. Needs a Docker CLI of 23.0 or newer (older ones refuse a
# compose file without `version:`).
set -euo pipefail
cd "$(dirname "$0")/.."

env_file=${PROD_ENV_FILE:-.env.prod}
stack=${SWARM_STACK:?SWARM_STACK names the stack}
[ -f "$env_file" ] || { echo "swarm.sh: $env_file is missing" >&2; exit 2; }

while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in '' | '#'*) continue ;; esac
    name=${line%%=*}
    if [[ ! "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ "$name" = "$line" ]; then
        echo "swarm.sh: $env_file: not NAME=value: $line" >&2
        exit 2
    fi
    [ -n "${!name+set}" ] || export "$line"
done <"$env_file"
# The stack file's env_file, resolved beside it: an absolute path.
PROD_ENV_FILE=$(realpath "$env_file")
export PROD_ENV_FILE

# --with-registry-auth: nodes pull the images with this client's registry credentials.
exec docker stack deploy --prune --with-registry-auth -c compose.prod.yaml "$stack"
