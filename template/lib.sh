# Shared by the template's tooling scripts; sourced, not run.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One pin for the template and the services made from it.
CARGO_GENERATE_VERSION=$(sed -nE 's/^CARGO_GENERATE_VERSION=(.*)$/\1/p' "$repo_root/scripts/template-upgrade.sh")

ensure_cargo_generate() {
    if ! cargo generate --version 2>/dev/null | grep -q "$CARGO_GENERATE_VERSION"; then
        echo "installing cargo-generate $CARGO_GENERATE_VERSION" >&2
        cargo install cargo-generate --version "$CARGO_GENERATE_VERSION" --locked >&2
    fi
}

# config_list KEY: one line per entry of a list in the root cargo-generate.toml;
# KEY is `include`, `ignore` or `auth-ignore` (the `[conditional.'!auth']` one).
config_list() {
    python3 - "$repo_root/cargo-generate.toml" "$1" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    config = tomllib.load(f)
key = sys.argv[2]
if key == "auth-ignore":
    entries = config["conditional"]["!auth"]["ignore"]
else:
    entries = config["template"][key]
print("\n".join(entries))
EOF
}

# source_files: the repository's files as the work tree has them (tracked,
# and new ones git does not ignore), relative to the root: what a commit of
# the work tree would hold, so what a render from a git URL would see.
source_files() {
    local path
    git -C "$repo_root" ls-files --cached --others --exclude-standard | sort -u | while IFS= read -r path; do
        [ -f "$repo_root/$path" ] && printf '%s\n' "$path"
    done
}

# stage DIR: copies source_files into DIR, modes included. A render from
# there skips the copy of target/ and .local/ that `--path .` would make
# (cargo-generate copies everything, then deletes what `ignore` names).
stage() {
    mkdir -p "$1"
    (cd "$repo_root" && source_files | tar -cf - --no-recursion --files-from=-) | tar -xf - -C "$1"
}

# render NAME AUTH PARENT_DIR [TEMPLATE_DIR]: renders into PARENT_DIR/NAME,
# prompting for nothing, from TEMPLATE_DIR (a staged copy of the work tree
# when not given).
render() {
    local name=$1 auth=$2 parent=$3 source=${4:-} staged=
    mkdir -p "$parent"
    if [ -z "$source" ]; then
        staged=$(mktemp -d -t template-source-XXXXXX)
        stage "$staged"
        source=$staged
    fi
    # RECORD_ORIGIN=1: the project records this repository and its commit,
    # for `make template-upgrade` (make new does; the checks compare with the
    # root, which records none).
    local origin=()
    if [ "${RECORD_ORIGIN:-0}" = 1 ]; then
        # Where the service will fetch the template from: TEMPLATE_SOURCE,
        # else this repository's origin (reachable from the service's CI,
        # once HEAD is pushed), else its path here.
        local template_source=${TEMPLATE_SOURCE:-$(git -C "$repo_root" remote get-url origin 2>/dev/null || echo "$repo_root")}
        origin=(--define "template_source=$template_source" --define "template_commit=$(git -C "$repo_root" rev-parse HEAD)")
    fi
    env -u RUST_BACKTRACE cargo generate --path "$source" --name "$name" \
        --define "auth=$auth" "${origin[@]}" --destination "$parent" --vcs none --silent >"$parent/.render-$name.log" 2>&1 \
        || { cat "$parent/.render-$name.log" >&2; [ -z "$staged" ] || rm -rf "$staged"; return 1; }
    rm -f "$parent/.render-$name.log"
    [ -z "$staged" ] || rm -rf "$staged"
}

# expected_files: what a render with the default answers must hold, relative
# to its root: the source files, less what `ignore` names and the twins
# (each stands in for the file beside it) and cargo-generate.toml.
expected_files() {
    local ignored
    ignored=$(config_list ignore)
    source_files | while IFS= read -r path; do
        case "$path" in cargo-generate.toml | *.liquid) continue ;; esac
        while IFS= read -r skip; do
            case "$path" in "$skip" | "$skip"/*) continue 2 ;; esac
        done <<<"$ignored"
        printf '%s\n' "$path"
    done
}
