#!/usr/bin/env bash
# render.sh NAME AUTH DEST: scaffold a service from the template into DEST/NAME.
source "$(dirname "$0")/lib.sh"
[ $# -eq 3 ] || { echo "usage: render.sh NAME AUTH(true|false) DEST" >&2; exit 2; }
case "$2" in true|false) ;; *) echo "AUTH must be true or false, not '$2'" >&2; exit 2 ;; esac
ensure_cargo_generate
mkdir -p "$3"
if [ -n "$(git -C "$repo_root" status --porcelain)" ]; then
    echo "render.sh: the template has uncommitted changes; the new project records HEAD, which lacks them, as its base for upgrades" >&2
fi
RECORD_ORIGIN=1 render "$1" "$2" "$3"
echo "created $(cd "$3" && pwd)/$1"
