# Included by the root Makefile; exists only in the template's repository.
.PHONY: new sync check-template

new: ## Scaffold a new service: make new NAME=orders [DEST=..] [AUTH=false]
	@test -n "$(NAME)" || { echo "usage: make new NAME=orders [DEST=..] [AUTH=true|false]"; exit 2; }
	template/tooling/render.sh "$(NAME)" "$(or $(AUTH),true)" "$(or $(DEST),..)"

sync: ## Re-render the repository root from template/ after editing the template
	template/tooling/sync.sh

check-template: ## Drift check, name checks, and renders built and tested
	template/tooling/check.sh

# The template's checks are part of this repository's test command.
test: check-template

# The template's copies of the OpenAPI documents, for both values of auth,
# are rewritten with the root's.
openapi: template-openapi
.PHONY: template-openapi
template-openapi:
	template/tooling/openapi.sh
