#!/usr/bin/env bash
# sync.sh: re-renders the repository root from template/ with the default
# answers (name api, auth true), after an edit to the template. Root files
# with uncommitted edits are not overwritten unless FORCE=1: the template is
# the source, so such edits belong in template/ first.
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
cd "$repo_root"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
render api true "$scratch"
fresh=$scratch/api

# The usual slip is editing the generated copy: a root file that changed
# (against HEAD) while its source under template/ did not. Those edits would
# be lost, so stop and name them.
changed() { ! git diff --quiet HEAD -- "$1" 2>/dev/null || [ -n "$(git ls-files --others --exclude-standard -- "$1")" ]; }
if [ "${FORCE:-0}" != 1 ]; then
    clobbered=()
    for path in $(rendered_root_files); do
        changed "$path" || continue
        cmp -s "$path" "$fresh/$path" 2>/dev/null && continue
        if ! changed "template/$path" && ! changed "template/$path.liquid"; then
            clobbered+=("$path")
        fi
    done
    if [ ${#clobbered[@]} -gt 0 ]; then
        echo "sync: these root files were edited but their sources under template/ were not:" >&2
        printf '  %s\n' "${clobbered[@]}" >&2
        echo "Make the same edit under template/ (the source), or rerun with FORCE=1 to discard them." >&2
        exit 1
    fi
fi

# Remove rendered files the template no longer produces, then copy the render.
for path in $(rendered_root_files); do
    [ -e "$fresh/$path" ] || { git rm -q -- "$path"; echo "removed $path"; }
done
cp -a "$fresh/." "$repo_root/"

# A dependency change in template/api/Cargo.toml.liquid needs a new lock file:
# let cargo resolve it at the root, then carry it back into the template with
# the package's name as a placeholder again.
cargo metadata --format-version 1 >/dev/null
sed 's/^name = "api"$/name = "{{project-name}}"/' Cargo.lock >"$template_dir/Cargo.lock.liquid"
echo "root re-rendered from template/"
