#!/usr/bin/env bash
# package-name.sh: prints the service's package name, the first `name =` of
# api/Cargo.toml. The binary, the images and the bench's floor example are
# named after it, and a generated service's differs from this one's: every
# script and the Makefile read it here, so how the name is found is written
# once.
set -euo pipefail
cd "$(dirname "$0")/.."
sed -nE '/^name = "(.*)"$/{s//\1/p;q}' api/Cargo.toml
