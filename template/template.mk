# Included by the root Makefile; exists only in the template's repository
# (cargo-generate.toml leaves template/ out of every new project).
.PHONY: new check-template template-openapi

new: ## Scaffold a new service: make new NAME=orders [DEST=..] [AUTH=false]
	@test -n "$(NAME)" || { echo "usage: make new NAME=orders [DEST=..] [AUTH=true|false]"; exit 2; }
	template/render.sh "$(NAME)" "$(or $(AUTH),true)" "$(or $(DEST),..)"

check-template: ## The template's checks: twins, names, two renders built and tested, entry points
	template/check.sh $(STEPS)

# The template's checks are part of this repository's test command.
test: check-template

# The OpenAPI twins (openapi/*.json.liquid, both values of auth) are
# rewritten after the root's documents.
openapi: template-openapi
template-openapi:
	template/openapi.sh
