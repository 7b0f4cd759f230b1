#!/usr/bin/env bash
# The fuzz targets (fuzz/, `make fuzz`): each runs FUZZ_SECONDS (default 5)
# from its seed corpus, fuzz/corpus/TARGET, and the run fails if any target
# finds a crash (the input is then in fuzz/artifacts/TARGET/: add it to the
# seed corpus with the fix). cargo-fuzz needs the nightly toolchain, used
# here and nowhere else; the service builds on stable. `scripts/fuzz.sh
# TARGET...` runs only those; FUZZ=check (below) compiles them and runs none.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-5}
# FUZZ_SECONDS=0 runs each target over its seed corpus only, no new
# inputs: it checks that the targets build and the corpus passes, the same
# every time.
runs=()
[ "$seconds" != 0 ] || runs=(-runs=0)
# A fixed seed, so that make test explores the same way each run (as far as
# the time allows); set FUZZ_SEED=0 for a random one when hunting.
seed=${FUZZ_SEED:-20261129}
cargo_fuzz_version=0.13.1
# Built beside the service's own target directory and kept, so that a run
# after the first rebuilds only what changed.
service_target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
target_dir=$service_target_dir/fuzz

# The fuzz crate is its own workspace; it starts from the service's pins.
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

# FUZZ=check only compiles the targets (a type check on the project's own
# toolchain, stable, in the service's target directory, where clippy has
# checked most of their dependencies already) and runs none.
# template/check.sh's renders run so: a render differs from this repository
# by its name and the modules it leaves out, which a compile catches; its
# seed corpus is replayed by its own cargo test (the `fuzzing` modules'
# tests), and the targets' code is the template's, built with sanitizers and
# fuzzed by this repository's make test. Under cargo-fuzz a render would
# build its service again in release with instrumentation, minutes each,
# since its package is named anew.
if [ "${FUZZ:-}" = check ]; then
    cargo check --manifest-path fuzz/Cargo.toml --bins --target-dir "$service_target_dir"
    echo "fuzz: the targets compile (FUZZ=check runs none)"
    exit 0
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 1
fi
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$cargo_fuzz_version" ]; then
    # The tool builds on stable (its locked dependencies predate today's
    # nightly); only the targets need nightly.
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -nE 's/^name = "(.*)"$/\1/p' fuzz/Cargo.toml | tail -n +2)
fi

cargo +nightly fuzz build --target-dir "$target_dir"
scratch=$(mktemp -d -t fuzz-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    # A copy, so that what the run learns stays out of the repository.
    mkdir -p "$scratch/$target" fuzz/artifacts/"$target"
    cp -r fuzz/corpus/"$target"/. "$scratch/$target/"
    # The checker's best seeds are the service's own documents, as they are.
    [ "$target" != openapi_compat ] || cp openapi/*.json "$scratch/$target/"
    echo "fuzz: $target for ${seconds}s"
    cargo +nightly fuzz run --target-dir "$target_dir" "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" "${runs[@]}" -seed="$seed" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$scratch/$target.log" 2>&1 || {
        tail -n 40 "$scratch/$target.log" >&2
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
    }
    grep -E '^stat::number_of_executed_units' "$scratch/$target.log" | sed "s/^/  /"
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each, nothing found"
