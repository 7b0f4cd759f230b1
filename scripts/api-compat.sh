#!/usr/bin/env bash
# Breaking changes in the API since a git ref: compares the OpenAPI documents
# committed in openapi/ with the ref's (default main). Exits 1 on a breaking
# change to a version the ref already has, or to the unversioned paths; a
# version the ref does not have is new and free. See docs/versioning.md.
#   scripts/api-compat.sh [REF]     (make api-compat REF=...)
# API_BIN names a built binary to use instead of `cargo run`.
set -euo pipefail
cd "$(dirname "$0")/.."

ref=${1:-main}
if ! git rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then
    echo "api-compat: '$ref' is not a commit here (try origin/main, or a tag)" >&2
    exit 2
fi

base=$(mktemp -d -t api-compat-XXXXXX)
trap 'rm -rf "$base"' EXIT
# Paths relative to this directory, so that a service in a subdirectory of a
# larger repository works too.
git ls-tree --name-only "$ref" -- openapi/ | while read -r path; do
    git show "$ref:./$path" >"$base/${path##*/}"
done
if [ -z "$(ls -A "$base")" ]; then
    echo "api-compat: $ref has no openapi/ documents, so nothing to compare"
    exit 0
fi

echo "api-compat: openapi/ against $ref"
if [ -n "${API_BIN:-}" ]; then
    api=("$API_BIN")
else
    package=$(scripts/package-name.sh)
    api=(cargo run --quiet --bin "$package" --)
fi
"${api[@]}" openapi breaking --base "$base" --dir openapi
