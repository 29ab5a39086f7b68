"""Generate the PhoenixDeployment CRD from the pydantic models.

pydantic emits JSON Schema 2020-12 and Kubernetes wants a structural OpenAPI v3.0 schema; the
translation raises on anything it does not understand rather than emit a schema the API server
would reject or silently prune. The rules: docs/operator.md, "The CRD schema".
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from phoenix_operator import API_GROUP, API_VERSION, KIND, PLURAL, SHORT_NAMES, SINGULAR
from phoenix_operator.api.models import NAME_RULES, PhoenixDeploymentSpec, PhoenixDeploymentStatus

Schema = dict[str, Any]

CRD_FILENAME = f"{API_GROUP}_{PLURAL}.yaml"
_DROP = {"title", "$defs"}


class SchemaError(ValueError):
    """The models use a construct the generator cannot express structurally."""


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.rsplit("/", 1)[-1]
    if name not in defs:
        raise SchemaError(f"unknown $ref {ref}")
    # Siblings of $ref (description, default) override the referenced schema's own.
    merged = copy.deepcopy(defs[name])
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _scalar_union(options: list[Schema]) -> Schema:
    types = {o.get("type") for o in options}
    if types == {"integer", "string"}:
        return {"x-kubernetes-int-or-string": True}
    if types <= {"integer", "number", "string", "boolean"}:
        return {"x-kubernetes-preserve-unknown-fields": True}
    raise SchemaError(f"cannot express union of {sorted(map(str, types))} structurally")


def to_structural(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Translate one pydantic JSON-schema node (recursively) into a structural OpenAPI node."""
    node = _resolve(node, defs)
    out: Schema = {}
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [o for o in any_of if o.get("type") != "null"]
        nullable = len(non_null) != len(any_of)
        if len(non_null) == 1:
            out = to_structural(non_null[0], defs)
        else:
            out = _scalar_union([_resolve(o, defs) for o in non_null])
        if nullable:
            out["nullable"] = True
        for key in ("description", "default"):
            if key in node and node[key] is not None:
                out[key] = node[key]
        return out

    for key, value in node.items():
        if key in _DROP or key == "anyOf":
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out["properties"] = {name: to_structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out["items"] = to_structural(value, defs)
        elif key == "additionalProperties":
            if value is False:
                continue
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            else:
                out["additionalProperties"] = to_structural(value, defs)
        elif key == "exclusiveMinimum":
            out["minimum"] = value
            out["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            out["maximum"] = value
            out["exclusiveMaximum"] = True
        elif key == "const":
            out["enum"] = [value]
        elif key in {"allOf", "oneOf", "not", "$ref", "prefixItems"}:
            raise SchemaError(f"unsupported JSON-schema keyword {key!r}")
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


class _DefaultsFromFactories(GenerateJsonSchema):
    """Also emit defaults that come from ``default_factory``.

    pydantic leaves them out; without them the API server would not materialise e.g.
    ``spec.triton`` when a user omits it, and CEL rules reading ``self.triton.gpusPerReplica``
    would fail with "no such key" instead of validating.
    """

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            if isinstance(value, BaseModel):
                return value.model_dump(mode="json", by_alias=True, exclude_none=True)
            if isinstance(value, list):
                return [
                    v.model_dump(mode="json", by_alias=True, exclude_none=True)
                    if isinstance(v, BaseModel)
                    else v
                    for v in value
                ]
            return value
        return super().get_default_value(schema)


def model_schema(model: type[BaseModel], factory_defaults: bool = True) -> Schema:
    generator = _DefaultsFromFactories if factory_defaults else GenerateJsonSchema
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=generator)
    return to_structural(raw, raw.get("$defs", {}))


def _printer_columns() -> list[Schema]:
    return [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "Available", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpusAllocated"},
        {"name": "TTFT-P95", "type": "number", "jsonPath": ".status.ttftP95Seconds"},
        {"name": "Mode", "type": "string", "jsonPath": ".spec.autoscaling.mode", "priority": 1},
        {
            "name": "Reason",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
            "priority": 1,
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def build_crd() -> Schema:
    """The complete CustomResourceDefinition object."""
    spec_schema = model_schema(PhoenixDeploymentSpec)
    # No defaults in status: the operator writes every field it means, and `{}`/`[]` noise in
    # `kubectl get -o yaml` helps nobody.
    status_schema = model_schema(PhoenixDeploymentStatus, factory_defaults=False)
    root: Schema = {
        "type": "object",
        "description": (
            "PhoenixDeployment runs a customer-service LLM stack (Triton on GPUs, Milvus retrieval) "
            "and keeps its time-to-first-token under target by scaling and retuning batching."
        ),
        "required": ["spec"],
        # Only the root sees metadata: the limits children's names put on the deployment's name.
        "x-kubernetes-validations": [r.as_crd() for r in NAME_RULES],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "phoenix-operator", "app.kubernetes.io/part-of": "phoenix"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["phoenix", "all"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.triton.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _printer_columns(),
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    header = "# Generated by `phoenix crd` from phoenix_operator/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


def crd_targets(repo_root: Path) -> list[Path]:
    """Every checked-in copy of the CRD (the chart's copy exists once the chart does)."""
    targets = [repo_root / "crds" / CRD_FILENAME]
    chart_crds = repo_root / "charts" / "phoenix-operator" / "crds"
    if chart_crds.parent.is_dir():
        targets.append(chart_crds / CRD_FILENAME)
    return targets


def write_or_check(repo_root: Path, check: bool) -> list[Path]:
    """Write the CRD copies, or (check) return the ones that are missing or stale."""
    text = render_crd_yaml()
    stale = []
    for path in crd_targets(repo_root):
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return stale


if __name__ == "__main__":  # pragma: no cover - convenience
    sys.stdout.write(render_crd_yaml())
