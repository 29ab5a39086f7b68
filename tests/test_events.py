"""Events on the local cluster: posted once, and dropped at once where they cannot be created."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from phoenix_operator.clients.kube import EVENT_COMPONENT, Kube
from phoenix_operator.cluster.waiting import wait_for

pytestmark = pytest.mark.integration


def _config_map(core: client.CoreV1Api, ns: str, name: str, finalizers: list[str] | None = None) -> Any:
    meta = client.V1ObjectMeta(name=name, namespace=ns, finalizers=finalizers)
    return core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=meta)).to_dict()


def _as_manifest(obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}


def test_an_event_is_created_about_its_object(kube_cluster: Any, kube_namespace: str) -> None:
    core = client.CoreV1Api(kube_cluster.api_client)
    cm = _config_map(core, kube_namespace, "noted")
    kube = Kube(kube_cluster.api_client)
    assert kube.post_event(_as_manifest(cm), "Warning", "DimensionMismatch", "x" * 2000)
    events = core.list_namespaced_event(kube_namespace, field_selector="involvedObject.name=noted").items
    assert len(events) == 1
    event = events[0]
    assert (event.type, event.reason, event.involved_object.kind) == (
        "Warning",
        "DimensionMismatch",
        "ConfigMap",
    )
    assert event.involved_object.uid == cm["metadata"]["uid"] and len(event.message) == 1024
    assert event.source.component == EVENT_COMPONENT and event.count == 1


def test_an_event_in_a_terminating_namespace_is_dropped_at_once(kube_cluster: Any) -> None:
    """A finalizer keeps the namespace Terminating; the API server refuses new content there."""
    core = client.CoreV1Api(kube_cluster.api_client)
    ns = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    cm = _config_map(core, ns, "held", finalizers=["phoenix.test/hold"])
    try:
        core.delete_namespace(ns)
        wait_for(
            lambda: core.read_namespace(ns).status.phase == "Terminating",
            timeout=30,
            description="Terminating",
        )
        wait_for(
            lambda: core.read_namespaced_config_map("held", ns).metadata.deletion_timestamp is not None,
            timeout=60,
            description="the namespace controller deleting its content",
        )
        started = time.monotonic()
        assert not Kube(kube_cluster.api_client).post_event(_as_manifest(cm), "Normal", "ReadyFalse", "gone")
        assert time.monotonic() - started < 2.0  # one attempt, no retries holding other Events back
    finally:
        core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
