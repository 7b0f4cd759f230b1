# Shared by the template's tooling scripts; sourced, not run.
set -euo pipefail

CARGO_GENERATE_VERSION=0.23.7
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
template_dir=$repo_root/template

# Files at the repository root that are not rendered from the template.
# The benchmark figures are this machine's and this project's: a new project makes
# its own with make bench.
root_only=(template CONTRIBUTING.md docs/benchmarks.md docs/benchmarks.json docs/benchmarks-notes.md)

ensure_cargo_generate() {
    if ! cargo generate --version 2>/dev/null | grep -q "$CARGO_GENERATE_VERSION"; then
        echo "installing cargo-generate $CARGO_GENERATE_VERSION" >&2
        cargo install cargo-generate --version "$CARGO_GENERATE_VERSION" --locked >&2
    fi
}

# render NAME AUTH PARENT_DIR: renders into PARENT_DIR/NAME, prompting for nothing.
render() {
    local name=$1 auth=$2 parent=$3
    env -u RUST_BACKTRACE cargo generate --path "$template_dir" --name "$name" \
        --define "auth=$auth" --destination "$parent" --vcs none --silent >"$parent/.render-$name.log" 2>&1 \
        || { cat "$parent/.render-$name.log" >&2; return 1; }
    rm -f "$parent/.render-$name.log"
}

# Tracked files at the root that a default render should reproduce.
rendered_root_files() {
    local exclude=() path
    for path in "${root_only[@]}"; do exclude+=(":(exclude)$path"); done
    git -C "$repo_root" ls-files -- . "${exclude[@]}"
}
