#!/bin/sh
# The stand-in's template step: see the Dockerfile beside this.
set -eu

templates=${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}
suffix=${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}
output=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
filter=${NGINX_ENVSUBST_FILTER:-}
[ -d "$templates" ] || exit 0

names=$(env | cut -d= -f1 | grep -E "$filter" | sed 's/^/$/' | tr '\n' ' ')
find "$templates" -follow -type f -name "*$suffix" -print | while read -r template; do
    relative=${template#"$templates/"}
    target="$output/${relative%"$suffix"}"
    mkdir -p "$(dirname "$target")"
    echo "stand-in: $template -> $target"
    envsubst "$names" <"$template" >"$target"
done
