#!/usr/bin/env python3
"""Writes the JSON schemas that the Kubernetes tests check custom resources
against (deploy/kubernetes/schemas/), from the projects' own CRD files:

    scripts/k8s-crd-schemas.py CRD.yaml... > /dev/null

Each served version's openAPIV3Schema becomes KIND-GROUP-VERSION.json, made
strict the way `kubectl apply --validate=strict` is: an object that lists its
properties and does not preserve unknown fields refuses any other (the API
server would prune or reject them). kubernetes-validate has no schema for a
custom resource; these fill that gap. Descriptions are left out.

The versions vendored: Gateway API v1.6.1 (standard channel), CloudNativePG
v1.30.0, Prometheus Operator v0.93.0 (from each project's repository at
that tag: config/crd/standard/gateway.networking.k8s.io_httproutes.yaml,
config/crd/bases/postgresql.cnpg.io_{clusters,poolers}.yaml,
example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml).
"""
import json
import pathlib
import sys

import yaml

OUT = pathlib.Path(__file__).resolve().parent.parent / "deploy/kubernetes/schemas"


def strict(node):
    if isinstance(node, dict):
        # Prose only: the checks need the structure, and the projects' own
        # documentation is where to read it.
        # (A property named description is a schema, not a string: kept.)
        if isinstance(node.get("description"), str):
            del node["description"]
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        for value in node.values():
            strict(value)
    elif isinstance(node, list):
        for value in node:
            strict(value)


for path in sys.argv[1:]:
    crd = yaml.safe_load(open(path))
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    source = crd["metadata"].get("annotations", {})
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        schema = version["schema"]["openAPIV3Schema"]
        strict(schema)
        # apiVersion and kind are fixed for the file.
        schema.setdefault("properties", {})
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
        schema["properties"]["kind"] = {"const": kind}
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
        schema["$comment"] = f"from {pathlib.Path(path).name} {json.dumps(source, sort_keys=True)}"
        # Kept after a refresh only when its version is named here.
        name = f"{kind.lower()}-{group.split('.')[0]}-{version['name']}.json"
        (OUT / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        print(name)
