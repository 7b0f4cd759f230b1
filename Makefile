# `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Docker Compose v2, as the docker plugin or the standalone binary.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# The compose projects and the Swarm stack, by name: the stack tests give
# theirs names of their own, so that they never touch yours. The dev
# project's is compose.yaml's `name:` unless DEV_PROJECT is set.
PROD_PROJECT ?= $(PACKAGE)-prod
SWARM_STACK ?= $(PACKAGE)
DEV = $(COMPOSE) $(if $(DEV_PROJECT),-p $(DEV_PROJECT)) -f compose.yaml
# compose.prod.yaml is also a Swarm stack file, which may not name its
# project, have profiles or narrow an address range: the name is here, the
# rest in compose.prod.single-host.yaml, which make prod adds.
# The prod settings: .env.prod, or the file PROD_ENV_FILE names, for
# compose's ${...} and the service's env_file alike.
PROD_ENV := $(or $(PROD_ENV_FILE),.env.prod)
PROD = PROD_ENV_FILE=$(PROD_ENV) $(COMPOSE) -p $(PROD_PROJECT) -f compose.prod.yaml -f compose.prod.single-host.yaml --env-file $(PROD_ENV)
# Which stack `make down` and `make logs` act on: dev or prod.
STACK ?= dev
# The service's binary is named after its package.
PACKAGE := $(shell scripts/package-name.sh)

.PHONY: help dev prod swarm swarm-down down logs cli local local-down run test fuzz bench fmt lint openapi api-compat version migration template-upgrade template-check

help: ## List the targets
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

dev: ## Docker: the dev stack (compose.yaml, .env), rebuilt on every edit, nginx on :8080
	$(DEV) up --build

prod: ## Docker: the prod stack (compose.prod.yaml, .env.prod) in the background
	@test -f $(PROD_ENV) || { echo "$(PROD_ENV) is missing"; exit 2; }
	$(PROD) up --build --detach --wait

swarm: ## Docker Swarm: deploy compose.prod.yaml as a stack, settings from .env.prod (docs/docker.md)
	PROD_ENV_FILE=$(PROD_ENV) SWARM_STACK=$(SWARM_STACK) scripts/swarm.sh

swarm-down: ## Docker Swarm: remove the stack; its volumes stay on the nodes
	docker stack rm $(SWARM_STACK)

down: ## Docker: stop a stack (STACK=dev|prod); volumes and data stay
	$(if $(filter prod,$(STACK)),$(PROD),$(DEV)) down

logs: ## Docker: follow a stack's logs (STACK=dev|prod)
	$(if $(filter prod,$(STACK)),$(PROD),$(DEV)) logs --follow --tail=100

# Input piped in (a password) needs `exec -T`; a terminal gets a prompt.
EXEC_TTY := $(shell test -t 0 || echo -T)
cli: ## Docker: the service's command line in a running stack (STACK=dev|prod): make cli ARGS='config check'
	$(if $(filter prod,$(STACK)),$(PROD) exec $(EXEC_TTY) api $(PACKAGE),$(DEV) exec $(EXEC_TTY) api /target/debug/$(PACKAGE)) $(ARGS)

local: ## No Docker: the whole stack from system packages, nginx on 127.0.0.1:8080
	scripts/local.sh up

local-down: ## No Docker: stop what make local started; the data stays in .local/
	scripts/local.sh down

run: ## No Docker: just the service, in the foreground, on 127.0.0.1:8000
	scripts/local.sh run

test: ## Lints and the whole test suite against throwaway servers
	scripts/test.sh

fuzz: ## The fuzz targets, FUZZ_SECONDS each (default 5), on nightly: make fuzz [FUZZ_SECONDS=60]
	scripts/fuzz.sh

bench: ## Speed through nginx, beside nginx's own ceilings: writes docs/benchmarks.md (a few minutes)
	scripts/bench.sh

openapi: ## Rewrite openapi/ from the code: the OpenAPI documents, reviewed and committed with it
	cargo run --quiet --bin $(PACKAGE) -- openapi write

api-compat: ## Breaking API changes since a git ref: make api-compat [REF=main]
	scripts/api-compat.sh $(or $(REF),main)

version: ## Add an API version: make version NEW=v3
	scripts/new-version.sh "$(NEW)"

migration: ## Add a schema migration: make migration NAME=add_x [MODULE=auth]
	scripts/new-migration.sh "$(NAME)" "$(MODULE)"

template-upgrade: ## Merge a newer template version into this service: make template-upgrade [TO=commit|tag|branch]
	scripts/template-upgrade.sh upgrade $(TO)

template-check: ## Fail when a newer template version is out, or the recorded one no longer renders
	scripts/template-upgrade.sh check

fmt: ## Format the code
	cargo fmt --all

lint: ## Formatting check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --lib --bins -- -D warnings
	cargo clippy --workspace --all-targets --features test-hooks -- -D warnings

# Present only in the template's own repository: make new, and the template
# checks that make test runs there (CONTRIBUTING.md).
-include template/template.mk
