"""The Argo CD health check for PhoenixDeployment (examples/gitops/argocd), run with lupa's Lua 5.1.

Unit tests feed it the conditions the reconciler's pure status code derives for each situation;
the integration tests feed it objects as the API server returns them after the real operator
wrote their status: just created, Ready, Degraded (16 GPUs per pod, more than any node has) and
Progressing (a roll-out held by pausing the Triton Deployment).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from api_cases import valid_doc
from chart_support import GITOPS, HEALTH_LUA, argocd_health
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.status.conditions import (
    DeploymentState,
    Problem,
    RetrievalState,
    Snapshot,
    desired_conditions,
    merge_conditions,
)

NOW = "2026-01-01T00:00:00Z"


def _object(snapshot: Snapshot | None, generation: int = 3, observed: int | None = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "PhoenixDeployment",
        "metadata": {"name": "chat", "namespace": "ns", "generation": generation},
        "spec": {"model": {"name": "m"}},
    }
    if snapshot is not None:
        conditions = merge_conditions([], desired_conditions(snapshot), NOW, observed)
        obj["status"] = {"conditions": conditions}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


def _deployment(desired: int, ready: int, updated: int | None = None) -> DeploymentState:
    updated = desired if updated is None else updated
    return DeploymentState(
        exists=True, desired=desired, replicas=desired, ready=ready, available=ready, updated=updated
    )


CASES: list[tuple[str, Snapshot, str, str]] = [
    ("ready", Snapshot(_deployment(2, 2)), "Healthy", "AllReady"),
    ("creating", Snapshot(DeploymentState(exists=False)), "Progressing", "Creating"),
    ("scaling", Snapshot(_deployment(3, 1)), "Progressing", "Scaling"),
    ("rolling-out", Snapshot(_deployment(2, 2, updated=1)), "Progressing", "RollingOut"),
    (
        "waiting-for-milvus",
        Snapshot(_deployment(1, 1), retrieval=RetrievalState(False, "WaitingForMilvus", "StatefulSet x")),
        "Progressing",
        "RetrievalNotReady",
    ),
    (
        "insufficient-gpu",
        Snapshot(
            _deployment(2, 1),
            unschedulable=[Problem("InsufficientGPU", "pod p: 0/4 nodes: Insufficient nvidia.com/gpu")],
        ),
        "Degraded",
        "InsufficientGPU",
    ),
    (
        "secret-missing",
        Snapshot(_deployment(1, 1), blocking=[Problem("SecretNotFound", "Secret ns/s does not exist")]),
        "Degraded",
        "SecretNotFound",
    ),
    (
        "collection-mismatch",
        Snapshot(_deployment(1, 1), retrieval=RetrievalState(False, "CollectionMismatch", "dim 384 != 768")),
        "Degraded",
        "CollectionMismatch",
    ),
    (
        "deadline-exceeded",
        Snapshot(
            DeploymentState(
                exists=True, desired=2, replicas=2, ready=1, available=1, updated=2, deadline_exceeded=True
            )
        ),
        "Degraded",
        "ProgressDeadlineExceeded",
    ),
]


@pytest.mark.parametrize(("case", "snapshot", "status", "reason"), CASES, ids=[c[0] for c in CASES])
def test_conditions_map_to_argocd_health(case: str, snapshot: Snapshot, status: str, reason: str) -> None:
    health = argocd_health(_object(snapshot))
    assert health["status"] == status, health
    assert health["message"].startswith(reason), health


def test_no_status_yet_is_progressing() -> None:
    health = argocd_health(_object(None))
    assert health == {"status": "Progressing", "message": "Waiting for the operator to report status"}


def test_a_spec_change_not_yet_observed_is_progressing_even_if_ready() -> None:
    """Right after a sync Argo CD must not call the old roll-out Healthy."""
    health = argocd_health(_object(Snapshot(_deployment(1, 1)), generation=4, observed=3))
    assert health["status"] == "Progressing"
    assert "generation 4" in health["message"]


def test_control_loop_conditions_do_not_change_health() -> None:
    """Stale metrics make the loop hold still (its own conditions); serving is still Healthy."""
    obj = _object(Snapshot(_deployment(2, 2)))
    obj["status"]["conditions"] += [
        {"type": "MetricsAvailable", "status": "False", "reason": "MetricsStale", "message": "old"},
        {"type": "Autoscaling", "status": "False", "reason": "FailStatic", "message": "holding"},
    ]
    assert argocd_health(obj)["status"] == "Healthy"


def test_the_sandbox_rejects_what_argocd_lacks() -> None:
    """The runner really strips Lua's standard libraries (else the tests above prove less)."""
    with pytest.raises(Exception, match="string"):
        argocd_health({}, script='return {status = string.format("%s", "Healthy")}')
    with pytest.raises(Exception, match="index a string"):
        argocd_health({}, script='return {status = ("Healthy"):lower()}')


def test_argocd_cm_carries_the_tested_script() -> None:
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    key = f"resource.customizations.health.{API_GROUP}_PhoenixDeployment"
    assert cm["data"][key] == HEALTH_LUA.read_text()
    assert cm["data"]["application.resourceTrackingMethod"] == "annotation"


# --------------------------------------------------------------------------- real objects


def _custom(kube_cluster: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_cluster.api_client)


def _get(kube_cluster: Any, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = _custom(kube_cluster).get_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, name
    )
    return obj


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return {}


def _wait_condition(kube_cluster: Any, ns: str, name: str, type_: str, status: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = _get(kube_cluster, ns, name)
        current = obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        return obj if current and _condition(obj, type_).get("status") == status else None

    return wait_for(check, timeout=120, interval=0.5, description=f"{name} {type_}={status}")


def _doc(name: str, **triton: Any) -> dict[str, Any]:
    doc = copy.deepcopy(valid_doc(name))
    del doc["spec"]["retrieval"]
    doc["spec"]["autoscaling"] = {"mode": "off"}
    doc["spec"]["triton"] = {"replicas": 1, **triton}
    return doc


@pytest.fixture(scope="module")
def health_namespace(kube_cluster: Any, operator_process: Any) -> Iterator[str]:
    core = client.CoreV1Api(kube_cluster.api_client)
    name = f"t-health-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    # While the operator still runs: it removes Kopf's finalizers, so the namespace can go.
    kube_cluster.kubectl("delete", "phx", "--all", "-n", name, "--timeout=60s", check=False)
    core.delete_namespace(name)


@pytest.mark.integration
def test_real_objects_map_to_healthy_degraded_and_progressing(
    kube_cluster: Any, operator_process: Any, health_namespace: str
) -> None:
    ns = health_namespace
    custom = _custom(kube_cluster)
    for doc in (_doc("fine"), _doc("greedy", gpusPerReplica=16), _doc("held")):
        created = custom.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)
        if doc["metadata"]["name"] == "fine":
            # As the API server returns it on creation: no status yet.
            assert argocd_health(created)["status"] == "Progressing"

    ready = _wait_condition(kube_cluster, ns, "fine", "Ready", "True")
    assert argocd_health(ready) == {"status": "Healthy", "message": _message(ready, "Ready")}

    degraded = _wait_condition(kube_cluster, ns, "greedy", "Degraded", "True")
    health = argocd_health(degraded)
    assert health["status"] == "Degraded"
    assert health["message"].startswith("InsufficientGPU: ") and "nvidia.com/gpu" in health["message"]

    # A roll-out the Deployment controller holds: pause the Triton Deployment, change the spec.
    _wait_condition(kube_cluster, ns, "held", "Ready", "True")
    kube_cluster.kubectl("rollout", "pause", "-n", ns, "deployment/held-triton")
    custom.patch_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, "held", {"spec": {"model": {"maxBatchSize": 32}}}
    )
    rolling = _wait_condition(kube_cluster, ns, "held", "Progressing", "True")
    assert _condition(rolling, "Degraded")["status"] == "False"
    health = argocd_health(rolling)
    assert health == {"status": "Progressing", "message": _message(rolling, "Progressing")}
    assert health["message"].startswith("RollingOut: ")

    kube_cluster.kubectl("rollout", "resume", "-n", ns, "deployment/held-triton")
    done = _wait_condition(kube_cluster, ns, "held", "Ready", "True")
    assert argocd_health(done)["status"] == "Healthy"


def _message(obj: dict[str, Any], type_: str) -> str:
    cond = _condition(obj, type_)
    return f"{cond['reason']}: {cond['message']}"
