#!/bin/sh
# The stand-in's entrypoint: the official nginx image's contract, as the
# Dockerfile beside this lists it. Not the official script.
set -eu

# In a pipeline, as the official script has it: what an *.envsh exports
# reaches the scripts after it, not nginx itself.
if [ "$1" = nginx ] || [ "$1" = nginx-debug ]; then
    find /docker-entrypoint.d/ -follow -type f -print | sort -V | while read -r script; do
        case "$script" in
            *.envsh)
                if [ -x "$script" ]; then
                    echo "stand-in: sourcing $script"
                    . "$script"
                fi
                ;;
            *.sh)
                if [ -x "$script" ]; then
                    echo "stand-in: running $script"
                    "$script"
                fi
                ;;
            *) ;;
        esac
    done
fi

exec "$@"
