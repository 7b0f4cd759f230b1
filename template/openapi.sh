#!/usr/bin/env bash
# openapi.sh: writes openapi/*.json.liquid, the twins of the OpenAPI
# documents, which carry the project's name and differ without sign-in.
# Renders the work tree with and without sign-in under a placeholder name,
# has each render's binary write its documents, and joins the two versions of
# each document into one twin. `make openapi` runs it after writing the
# root's own documents; `make check-template` then proves the twins right.
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
cd "$repo_root"

scratch=$(mktemp -d -t template-openapi-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo_root/target}
# A name found nowhere else in the documents, replaced by the project's.
name=openapiplaceholder

stage "$scratch/source"
for auth in true false; do
    render "$name" "$auth" "$scratch/$auth" "$scratch/source"
    (cd "$scratch/$auth/$name" && cargo run --quiet --bin "$name" -- openapi write --dir "$scratch/$auth/documents" >/dev/null)
done

with=$(cd "$scratch/true/documents" && ls)
without=$(cd "$scratch/false/documents" && ls)
if [ "$with" != "$without" ]; then
    echo "openapi.sh: the renders have different documents ($with / $without)" >&2
    exit 1
fi
if grep -lE '\{\{|\{%' "$scratch"/*/documents/*.json; then
    echo "openapi.sh: a document contains Liquid syntax; it would be mangled on rendering" >&2
    exit 1
fi

rm -f openapi/*.json.liquid
for file in $with; do
    true_doc=$scratch/true/documents/$file
    false_doc=$scratch/false/documents/$file
    {
        if cmp -s "$true_doc" "$false_doc"; then
            sed "s/$name/{{project-name}}/g" "$true_doc"
        else
            echo '{% if auth -%}'
            sed "s/$name/{{project-name}}/g" "$true_doc"
            echo '{% else -%}'
            sed "s/$name/{{project-name}}/g" "$false_doc"
            echo '{% endif -%}'
        fi
    } >"openapi/$file.liquid"
    echo "wrote openapi/$file.liquid"
done
