#!/usr/bin/env bash
# check.sh: what `make test` runs for the template.
#   1. drift: the repository root is exactly the default render;
#   2. names: invalid project names fail with a clear message;
#   3. renders: two names, both values of `auth`, each built and its own
#      `make test` passed (against its own throwaway PostgreSQL and Redis),
#      the one without sign-in after `make version NEW=v3`;
#   4. upgrades: re-rendering from a project's template-answers.toml
#      reproduces it;
#   5. make new, and a render from a git URL, work too.
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
cd "$repo_root"

scratch=$(mktemp -d -t template-check-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
# Renders share the root's target directory: same dependencies, one build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo_root/target}

step() { printf '\n== template: %s\n' "$*"; }

step "drift between template/ and the repository root"
mkdir "$scratch/default"
render api true "$scratch/default"
fresh=$scratch/default/api
drift=0
expected=$(cd "$fresh" && find . -type f | sed 's|^\./||' | sort)
actual=$(rendered_root_files | sort)
if [ "$expected" != "$actual" ]; then
    drift=1
    diff <(echo "$expected") <(echo "$actual") | sed -n 's/^< /  only in the render: /p; s/^> /  only at the root:   /p' >&2
fi
is_executable() { if [ -x "$1" ]; then echo yes; else echo no; fi; }
for path in $actual; do
    [ -f "$fresh/$path" ] || continue
    if ! cmp -s "$fresh/$path" "$path"; then
        drift=1
        echo "  differs: $path" >&2
        diff -u "$fresh/$path" "$path" | head -n 20 | sed 's/^/    /' >&2
    fi
    if [ "$(is_executable "$fresh/$path")" != "$(is_executable "$path")" ]; then
        drift=1
        echo "  executable bit differs: $path" >&2
    fi
done
if [ "$drift" = 1 ]; then
    echo "template: the root is not the render of template/. Edit template/ and run 'make sync' (see CONTRIBUTING.md)." >&2
    exit 1
fi
echo "root matches the default render"

step "invalid project names are refused with a reason"
for bad in 2fa poem app; do
    if out=$(env -u RUST_BACKTRACE cargo generate --path "$template_dir" --name "$bad" --define auth=true \
            --destination "$scratch" --vcs none --silent 2>&1); then
        echo "template: '$bad' was accepted" >&2; exit 1
    fi
    grep -q "\"$bad\":" <<<"$out" || { echo "template: no clear message for '$bad':" >&2; echo "$out" >&2; exit 1; }
    # cargo-generate makes the destination directory before hooks run; what
    # matters is that no file of a broken project is left in it.
    if [ -n "$(find "$scratch/$bad" -type f 2>/dev/null)" ]; then
        echo "template: a refused name left files in $scratch/$bad" >&2; exit 1
    fi
done
echo "refused: 2fa, poem, app"

for render_case in "orders true" "billing-service false"; do
    read -r name auth <<<"$render_case"
    step "render $name (auth=$auth): build and its own tests"
    mkdir -p "$scratch/$name-parent"
    render "$name" "$auth" "$scratch/$name-parent"
    project=$scratch/$name-parent/$name
    grep -qx "auth = $auth" "$project/template-answers.toml"
    if [ "$auth" = false ]; then
        # No sign-in means no Redis and no session code at all.
        if (cd "$project" && grep -rniE 'redis|session' api scripts/test.sh scripts/local.sh scripts/bench.sh scripts/check-readme.sh scripts/smoke.sh .env .env.local .env.prod \
            compose.yaml compose.prod.yaml nginx.conf Dockerfile .github) >"$scratch/leaks"; then
            echo "template: auth=false still mentions sign-in:" >&2; cat "$scratch/leaks" >&2; exit 1
        fi
    fi
    pristine=$project
    if [ "$auth" = false ]; then
        # Adding a version is one command, and the project still builds and
        # passes its tests, now with v3 served and documented.
        step "make version NEW=v3 in $name"
        pristine=$scratch/$name-pristine
        cp -a "$project" "$pristine"
        (cd "$project" && make --no-print-directory version NEW=v3 >/dev/null)
        grep -q '"/v3/hello"' "$project/openapi/v3.json"
        grep -qx 'pub mod v3;' "$project/api/src/routes/mod.rs"
        echo "v3 added: api/src/routes/v3/, openapi/v3.json"
    fi
    (cd "$project" && make test)

    step "re-render $name from its template-answers.toml"
    mkdir "$scratch/$name-again"
    env -u RUST_BACKTRACE cargo generate --path "$template_dir" --name "$name" \
        --values-file "$project/template-answers.toml" --destination "$scratch/$name-again" --vcs none --silent >/dev/null
    diff -r -x target -x .local -x Cargo.lock "$scratch/$name-again/$name" "$pristine"
    echo "same answers, same project"
done
step "make new, and generating from a git URL with template as the subfolder"
make --no-print-directory new NAME=scaffolded AUTH=false DEST="$scratch/new" >/dev/null
grep -qx "auth = false" "$scratch/new/scaffolded/template-answers.toml"
grep -q '^name = "scaffolded"$' "$scratch/new/scaffolded/api/Cargo.toml"
if [ -n "$(git status --porcelain -- template)" ]; then
    echo "skipped the git URL render: template/ has uncommitted changes, and a URL serves commits"
else
    mkdir "$scratch/from-git" "$scratch/from-path"
    env -u RUST_BACKTRACE cargo generate --git "file://$repo_root" template --name orders \
        --define auth=true --destination "$scratch/from-git" --vcs none --silent >/dev/null
    render orders true "$scratch/from-path"
    diff -r "$scratch/from-git/orders" "$scratch/from-path/orders"
    echo "a git URL renders what --path renders"
fi

echo
echo "template: all checks passed"
