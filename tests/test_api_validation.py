"""Client-side validation (pydantic) of the invalid-object table; the API server runs the same
table in tests/test_reconciler_integration.py, and the valid variants here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from api_cases import INVALID_CASES, VALID_VARIANTS, Case, invalid_doc, valid_doc
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.models import (
    MAX_DEPLOYMENT_NAME_LENGTH,
    PhoenixDeployment,
    PhoenixDeploymentSpec,
    parse_quantity,
)
from phoenix_operator.render.objects import Capabilities, Target, render_all

ROOT = Path(__file__).resolve().parent.parent


def test_valid_document_parses_with_defaults() -> None:
    pd = PhoenixDeployment.model_validate(valid_doc())
    assert pd.spec.model.instance_count == 1
    assert pd.spec.triton.gpus_per_replica == 1
    assert pd.spec.autoscaling.scale_down_stabilization_seconds == 300
    assert [t.key for t in pd.spec.triton.tolerations] == ["nvidia.com/gpu"]


def test_table_is_large_enough() -> None:
    assert len(INVALID_CASES) >= 15
    assert len({c.id for c in INVALID_CASES}) == len(INVALID_CASES)


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_invalid_is_rejected_naming_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as info:
        PhoenixDeployment.model_validate(invalid_doc(case))
    described = [".".join(str(p) for p in err["loc"]) + ": " + err["msg"] for err in info.value.errors()]
    assert any(case.field in line for line in described), described


@pytest.mark.parametrize("case", VALID_VARIANTS, ids=lambda c: c.id)
def test_strictness_still_accepts_what_kubernetes_accepts(case: Case) -> None:
    PhoenixDeployment.model_validate(invalid_doc(case))


def test_every_shipped_deployment_still_validates() -> None:
    documents = [
        doc
        for path in sorted([*(ROOT / "examples").rglob("*.yaml"), *(ROOT / "tests" / "data").rglob("*.yaml")])
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == "PhoenixDeployment"
    ]
    assert len(documents) >= 3
    for doc in documents:
        PhoenixDeployment.model_validate(doc)


#: Longest names the API server allows per kind of child (Jobs append 11 characters to a CronJob's
#: name; a StatefulSet's controller-revision-hash label is its name, '-' and up to 10 characters).
NAME_LIMITS = {"CronJob": 52, "StatefulSet": 52, "Service": 63}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _children(name: str) -> list[dict[str, Any]]:
    doc = valid_doc(name)
    doc["spec"]["maintenance"] = {"retraining": {"schedule": "0 4 * * 0", "image": "busybox:1.36"}}
    spec = PhoenixDeploymentSpec.model_validate(doc["spec"])  # the name is judged separately
    return render_all(
        Target(name=name, namespace="ns"), spec, capabilities=Capabilities(prometheus_operator=True)
    )


def test_every_child_of_the_longest_allowed_name_fits_kubernetes_limits() -> None:
    name = "c" * MAX_DEPLOYMENT_NAME_LENGTH
    children = _children(name)
    assert {"CronJob", "StatefulSet", "Service", "Deployment", "ConfigMap"} <= {c["kind"] for c in children}
    for child in children:
        child_name = child["metadata"]["name"]
        assert len(child_name) <= NAME_LIMITS.get(child["kind"], 253), (child["kind"], child_name)
        if child["kind"] == "Service":
            assert DNS_1035.match(child_name), child_name
        for value in (child["metadata"].get("labels") or {}).values():
            assert len(value) <= 63, (child["kind"], value)


def test_one_character_more_would_break_a_child() -> None:
    """The limit is tight: at MAX + 1 the longest child (a CronJob) exceeds its kind's limit."""
    children = _children("c" * (MAX_DEPLOYMENT_NAME_LENGTH + 1))
    over = [
        c["metadata"]["name"]
        for c in children
        if len(c["metadata"]["name"]) > NAME_LIMITS.get(c["kind"], 253)
    ]
    assert over, "a longer name would still fit: MAX_DEPLOYMENT_NAME_LENGTH is stricter than needed"
    with pytest.raises(ValidationError, match=r"metadata\.name may have at most 41"):
        PhoenixDeployment.model_validate(valid_doc("c" * (MAX_DEPLOYMENT_NAME_LENGTH + 1)))


def test_quantities_compare_by_value() -> None:
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert (
        parse_quantity("1Gi") == 1024**3 and parse_quantity("1G") == 10**9 and parse_quantity("2e3") == 2000
    )
    assert parse_quantity("1536Mi") < parse_quantity("2Gi") < parse_quantity("3e9")


@pytest.mark.integration
def test_api_server_accepts_the_valid_variants(
    kube_cluster: Any, crds_installed: None, kube_namespace: str
) -> None:
    """The same variants through the real API server (dry run: nothing is stored)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(kube_cluster.api_client)
    for case in VALID_VARIANTS:
        doc = invalid_doc(case)
        doc["spec"]["autoscaling"] = {"mode": "off"}
        custom.create_namespaced_custom_object(
            API_GROUP, API_VERSION, kube_namespace, PLURAL, doc, dry_run="All", field_validation="Strict"
        )
