#!/usr/bin/env bash
# A Docker engine for the stack tests (scripts/stacks-test.sh), and stand-ins
# for the images it cannot pull.
#
#   docker-engine.sh start       use the engine DOCKER_HOST (or the default
#                                socket) reaches; when none answers, install
#                                Debian's docker.io (as root, like services.sh
#                                does PostgreSQL) and start a private one
#                                under DOCKER_STATE_DIR. Prints DOCKER_HOST=...,
#                                and DOCKER_PRIVATE=1 for a private engine;
#                                exits 3 when there is none and not root
#   docker-engine.sh stop        stop the private engine (if this script
#                                started it), leaving nothing running, and
#                                clear its bridges and chains' rules; its
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

package=$(scripts/package-name.sh)
state=${DOCKER_STATE_DIR:-/var/tmp/$package-docker}
# A unix socket path must stay under 108 bytes: keep it short.
private_socket=$state/docker.sock
pidfile=$state/dockerd.pid

engine_answers() { timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Whether the pid is this script's dockerd, not whatever took its number
# since (the pid file outlives a reboot).
ours() { kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q "dockerd .*--data-root $state/data"; }

start() {
    if [ -n "${DOCKER_HOST:-}" ] && engine_answers; then
        echo "DOCKER_HOST=$DOCKER_HOST"
        # Named by its socket, the private engine is still this script's.
        [ "$DOCKER_HOST" != "unix://$private_socket" ] || echo "DOCKER_PRIVATE=1"
        return
    fi
    if [ -S "$private_socket" ] && DOCKER_HOST=unix://$private_socket engine_answers; then
        echo "DOCKER_HOST=unix://$private_socket"
        echo "DOCKER_PRIVATE=1"
        return
    fi
    if [ -z "${DOCKER_HOST:-}" ] && [ "${DOCKER_PRIVATE:-}" != 1 ] && [ -S /var/run/docker.sock ] && engine_answers; then
        echo "DOCKER_HOST=unix:///var/run/docker.sock"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        say "no Docker engine answers, and starting a private one needs root"
        exit 3
    fi
    # Another engine that runs but did not answer shares docker0 and the
    # iptables chains with any second one: never start beside it.
    if pgrep -x dockerd >/dev/null && ! { [ -f "$pidfile" ] && ours "$(cat "$pidfile")"; }; then
        die "a dockerd runs but does not answer; not starting a second one beside it"
    fi
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
    nohup "$(command -v dockerd)" --data-root "$state/data" --exec-root "$state/exec" \
        --pidfile "$pidfile" -H "unix://$private_socket" \
        --log-level warn >"$state/dockerd.log" 2>&1 </dev/null &
    local deadline=$((SECONDS + 60))
    until DOCKER_HOST=unix://$private_socket engine_answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$state/dockerd.log" >&2
            stop_private
            die "the private engine did not answer within 60 s"
        fi
        sleep 1
    done
    echo "DOCKER_HOST=unix://$private_socket"
    echo "DOCKER_PRIVATE=1"
}

stop_private() {
    local pid=
    [ -f "$pidfile" ] && pid=$(cat "$pidfile")
    if [ -n "$pid" ] && ours "$pid"; then
        [ "${1:-}" = quietly ] || say "stopping the private engine"
        # A Swarm left initialised would come back with the engine.
        DOCKER_HOST=unix://$private_socket timeout 30 docker swarm leave --force >/dev/null 2>&1 || true
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    pkill -f "containerd --config $state/exec" 2>/dev/null || true
    rm -f "$pidfile" "$private_socket"
    # What dockerd leaves in the host's network, its bridges and its
    # chains' rules, once no engine at all runs (they would be another's
    # otherwise). DOCKER-USER, where admins put their own rules, stays.
    pgrep -x dockerd >/dev/null && return 0
    local link chain
    for link in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{ print $2 }' | grep -E '^(docker0|docker_gwbridge|br-[0-9a-f]{12})$'); do
        ip link delete "$link" 2>/dev/null || true
    done
    for chain in DOCKER DOCKER-ISOLATION-STAGE-1 DOCKER-ISOLATION-STAGE-2 DOCKER-INGRESS; do
        iptables -t filter -F "$chain" 2>/dev/null || true
        iptables -t nat -F "$chain" 2>/dev/null || true
    done
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
# of it, so an edit to a stand-in rebuilds it; PREFIX (the Rust version)
# goes before it.
standin_tag() {
    local name=$1 prefix=${2:-} sum
    sum=$(cat "$standins/$name"/* | sha256sum | cut -c1-12)
    echo "stand-in/$name:${prefix:+$prefix-}$sum"
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
    tag=$(standin_tag rust "$version")
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
    local base=stand-in/debian:bookworm-1 rust postgres redis nginx prometheus
    build_base "$base"
    # Each tag on its own line first: a failed build must stop this script,
    # which `echo "X=$(...)"` would not.
    rust=$(build_rust "$base")
    postgres=$(build_standin postgres "$base")
    redis=$(build_standin redis "$base")
    nginx=$(build_standin nginx "$base")
    prometheus=$(build_standin prometheus "$base")
    # Stand-ins an edit has replaced would pile up run after run.
    docker images --format '{{.Repository}}:{{.Tag}}' | grep '^stand-in/' \
        | grep -vxF -e "$base" -e "$rust" -e "$postgres" -e "$redis" -e "$nginx" -e "$prometheus" \
        | xargs -r docker rmi >/dev/null 2>&1 || true
    printf '%s\n' "DEBIAN_IMAGE=$base" "RUST_IMAGE=$rust" "POSTGRES_IMAGE=$postgres" \
        "REDIS_IMAGE=$redis" "NGINX_IMAGE=$nginx" "PROMETHEUS_IMAGE=$prometheus"
}

case "${1:-}" in
    start) start ;;
    stop) stop_private ;;
    stand-ins) stand_ins ;;
    *) die "usage: docker-engine.sh start|stop|stand-ins" ;;
esac
