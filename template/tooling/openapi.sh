#!/usr/bin/env bash
# openapi.sh: rewrites template/openapi/*.json.liquid, the OpenAPI documents
# a new project starts with. Renders the template with and without sign-in
# under a placeholder name, has each render write its documents, and joins
# the two versions of each document into one Liquid file. `make openapi`
# runs it in this repository; the drift check and each render's own tests
# then prove the files right.
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
cd "$repo_root"

scratch=$(mktemp -d -t template-openapi-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo_root/target}
# A name found nowhere else in the documents, replaced by the project's.
name=openapiplaceholder

for auth in true false; do
    mkdir "$scratch/$auth"
    render "$name" "$auth" "$scratch/$auth"
    (cd "$scratch/$auth/$name" && cargo run --quiet --bin "$name" -- openapi write --dir "$scratch/$auth/documents" >/dev/null)
done

with=$(cd "$scratch/true/documents" && ls)
without=$(cd "$scratch/false/documents" && ls)
if [ "$with" != "$without" ]; then
    echo "openapi.sh: the renders have different documents ($with / $without); make the one-sided ones conditional in cargo-generate.toml" >&2
    exit 1
fi
if grep -lE '\{\{|\{%' "$scratch"/*/documents/*.json; then
    echo "openapi.sh: a document contains Liquid syntax; it would be mangled on rendering" >&2
    exit 1
fi

rm -rf template/openapi
mkdir template/openapi
for file in $with; do
    {
        echo '{% if auth -%}'
        sed "s/$name/{{project-name}}/g" "$scratch/true/documents/$file"
        echo '{% else -%}'
        sed "s/$name/{{project-name}}/g" "$scratch/false/documents/$file"
        echo '{% endif -%}'
    } >"template/openapi/$file.liquid"
    echo "wrote template/openapi/$file.liquid"
done
