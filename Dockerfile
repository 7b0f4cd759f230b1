# The service's images, in stages:
#   chef      Rust and cargo-chef, the base of the build stages
#   planner   the dependency recipe, which changes only with the manifests
#   builder   the dependencies (a cached layer), then the service, release
#   dev       the toolchain and watchexec: compose.yaml's edit-rebuild loop
#   proxy     nginx with nginx.conf, its upstream script and static/ inside
#   runtime   the service's image: small, non-root, with a HEALTHCHECK
#             (last, so a plain `docker build .` makes it)

# The base images are build arguments, the official images by default: a
# team that builds from a registry mirror names its own copies here
# (--build-arg, or the same variables for compose), and so do the stack
# tests where no registry is reachable (scripts/docker-engine.sh).
# No `# syntax=` line: it would make BuildKit fetch a frontend image first.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim
ARG NGINX_IMAGE=nginx:1.27-alpine

FROM ${RUST_IMAGE} AS chef
RUN cargo install --locked cargo-chef --version ^0.1
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is rebuilt when Cargo.toml or Cargo.lock
# change, not on every edit of the code.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin api

FROM chef AS dev
RUN cargo install --locked watchexec-cli --version ^2
# compose.yaml mounts the source on /src and keeps target/ in a volume.
ENV CARGO_TARGET_DIR=/target
CMD ["watchexec", "--restart", "--watch", "api", "--watch", "Cargo.toml", \
     "--", "cargo", "run", "--bin", "api", "--", "serve"]

FROM ${NGINX_IMAGE} AS proxy
# The official image fills /etc/nginx/templates in with envsubst at start;
# NGINX_ENVSUBST_OUTPUT_DIR makes nginx.conf the main configuration.
ENV NGINX_ENVSUBST_OUTPUT_DIR=/etc/nginx NGINX_ENVSUBST_FILTER=NGINX_ NGINX_STATIC_ROOT=/srv/static
COPY nginx.conf /etc/nginx/templates/nginx.conf.template
COPY --chmod=755 nginx/15-api-upstreams.envsh nginx/30-follow-api-host.sh /docker-entrypoint.d/
COPY static /srv/static

FROM ${DEBIAN_IMAGE} AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
WORKDIR /app
COPY --from=builder /src/target/release/api /usr/local/bin/api
COPY static ./static
USER 10001:10001
ENV BIND=0.0.0.0:8000 STATIC_DIR=/app/static LOG_FORMAT=json
EXPOSE 8000
# `api healthcheck` asks for liveness (/healthz on BIND's port): the process
# serves. Readiness (/readyz, PostgreSQL and Redis) decides traffic, not
# restarts: a Redis blip must not restart every replica. The image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["api", "healthcheck"]
# The master is PID 1: it reaps children and handles every stop signal.
ENTRYPOINT ["api"]
CMD ["serve"]
