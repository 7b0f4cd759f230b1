#!/usr/bin/env bash
# check.sh [STEP...]: what `make test` runs for the template, every step in
# this order, or only the steps named:
#   twins    the twins and cargo-generate.toml's include list agree, and the
#            default render (name api, auth=true) is this repository itself:
#            the same files, byte for byte, with the same executable bits;
#   names    invalid project names are refused, with a reason;
#   renders  `orders` (auth=true) and `billing-service` (auth=false, after
#            `make version NEW=v3` and a first table through `make
#            migration`) each built and its own `make test` passed;
#            the Cargo.lock copied into them kept every pinned version; the
#            one without sign-in mentions none; re-rendering each from its
#            template-answers.toml reproduces it. When the upgrade step runs
#            too, its upgraded service (sign-in on, this version, another
#            name) stands for `orders` in `make test` and the lock check;
#   entry    `make new`, and a render from a git URL of this repository;
#   upgrade  a service generated from an earlier version of the template and
#            edited is upgraded with `make template-upgrade`: what only one
#            side changed is merged, the one overlap conflicts, the user's
#            deletion and addition and setting stay, the template's new file
#            arrives, the upgrade script the template changed is replaced
#            while it runs and still finishes, its upgrade notes run;
#            resolved, the service passes its own `make test` and
#            `make template-check`. An untouched service upgrades to exactly
#            a fresh render.
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
cd "$repo_root"

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(twins names renders entry upgrade)
for step in "${steps[@]}"; do
    case "$step" in twins | names | renders | entry | upgrade) ;; *) echo "check.sh: no step '$step'" >&2; exit 2 ;; esac
done

scratch=$(mktemp -d -t template-check-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
# Renders share the root's target directory: same dependencies, one build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo_root/target}
# The rendered services' own make test compiles their fuzz targets and runs
# none (scripts/fuzz.sh): the targets' code is the template's, built with
# sanitizers and run by this repository's own make test, and a finding there
# is the template's to fix.
export FUZZ=check
# Nor do they run the Docker stacks: their stack files are the root's with
# the name changed, and the root's own make test runs those for real.
export STACKS=none
# Every render is made from one copy of the work tree as it is now.
source_dir=$scratch/source
stage "$source_dir"

say() { printf '\n== template: %s\n' "$*"; }
wants() { [[ " ${steps[*]} " == *" $1 "* ]]; }
is_executable() { if [ -x "$1" ]; then echo yes; else echo no; fi; }

check_twins() {
    say "twins, and the repository as the default render"
    local twins patterns failed=0 path pattern matched
    twins=$(source_files | sed -n 's/\.liquid$//p')
    # The include patterns, anchored at the root by their leading /. Plain
    # paths and `*` mean the same to bash's [[ == ]] as to .gitignore.
    patterns=$(config_list include | sed 's|^/||')
    # Exactly the files with a twin are included (and so rendered).
    included() {
        local pattern
        while IFS= read -r pattern; do
            # shellcheck disable=SC2053
            [[ $1 == $pattern ]] && return 0
        done <<<"$patterns"
        return 1
    }
    for path in $twins; do
        [ -f "$path" ] || { echo "template: $path.liquid has no $path beside it" >&2; failed=1; }
        included "$path" || { echo "template: $path.liquid is not in cargo-generate.toml's include list" >&2; failed=1; }
    done
    while IFS= read -r path; do
        case "$path" in *.liquid) continue ;; esac
        if included "$path" && [ ! -f "$path.liquid" ]; then
            echo "template: $path is in cargo-generate.toml's include list but has no twin, $path.liquid" >&2
            failed=1
        fi
    done < <(source_files)
    while IFS= read -r pattern; do
        matched=false
        for path in $twins; do
            # shellcheck disable=SC2053
            [[ $path == $pattern ]] && { matched=true; break; }
        done
        $matched || { echo "template: '$pattern' in cargo-generate.toml's include list matches no twin" >&2; failed=1; }
    done <<<"$patterns"
    [ "$failed" = 0 ] || exit 1

    render api true "$scratch/default" "$source_dir"
    local fresh=$scratch/default/api expected actual
    expected=$(expected_files | sort)
    actual=$(cd "$fresh" && find . -type f | sed 's|^\./||' | sort)
    if [ "$expected" != "$actual" ]; then
        failed=1
        { diff <(echo "$expected") <(echo "$actual") || true; } | sed -n 's/^< /  missing from the render: /p; s/^> /  only in the render:      /p' >&2
    fi
    for path in $expected; do
        [ -f "$fresh/$path" ] || continue
        if ! cmp -s "$fresh/$path" "$path"; then
            failed=1
            echo "  differs: $path (its twin, $path.liquid, renders this)" >&2
            { diff -u "$path" "$fresh/$path" || true; } | head -n 20 | sed 's/^/    /' >&2
        fi
        if [ "$(is_executable "$fresh/$path")" != "$(is_executable "$path")" ]; then
            failed=1
            echo "  executable bit differs: $path" >&2
        fi
    done
    if [ "$failed" = 1 ]; then
        echo "template: the default render is not this repository. A twin and its original must change together (CONTRIBUTING.md, \"Layout\")." >&2
        exit 1
    fi
    echo "$(wc -l <<<"$twins") twins agree with include; the default render is this repository ($(wc -l <<<"$expected") files)"
}

check_names() {
    say "invalid project names are refused with a reason"
    local bad out
    for bad in 2fa poem app; do
        if out=$(env -u RUST_BACKTRACE cargo generate --path "$source_dir" --name "$bad" --define auth=true \
                --destination "$scratch" --vcs none --silent 2>&1); then
            echo "template: '$bad' was accepted" >&2; exit 1
        fi
        grep -q "\"$bad\":" <<<"$out" || { echo "template: no clear message for '$bad':" >&2; echo "$out" >&2; exit 1; }
        # cargo-generate makes the destination directory before hooks run;
        # what matters is that no file of a broken project is left in it.
        if [ -n "$(find "$scratch/$bad" -type f 2>/dev/null)" ]; then
            echo "template: a refused name left files in $scratch/$bad" >&2; exit 1
        fi
    done
    echo "refused: 2fa, poem, app"
}

# lock_kept PROJECT: the project's Cargo.lock, which cargo has rewritten for
# it, pins nothing the root's does not pin: cargo renamed the project's own
# entry and dropped what it does not use, and changed no version.
lock_kept() {
    local project=$1 name=$2 changed
    changed=$(diff <(lock_entries Cargo.lock) <(lock_entries "$project/Cargo.lock") | grep '^>' | grep -v "^> $name " || true)
    if [ -n "$changed" ]; then
        echo "template: cargo pinned packages in $name's Cargo.lock that the root's does not:" >&2
        echo "$changed" >&2
        exit 1
    fi
}
# lock_entries FILE: "name version source" of each package in a Cargo.lock.
lock_entries() {
    awk '/^\[\[package\]\]/ { if (n) print n, v, s; n = v = s = "" }
         /^name = / { n = $3 } /^version = / { v = $3 } /^source = / { s = $3 }
         END { if (n) print n, v, s }' "$1" | tr -d '"' | sort
}

# Mentions of sign-in. (Passwords of PostgreSQL and Redis, a PostgreSQL role's
# LOGIN, the image's nologin user and the WebDriver session in the path of
# chromedriver's DevTools command, api/tests/api/docs_page.rs, are not; nor
# are the Kubernetes schemas vendored in deploy/kubernetes/schemas, other
# projects' fields: a role's login, sessionAffinity, bearerTokenSecret.)
leaks='session|login|argon|bearer|/auth/|x-user-|passwords|password[ _-]?(hash|change)|demo-password|users add|hash.?concurrency|sign-?in'

check_renders() {
    local render_case name auth project pristine
    for render_case in "orders true" "billing-service false"; do
        read -r name auth <<<"$render_case"
        say "render $name (auth=$auth): build and its own tests"
        render "$name" "$auth" "$scratch/$name-parent" "$source_dir"
        project=$scratch/$name-parent/$name
        grep -qx "auth = $auth" "$project/template-answers.toml"
        if [ "$auth" = false ]; then
            if (cd "$project" && grep -rniE --exclude-dir=schemas "$leaks" api scripts .env .env.local .env.prod compose.yaml compose.prod.yaml \
                    nginx.conf Dockerfile Makefile init.sql openapi monitoring .github deploy \
                    | grep -v -e nologin -e 'ROLE .* LOGIN PASSWORD' -e '"session/{}/goog/cdp/execute"') >"$scratch/leaks"; then
                echo "template: auth=false still mentions sign-in:" >&2; cat "$scratch/leaks" >&2; exit 1
            fi
            echo "no mention of sign-in"
        fi
        pristine=$project
        if [ "$auth" = false ]; then
            # Adding a version is one command, and the project still builds
            # and passes its tests, now with v3 served and documented.
            say "make version NEW=v3 in $name"
            pristine=$scratch/$name-pristine
            cp -a "$project" "$pristine"
            (cd "$project" && make --no-print-directory version NEW=v3 >/dev/null)
            grep -q '"/v3/hello"' "$project/openapi/v3.json"
            echo "v3 added, and openapi/v3.json"
            # Its first table is a migration and the same lines in init.sql,
            # as the README says; its tests apply it and compare the two.
            say "make migration NAME=add_notes in $name"
            (cd "$project" && make --no-print-directory migration NAME=add_notes >/dev/null)
            table='CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL);'
            echo "$table" >>"$project/api/migrations/V2__add_notes.sql"
            echo "$table" >>"$project/init.sql"
            echo "api/migrations/V2__add_notes.sql added, and the table in init.sql"
        fi
        if [ "$auth" = true ] && wants upgrade; then
            # The upgrade step runs make test on a service generated as this
            # one is (sign-in on, this work tree's version) under another
            # name, with a user's edits to docs and .env merged in. One run
            # of the sign-in suite proves both, and saves the test command
            # a run of it (about ten minutes on two cores).
            echo "its make test and Cargo.lock are checked on the upgraded service (the upgrade step)"
        else
            (cd "$project" && make test)
            lock_kept "$project" "$name"
            echo "Cargo.lock: only $name's own entry renamed and unused packages dropped"
        fi

        say "re-render $name from its template-answers.toml"
        mkdir -p "$scratch/$name-again"
        env -u RUST_BACKTRACE cargo generate --path "$source_dir" --name "$name" \
            --values-file "$project/template-answers.toml" --destination "$scratch/$name-again" --vcs none --silent >/dev/null
        diff -r -x target -x .local -x Cargo.lock -x artifacts "$scratch/$name-again/$name" "$pristine"
        echo "same answers, same project"
    done
}

check_entry() {
    say "make new, and a render from a git URL"
    make --no-print-directory new NAME=scaffolded AUTH=false DEST="$scratch/new" >/dev/null
    grep -qx "auth = false" "$scratch/new/scaffolded/template-answers.toml"
    grep -q '^name = "scaffolded"$' "$scratch/new/scaffolded/api/Cargo.toml"
    echo "make new NAME=scaffolded AUTH=false"
    # A URL serves commits: compare with a render of HEAD's files.
    if ! git cat-file -e HEAD:cargo-generate.toml 2>/dev/null; then
        echo "skipped the git URL render: HEAD is not a template yet (no cargo-generate.toml at its root)"
        return
    fi
    mkdir -p "$scratch/head" "$scratch/from-git"
    git archive HEAD | tar -xf - -C "$scratch/head"
    env -u RUST_BACKTRACE cargo generate --git "file://$repo_root" --name orders \
        --define auth=true --destination "$scratch/from-git" --vcs none --silent >/dev/null
    render orders true "$scratch/from-head" "$scratch/head"
    diff -r "$scratch/from-git/orders" "$scratch/from-head/orders"
    echo "a git URL renders what a path renders (HEAD)"
}

check_upgrade() {
    say "template upgrades: from an earlier version, with and without local edits"
    # The template's history, in a repository of its own: version B is this
    # work tree, and A, an earlier version, is B with a few lines changed, a
    # file B dropped and without a file B added.
    local tpl=$scratch/upgrade-template
    # B is this work tree's version; A is called 0.1.0.
    local b_version
    b_version=$(sed -nE 's/^template_version = "(.*)"$/\1/p' "$repo_root/template-answers.toml")
    [ -n "$b_version" ] && [ "$b_version" != 0.1.0 ]
    stage "$tpl"
    git -C "$tpl" init -q -b main
    git -C "$tpl" config user.email template@example.invalid
    git -C "$tpl" config user.name template
    (
        cd "$tpl"
        sed -i -E 's/^template_version = .*/template_version = "0.1.0"/' template-answers.toml template-answers.toml.liquid
        sed -i '3s/.*/This line is version 0.1.0'"'"'s./' docs/serving.md docs/versioning.md docs/architecture.md
        printf 'Notes that version %s drops.\n' "$b_version" >docs/old-notes.md
        rm scripts/measure-load-spread.sh
        # A's upgrade script is not B's, so upgrading from A replaces the
        # script that is running the upgrade, midway.
        sed -i '2i # The upgrade script of version 0.1.0.' scripts/template-upgrade.sh
        git add -A && git commit -q -m "version 0.1.0"
    )
    local a_commit b_commit
    a_commit=$(git -C "$tpl" rev-parse HEAD)
    rm "$tpl/docs/old-notes.md"
    (cd "$tpl" && git ls-files -z | xargs -0 rm -f)
    stage "$tpl"
    mkdir -p "$tpl/template/upgrades"
    printf '#!/usr/bin/env bash\necho "notes of %s: nothing to change"\n' "$b_version" >"$tpl/template/upgrades/$b_version.sh"
    git -C "$tpl" add -A && git -C "$tpl" commit -q -m "version $b_version"
    b_commit=$(git -C "$tpl" rev-parse HEAD)

    # generate COMMIT NAME PARENT: a service as `make new` makes one, from
    # that commit of the template's repository.
    generate() {
        rm -rf "$scratch/gen-source" && mkdir -p "$scratch/gen-source" "$3"
        git -C "$tpl" archive "$1" | tar -x -C "$scratch/gen-source"
        env -u RUST_BACKTRACE cargo generate --path "$scratch/gen-source" --name "$2" --define auth=true \
            --define "template_source=$tpl" --define "template_commit=$1" \
            --destination "$3" --vcs none --silent >/dev/null
    }
    commit_all() { git -C "$1" add -A && git -C "$1" -c user.email=dev@example.invalid -c user.name=dev commit -q -m "$2"; }

    # An untouched service upgrades to exactly a fresh render of B.
    generate "$a_commit" untouched "$scratch/upgrade-untouched"
    local untouched=$scratch/upgrade-untouched/untouched
    git -C "$untouched" init -q -b main && commit_all "$untouched" generated
    if (cd "$untouched" && make --no-print-directory template-check >"$scratch/check.log" 2>&1); then
        echo "template: make template-check passed on version 0.1.0 with $b_version out" >&2; exit 1
    fi
    grep -q "template $b_version is out" "$scratch/check.log"
    touch "$untouched/uncommitted"
    if (cd "$untouched" && make --no-print-directory template-upgrade >"$scratch/dirty.log" 2>&1); then
        echo "template: make template-upgrade ran on a dirty tree" >&2; exit 1
    fi
    grep -q "commit or stash" "$scratch/dirty.log"
    rm "$untouched/uncommitted"
    (cd "$untouched" && make --no-print-directory template-upgrade >"$scratch/untouched.log")
    generate "$b_commit" untouched "$scratch/upgrade-fresh"
    diff -r -x .git "$scratch/upgrade-fresh/untouched" "$untouched"
    echo "template-check failed while $b_version was out; a dirty tree was refused; an untouched service upgraded to exactly a fresh render of the new version"

    # An edited one: the template and the user change the same line of
    # docs/serving.md (a conflict) and different lines of docs/versioning.md
    # (a clean merge); the user deletes docs/architecture.md, which the
    # template changed, adds docs/decisions.md and sets WORKERS.
    generate "$a_commit" upgraded "$scratch/upgrade-edited"
    local edited=$scratch/upgrade-edited/upgraded
    git -C "$edited" init -q -b main && commit_all "$edited" generated
    (
        cd "$edited"
        sed -i '3s/.*/This line is what we wrote./' docs/serving.md
        echo "Our own note at the end." >>docs/versioning.md
        rm docs/architecture.md
        echo "# Our decisions" >docs/decisions.md
        sed -i 's/^WORKERS=.*/WORKERS=3/' .env
    )
    commit_all "$edited" "our edits"
    (cd "$edited" && make --no-print-directory template-upgrade TO=main >"$scratch/edited.log") || { cat "$scratch/edited.log" >&2; exit 1; }
    local log
    log=$(cat "$scratch/edited.log")
    grep -q "taken .*, merged 1, conflicted 1, added 1, deleted 1" <<<"$log" || { echo "$log" >&2; exit 1; }
    grep -q "running the upgrade notes of $b_version" <<<"$log"
    [ "$(git -C "$edited" status --porcelain -- docs/serving.md)" = "UU docs/serving.md" ]
    [ "$(grep -c '^<<<<<<< ours' "$edited/docs/serving.md")" = 1 ]
    grep -qx "This line is what we wrote." "$edited/docs/serving.md"
    cmp -s <(sed -n 3p "$tpl/docs/versioning.md") <(sed -n 3p "$edited/docs/versioning.md")
    grep -qx "Our own note at the end." "$edited/docs/versioning.md"
    [ ! -e "$edited/docs/architecture.md" ] && [ ! -e "$edited/docs/old-notes.md" ]
    [ -f "$edited/docs/decisions.md" ] && [ -x "$edited/scripts/measure-load-spread.sh" ]
    grep -qx "WORKERS=3" "$edited/.env"
    grep -qx "template_version = \"$b_version\"" "$edited/template-answers.toml"
    grep -qx "template_commit = \"$b_commit\"" "$edited/template-answers.toml"
    echo "merged: one conflict where both changed a line, the rest as each side left it"

    # Resolved as the template has it, the service passes its own tests, and
    # it is on the newest version.
    git -C "$edited" checkout -q --theirs docs/serving.md
    commit_all "$edited" "template $b_version"
    # This make test stands for orders's too (check_renders): it must stay
    # a sign-in service of this tree's version.
    grep -qx "auth = true" "$edited/template-answers.toml"
    (cd "$edited" && make test)
    lock_kept "$edited" upgraded
    (cd "$edited" && make --no-print-directory template-check)
    echo "the upgraded service passes make test and make template-check; its Cargo.lock kept every pin"
}

for step in "${steps[@]}"; do "check_$step"; done
echo
echo "template: checks passed (${steps[*]})"
