#!/usr/bin/env bash
# template-upgrade.sh upgrade [TO] | check: `make template-upgrade [TO=...]`
# and `make template-check`.
#
# This service was generated from a template whose source, commit and
# answers template-answers.toml records. An upgrade renders the template
# twice outside the project, at the recorded commit (base) and at TO
# (theirs: a commit, tag or branch of the source; its default branch when
# not given), and merges per file, as Copier does:
#   - changed only by the template: taken;
#   - changed only here: kept;
#   - changed on both sides: `git merge-file`; an overlap is left with
#     conflict markers and as a conflict in git's index (`git status` lists
#     it; resolve, `git add`, commit);
#   - added by the template: added; added here: kept;
#   - deleted by the template and untouched here: deleted; changed here:
#     kept; deleted here: stays deleted;
#   - binary files changed on both sides: ours kept, theirs written beside
#     it as FILE.template-new.
# Then it runs the template's upgrade notes for the versions it crossed
# (template/upgrades/VERSION.sh in the template's repository), records the
# new version and commit, and prints what it did. The commit is yours.
#
# `check` exits non-zero when the template has a newer version than the one
# recorded, or when the recorded commit no longer renders.
set -euo pipefail
# An upgrade replaces this very file when the template changed it, while it
# runs. bash reads a script as it goes, so it would read the rest from the
# new file at the old one's offset, mid-line. The braces make it read all
# of the script before running any of it, and the `exit` inside them keeps
# it from reading on after.
{
cd "$(dirname "$0")/.."

answers=template-answers.toml
# The cargo-generate this template is rendered with (template/lib.sh reads
# it from here too).
CARGO_GENERATE_VERSION=0.23.7
die() { echo "template-upgrade: $*" >&2; exit 2; }
# A value of template-answers.toml (top-level or in [values]).
recorded() { sed -nE "s/^$1 = \"?([^\"]*)\"?\$/\\1/p" "$answers" | head -n 1; }

[ -f "$answers" ] || die "no $answers here: run it at the root of a generated service"
source=$(recorded template_source)
base_commit=$(recorded template_commit)
version=$(recorded template_version)
[ -n "$source" ] && [ -n "$base_commit" ] \
    || die "$answers records no template_source and template_commit, so there is no base to merge from (services made with \`make new\` or the README's cargo generate line record both)"
name=$(scripts/package-name.sh)

if ! cargo generate --version 2>/dev/null | grep -q "$CARGO_GENERATE_VERSION"; then
    echo "installing cargo-generate $CARGO_GENERATE_VERSION" >&2
    cargo install cargo-generate --version "$CARGO_GENERATE_VERSION" --locked >&2
fi

scratch=$(mktemp -d -t template-upgrade-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
# Bare: every branch of the source is then a branch here, for TO.
git clone --quiet --bare "$source" "$scratch/repo" 2>"$scratch/clone.log" \
    || { cat "$scratch/clone.log" >&2; die "cannot clone the template from $source"; }
git -C "$scratch/repo" cat-file -e "$base_commit^{commit}" 2>/dev/null \
    || die "the recorded commit $base_commit is not in $source any more"

# render COMMIT DIR: the template at COMMIT, with this service's answers and
# COMMIT recorded, rendered into DIR/$name.
render() {
    local commit=$1 dir=$2
    mkdir -p "$dir/source" "$dir/out"
    git -C "$scratch/repo" archive "$commit" | tar -x -C "$dir/source"
    sed -E "s/^template_commit = .*/template_commit = \"$commit\"/" "$answers" >"$dir/answers.toml"
    env -u RUST_BACKTRACE cargo generate --path "$dir/source" --name "$name" \
        --values-file "$dir/answers.toml" --destination "$dir/out" --vcs none --silent \
        >"$dir/render.log" 2>&1 || { cat "$dir/render.log" >&2; die "the template at $commit does not render"; }
}

# The version a commit of the template declares.
version_at() {
    git -C "$scratch/repo" show "$1:template-answers.toml.liquid" 2>/dev/null \
        | sed -nE 's/^template_version = "(.*)"$/\1/p' | head -n 1
}

# newer A B: version A comes after version B.
newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -n 1)" = "$1" ]; }

command=${1:-upgrade}
case "$command" in
check)
    render "$base_commit" "$scratch/base"
    latest=$(git -C "$scratch/repo" rev-parse HEAD)
    newest=$(version_at "$latest")
    if [ -n "$newest" ] && newer "$newest" "$version"; then
        echo "template-check: template $newest is out (this service is on $version): make template-upgrade" >&2
        exit 1
    fi
    echo "template-check: on the template's newest version, $version; the recorded commit renders"
    exit 0
    ;;
upgrade) ;;
*) die "usage: template-upgrade.sh upgrade [TO] | check" ;;
esac

[ -z "$(git status --porcelain)" ] || die "the work tree has changes: commit or stash them first"
to=${2:-HEAD}
theirs_commit=$(git -C "$scratch/repo" rev-parse --verify --quiet "$to^{commit}") \
    || die "no commit, tag or branch '$to' in $source"
theirs_version=$(version_at "$theirs_commit")
render "$base_commit" "$scratch/base"
render "$theirs_commit" "$scratch/theirs"
base=$scratch/base/out/$name
theirs=$scratch/theirs/out/$name

binary() { [ "$(head -c 8000 "$1" | tr -d '\000' | wc -c)" != "$(head -c 8000 "$1" | wc -c)" ]; }
mode_of() { if [ -x "$1" ]; then echo 100755; else echo 100644; fi; }
# The same content and the same executable bit.
same() { cmp -s "$1" "$2" && [ "$(mode_of "$1")" = "$(mode_of "$2")" ]; }
take() { mkdir -p "$(dirname "$2")"; cp -p "$1" "$2"; }

taken=() merged=() conflicted=() added=() deleted=() kept=() beside=()
# conflict_in_index PATH BASE_COPY OURS_COPY: records a conflict in git's
# index (stages 1, 2 and 3 for base, ours and theirs), as `git merge` would.
conflict_in_index() {
    local path=$1 base_copy=$2 ours_copy=$3 stages
    stages=$(printf '0 %040d\t%s\n' 0 "$path")
    stages+=$'\n'$(printf '%s %s 1\t%s' "$(mode_of "$base_copy")" "$(git hash-object -w "$base_copy")" "$path")
    stages+=$'\n'$(printf '%s %s 2\t%s' "$(mode_of "$ours_copy")" "$(git hash-object -w "$ours_copy")" "$path")
    stages+=$'\n'$(printf '%s %s 3\t%s' "$(mode_of "$theirs/$path")" "$(git hash-object -w "$theirs/$path")" "$path")
    git update-index --index-info <<<"$stages"
}

paths=$({ (cd "$base" && find . -type f); (cd "$theirs" && find . -type f); git -c core.quotepath=off ls-files | sed 's|^|./|'; } \
    | sed 's|^\./||' | sort -u)
while IFS= read -r path; do
    [ "$path" = "$answers" ] && continue
    in_base=false in_theirs=false in_ours=false
    [ -f "$base/$path" ] && in_base=true
    [ -f "$theirs/$path" ] && in_theirs=true
    git --literal-pathspecs ls-files --error-unmatch -- "$path" >/dev/null 2>&1 && in_ours=true
    if $in_base && $in_theirs; then
        same "$base/$path" "$theirs/$path" && continue      # the template left it alone
        if ! $in_ours; then kept+=("$path (deleted here)"); continue; fi
        if same "$base/$path" "$path"; then take "$theirs/$path" "$path"; taken+=("$path"); continue; fi
        same "$theirs/$path" "$path" && continue
        if binary "$path" || binary "$theirs/$path"; then
            take "$theirs/$path" "$path.template-new"; beside+=("$path.template-new"); continue
        fi
        cp -p "$path" "$scratch/ours"
        # The executable bit, as the contents: the template's if only it changed.
        if [ "$(mode_of "$base/$path")" != "$(mode_of "$theirs/$path")" ] \
            && [ "$(mode_of "$path")" = "$(mode_of "$base/$path")" ]; then
            if [ -x "$theirs/$path" ]; then chmod +x "$path"; else chmod -x "$path"; fi
        fi
        if git merge-file -L ours -L base -L template "$path" "$base/$path" "$theirs/$path"; then
            merged+=("$path")
        else
            conflict_in_index "$path" "$base/$path" "$scratch/ours"
            conflicted+=("$path")
        fi
    elif $in_theirs; then                                     # new in the template
        if ! $in_ours; then take "$theirs/$path" "$path"; added+=("$path"); continue; fi
        same "$theirs/$path" "$path" && continue
        if binary "$path" || binary "$theirs/$path"; then
            take "$theirs/$path" "$path.template-new"; beside+=("$path.template-new"); continue
        fi
        cp -p "$path" "$scratch/ours"
        : >"$scratch/empty"
        if git merge-file -L ours -L base -L template "$path" "$scratch/empty" "$theirs/$path"; then
            merged+=("$path")
        else
            conflict_in_index "$path" "$scratch/empty" "$scratch/ours"
            conflicted+=("$path")
        fi
    elif $in_base && $in_ours; then                           # gone from the template
        if same "$base/$path" "$path"; then rm -f "$path"; deleted+=("$path"); else kept+=("$path (changed here)"); fi
    fi
done <<<"$paths"

# Upgrade notes for every version crossed, oldest first, on the merged tree.
failed_notes=()
if [ -n "$theirs_version" ] && [ "$theirs_version" != "$version" ]; then
    mkdir -p "$scratch/notes"
    git -C "$scratch/repo" archive "$theirs_commit" template/upgrades 2>/dev/null | tar -x -C "$scratch/notes" 2>/dev/null || true
    for note in $(find "$scratch/notes" -name '*.sh' -printf '%f\n' 2>/dev/null | sed 's/\.sh$//' | sort -V); do
        if newer "$note" "$version" && ! newer "$note" "$theirs_version"; then
            echo "running the upgrade notes of $note"
            bash "$scratch/notes/template/upgrades/$note.sh" || failed_notes+=("$note")
        fi
    done
fi

# The record, last: the new version and commit, with this service's answers.
cp "$theirs/$answers" "$answers"

list() { local label=$1; shift; [ $# -eq 0 ] || printf '  %-11s %s\n' "$label" "$@"; }
echo "template-upgrade: ${version:-?} ($base_commit) -> ${theirs_version:-?} ($theirs_commit)"
list taken "${taken[@]}"
list merged "${merged[@]}"
list conflicted "${conflicted[@]}"
list added "${added[@]}"
list deleted "${deleted[@]}"
list kept "${kept[@]}"
list beside "${beside[@]}"
echo "taken ${#taken[@]}, merged ${#merged[@]}, conflicted ${#conflicted[@]}, added ${#added[@]}, deleted ${#deleted[@]}"
if [ ${#failed_notes[@]} -gt 0 ]; then
    echo "The upgrade notes of ${failed_notes[*]} failed: finish what they do by hand (see template/upgrades/ in the template)." >&2
    exit 1
fi
if [ ${#conflicted[@]} -gt 0 ]; then
    echo "Resolve the conflicts (git status lists them), git add them, then commit."
else
    echo "Review with git diff, run make test, then commit."
fi
exit
}
