# `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

.PHONY: help run test fmt lint

help: ## List the targets
	@grep -hE '^[a-z][a-zA-Z_-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

run: ## Run the service on 127.0.0.1:8000 with PostgreSQL and Redis under .local/
	scripts/run.sh

test: ## Lints and the whole test suite against throwaway PostgreSQL and Redis
	scripts/test.sh

fmt: ## Format the code
	cargo fmt --all

lint: ## Formatting check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Present only in the template's own repository: make new, make sync, and the
# template checks that make test runs there.
-include template/tooling/template.mk
