#!/usr/bin/env bash
# render.sh NAME AUTH DEST: scaffold a service from the template into DEST/NAME.
source "$(dirname "$0")/lib.sh"
[ $# -eq 3 ] || { echo "usage: render.sh NAME AUTH(true|false) DEST" >&2; exit 2; }
case "$2" in true|false) ;; *) echo "AUTH must be true or false, not '$2'" >&2; exit 2 ;; esac
ensure_cargo_generate
mkdir -p "$3"
render "$1" "$2" "$3"
echo "created $(cd "$3" && pwd)/$1"
