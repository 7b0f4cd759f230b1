#!/usr/bin/env bash
# A Docker engine for the stack tests (scripts/stacks-test.sh), and stand-ins
# for the images it cannot pull.
#
#   docker-engine.sh start       use the engine DOCKER_HOST (or the default
#                                socket) reaches; when none answers, install
#                                Debian's docker.io (as root, like services.sh
#                                does PostgreSQL) and start a private one
#                                under DOCKER_STATE_DIR. Prints the lines to
#                                eval: DOCKER_HOST=...
#   docker-engine.sh stop        stop the private engine (if this script
#                                started it), leaving nothing running; its
#                                images and build cache stay for the next run
#   docker-engine.sh stand-ins   print IMAGE=tag lines for the compose files'
#                                and the Dockerfile's base images: the
#                                official ones when the engine can pull them,
#                                else local stand-ins, built once (below)
#
# The engine's data lives outside the clone (DOCKER_STATE_DIR, default
# /var/tmp/<package>-docker) so that layers and the build cache outlive a
# fresh clone: CI on the same machine builds warm.
#
# Stand-ins (scripts/docker/stand-ins/, each README says the contract it
# emulates) are test fixtures, labelled as such, built from a Debian base
# that debootstrap makes from the host's own package mirror. A pass with
# them proves the project against those contracts, not against the
# upstream images; the GitHub workflow runs the same tests on the real ones.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "docker-engine.sh: $*" >&2; exit 1; }
say() { echo "docker-engine.sh: $*" >&2; }

package=$(sed -nE 's/^name = "(.*)"$/\1/p' api/Cargo.toml | head -n 1)
state=${DOCKER_STATE_DIR:-/var/tmp/$package-docker}
# A unix socket path must stay under 108 bytes: keep it short.
private_socket=$state/docker.sock
pidfile=$state/dockerd.pid

engine_answers() { timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
    if [ -n "${DOCKER_HOST:-}" ] && engine_answers; then
        echo "DOCKER_HOST=$DOCKER_HOST"
        return
    fi
    if [ -S "$private_socket" ] && DOCKER_HOST=unix://$private_socket engine_answers; then
        echo "DOCKER_HOST=unix://$private_socket"
        return
    fi
    if [ -z "${DOCKER_HOST:-}" ] && [ "${DOCKER_PRIVATE:-}" != 1 ] && [ -S /var/run/docker.sock ] && engine_answers; then
        echo "DOCKER_HOST=unix:///var/run/docker.sock"
        return
    fi
    [ "$(id -u)" = 0 ] || die "no Docker engine answers, and starting a private one needs root"
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        say "installing docker.io and debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io debootstrap iptables >/dev/null
    fi
    mkdir -p "$state"
    # A previous run that died leaves its pid file and socket behind.
    stop_private quietly
    say "starting a private engine (data in $state)"
    # Debian's dockerd, whatever client comes first on PATH.
    nohup /usr/sbin/dockerd --data-root "$state/data" --exec-root "$state/exec" \
        --pidfile "$pidfile" -H "unix://$private_socket" \
        --log-level warn >"$state/dockerd.log" 2>&1 &
    local waited=0
    until DOCKER_HOST=unix://$private_socket engine_answers; do
        sleep 1
        waited=$((waited + 1))
        if [ "$waited" -ge 60 ]; then
            tail -n 20 "$state/dockerd.log" >&2
            die "the private engine did not answer within 60 s"
        fi
    done
    echo "DOCKER_HOST=unix://$private_socket"
}

stop_private() {
    [ -f "$pidfile" ] || return 0
    local pid
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        [ "${1:-}" = quietly ] || say "stopping the private engine"
        # A Swarm left initialised would come back with the engine.
        DOCKER_HOST=unix://$private_socket timeout 30 docker swarm leave --force >/dev/null 2>&1 || true
        kill "$pid"
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    pkill -f "containerd --config $state/exec" 2>/dev/null || true
    rm -f "$pidfile" "$private_socket"
    # What dockerd leaves in the host's network: its bridges and chains.
    local link chain
    for link in docker0 docker_gwbridge; do
        ip link delete "$link" 2>/dev/null || true
    done
    for chain in DOCKER DOCKER-USER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-INGRESS; do
        iptables -t filter -F "$chain" 2>/dev/null || true
        iptables -t nat -F "$chain" 2>/dev/null || true
    done
    iptables -t filter -D FORWARD -j DOCKER-USER 2>/dev/null || true
    iptables -t filter -D FORWARD -j DOCKER-ISOLATION-STAGE-1 2>/dev/null || true
    iptables -t filter -D FORWARD -j DOCKER-INGRESS 2>/dev/null || true
    iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j DOCKER 2>/dev/null || true
    iptables -t nat -D OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER 2>/dev/null || true
}

# ---------------------------------------------------------------- stand-ins

standins=scripts/docker/stand-ins
label=org.opencontainers.image.description

# Whether the engine pulls from a registry: one small pull, bounded.
registry_reachable() {
    timeout 30 docker pull -q hello-world >/dev/null 2>&1
}

# The tag a stand-in gets: its own name, never the upstream image's, so that
# nobody mistakes one for the other. The fingerprint of its inputs is part
# of it, so an edit to a stand-in rebuilds it.
standin_tag() {
    local name=$1 sum
    sum=$(cat "$standins/$name"/* | sha256sum | cut -c1-12)
    echo "stand-in/$name:$sum"
}

has_image() { docker image inspect "$1" >/dev/null 2>&1; }

# debootstrap's minimal Debian from the host's own mirror, with the host's
# extra CA certificates (a proxy in the way of HTTPS re-signs with one).
build_base() {
    local tag=$1 mirror root
    has_image "$tag" && return
    mirror=$(sed -nE 's/^URIs: *(\S+\/debian)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
    mirror=${mirror:-http://deb.debian.org/debian}
    root=$(mktemp -d -t stand-in-base-XXXXXX)
    say "debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$state/debootstrap.log" 2>&1 \
        || { tail -n 20 "$state/debootstrap.log" >&2; rm -rf "$root"; die "debootstrap failed"; }
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL $label=\"test stand-in for debian:bookworm-slim, debootstrap minbase\"" \
        --change 'CMD ["bash"]' - "$tag" >/dev/null
    rm -rf "$root"
}

# DOCKER_BUILDKIT for COPY --chmod; Debian's 20.10 client has BuildKit built
# in, where newer clients without the buildx plugin fall back to the legacy
# builder.
build() { DOCKER_BUILDKIT=1 /usr/bin/docker build --quiet "$@" >/dev/null; }

build_standin() {
    local name=$1 base=$2 tag
    tag=$(standin_tag "$name")
    if ! has_image "$tag"; then
        say "building the $name stand-in"
        build --build-arg "BASE=$base" --tag "$tag" "$standins/$name"
    fi
    echo "$tag"
}

# The host's own toolchain, so that the builder image has exactly the Rust
# the rest of the project builds with, without a download.
build_rust() {
    local base=$1 sysroot version tag
    sysroot=$(rustc --print sysroot)
    version=$(rustc --version | cut -d' ' -f2)
    tag="stand-in/rust:$version-$(cat "$standins/rust"/* | sha256sum | cut -c1-12)"
    if ! has_image "$tag"; then
        say "building the rust stand-in with the host's Rust $version"
        build --build-arg "BASE=$base" --build-arg "RUST_VERSION=$version" \
            --file "$standins/rust/Dockerfile" --tag "$tag" "$sysroot"
    fi
    echo "$tag"
}

stand_ins() {
    if [ "${STAND_INS:-auto}" = never ] || { [ "${STAND_INS:-auto}" = auto ] && registry_reachable; }; then
        say "the engine pulls images: the official images, no stand-ins"
        return
    fi
    mkdir -p "$state"
    # Bump the suffix when build_base changes.
    local base=stand-in/debian:bookworm-1
    build_base "$base"
    echo "DEBIAN_IMAGE=$base"
    echo "RUST_IMAGE=$(build_rust "$base")"
    echo "POSTGRES_IMAGE=$(build_standin postgres "$base")"
    echo "REDIS_IMAGE=$(build_standin redis "$base")"
    echo "NGINX_IMAGE=$(build_standin nginx "$base")"
    echo "PROMETHEUS_IMAGE=$(build_standin prometheus "$base")"
}

case "${1:-}" in
    start) start ;;
    stop) stop_private ;;
    stand-ins) stand_ins ;;
    *) die "usage: docker-engine.sh start|stop|stand-ins" ;;
esac
