"""The one writer against the local cluster's API server: refusals reported, status checked first."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from api_cases import valid_doc
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.writer import Writer
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.intents import ApplyChild, DeleteChild, SetReplicas, WriteStatus
from phoenix_operator.reconcile.reconciler import PRUNABLE_KINDS, Reconciler
from phoenix_operator.render.objects import DEPLOYMENT_LABEL
from phoenix_operator.settings import OperatorSettings

pytestmark = pytest.mark.integration


def _config_map(ns: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns},
        "data": data,
    }


def test_a_refused_child_is_reported_and_the_others_still_written(
    kube_cluster: Any, kube_namespace: str
) -> None:
    ns = kube_namespace
    writer = Writer(Kube(kube_cluster.api_client))
    good = _config_map(ns, "good", {"a": "1"})
    refused = _config_map(ns, "refused", {"not a key!": "1"})  # keys must be [-._a-zA-Z0-9]+
    later = _config_map(ns, "later", {"b": "2"})
    done = writer.perform([ApplyChild(good), ApplyChild(refused), ApplyChild(later)])
    assert done.writes == ["ConfigMap/good", "ConfigMap/later"]
    assert [p.reason for p in done.rejected] == ["ChildRejected"]
    assert "ConfigMap/refused rejected:" in done.rejected[0].message
    assert "not a key!" in done.rejected[0].message, "the API server's own message is kept"

    # Converged: the same intents again write nothing.
    again = writer.perform([ApplyChild(good), ApplyChild(later)])
    assert again.writes == [] and again.rejected == []

    core = client.CoreV1Api(kube_cluster.api_client)
    deleted = writer.perform([DeleteChild("v1", "ConfigMap", "later", ns)])
    assert deleted.writes == ["deleted ConfigMap/later"]
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(ns).items}
    assert "later" not in names and "good" in names
    # Pruning what is already gone is what pruning wanted: no write, no error.
    assert writer.perform([DeleteChild("v1", "ConfigMap", "later", ns)]).writes == []


def test_status_is_checked_against_the_status_model_before_it_is_sent(
    kube_cluster: Any, kube_namespace: str, crds_installed: None
) -> None:
    ns, name = kube_namespace, "written"
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    doc = copy.deepcopy(valid_doc(name))
    custom.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)
    writer = Writer(Kube(kube_cluster.api_client))

    with pytest.raises(ValidationError, match="readyReplicas"):
        writer.perform([WriteStatus(name, ns, {}, {"readyReplicas": "three"})])
    stored = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
    assert "readyReplicas" not in (stored.get("status") or {})

    done = writer.perform([WriteStatus(name, ns, {}, {"readyReplicas": 3})])
    assert done.status_written
    stored = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
    assert stored["status"]["readyReplicas"] == 3


def test_listing_a_kind_whose_crd_went_away_after_discovery_finds_nothing(
    kube_cluster: Any, kube_namespace: str
) -> None:
    """Pruning lists optional kinds (Milvus, PodMonitor) that may be uninstalled between passes."""
    ext = client.ApiextensionsV1Api(kube_cluster.api_client)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.vanishing.example.com"},
        "spec": {
            "group": "vanishing.example.com",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    kube = Kube(kube_cluster.api_client)
    try:

        def served() -> bool:
            try:
                kube.list("vanishing.example.com/v1", "Gadget", kube_namespace, "a=b")
            except Exception:
                kube.dynamic.resources.invalidate_cache()
                return False
            return True

        wait_for(served, timeout=30, description="the Gadget kind served and discovered")
    finally:
        ext.delete_custom_resource_definition(crd["metadata"]["name"])

    def gone() -> bool:
        try:
            kube.list("vanishing.example.com/v1", "Gadget", kube_namespace, "a=b")
        except Exception:
            return True
        return False

    wait_for(gone, timeout=30, description="the API server no longer serving Gadget")
    assert kube.list_if_served("vanishing.example.com/v1", "Gadget", kube_namespace, "a=b") == []
    assert kube.list_if_served("never.example.com/v1", "Nothing", kube_namespace, "a=b") == []


def _reconcilable(kube_cluster: Any, ns: str, name: str) -> tuple[Kube, Any]:
    """A PhoenixDeployment without retrieval (no Milvus to reach) and a way to run one pass on it."""
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    doc = copy.deepcopy(valid_doc(name))
    del doc["spec"]["retrieval"]
    doc["spec"]["autoscaling"] = {"mode": "off"}
    custom.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)
    kube = Kube(kube_cluster.api_client)

    def reconcile() -> Any:
        body = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
        return Reconciler(kube, OperatorSettings()).reconcile(body)

    return kube, reconcile


def test_a_pass_reads_its_children_with_one_list_per_kind_and_status_sees_what_it_wrote(
    kube_cluster: Any, kube_namespace: str, crds_installed: None, session_operator_paused: None, mocker: Any
) -> None:
    """At 1,000 deployments a read per child per pass is most of the operator's API traffic."""
    kube, reconcile = _reconcilable(kube_cluster, kube_namespace, "lister")
    first = reconcile()
    assert "Deployment/lister-triton" in first.writes
    # Written in this very pass, so read again after the write: status knows the new Deployment.
    assert first.status_patch["replicas"] == 1, first.status_patch

    get = mocker.spy(kube, "get")
    listed = mocker.spy(kube, "list")
    again = reconcile()
    assert again.writes == [], "converged: nothing to write"
    child_kinds = {kind for _, kind in PRUNABLE_KINDS}
    assert [c.args[1] for c in get.call_args_list if c.args[1] in child_kinds] == [], "no read per child"
    listed_kinds = Counter(c.args[1] for c in listed.call_args_list)
    # Optional kinds (Milvus, PodMonitor) are listed too where an earlier test installed their CRDs.
    assert set(listed_kinds) >= {*child_kinds, "Pod"} and set(listed_kinds.values()) == {1}, (
        "one list per kind of child, and one of the pods status needs (Triton's and the gateway's)",
        listed_kinds,
    )


def test_a_kind_that_cannot_be_listed_is_still_applied_and_the_pass_fails_before_pruning(
    kube_cluster: Any, kube_namespace: str, crds_installed: None, session_operator_paused: None, mocker: Any
) -> None:
    """The refused list is a stand-in (a patched `list_if_served` raising 403); the rest is real."""
    ns = kube_namespace
    kube, reconcile = _reconcilable(kube_cluster, ns, "halflisted")
    reconcile()
    core = client.CoreV1Api(kube_cluster.api_client)
    core.delete_namespaced_config_map("halflisted-triton-config", ns)
    owner = client.CustomObjectsApi(kube_cluster.api_client).get_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, "halflisted"
    )
    stale = _config_map(ns, "halflisted-stale", {"a": "1"})
    stale["metadata"]["labels"] = {DEPLOYMENT_LABEL: "halflisted"}
    stale["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": "halflisted",
            "uid": owner["metadata"]["uid"],
        }
    ]
    kube.apply(stale)
    real_list = kube.list_if_served

    def refuse_config_maps(api_version: str, kind: str, namespace: str, selector: str) -> list[Any]:
        if kind == "ConfigMap":
            raise ApiException(status=403, reason="Forbidden")
        return real_list(api_version, kind, namespace, selector)

    mocker.patch.object(kube, "list_if_served", side_effect=refuse_config_maps)
    with pytest.raises(ApiException) as refused:
        reconcile()
    assert refused.value.status == 403
    names = {cm.metadata.name for cm in core.list_namespaced_config_map(ns).items}
    assert "halflisted-triton-config" in names, "applied although its kind could not be listed"
    assert "halflisted-stale" in names, "not pruned blind"

    mocker.stopall()
    assert "deleted ConfigMap/halflisted-stale" in reconcile().writes


def test_reads_and_writes_reuse_one_connection(
    kube_cluster: Any, kube_namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A response left unread keeps its connection from the pool: each request would then pay a
    new TLS handshake, most of a busy operator's CPU."""
    ns = kube_namespace
    kube = Kube(client.ApiClient(kube_cluster.api_client.configuration))
    writer = Writer(kube)
    kube.list("v1", "ConfigMap", ns, "a=b")  # discovery and the first connection
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        for i in range(5):
            cm = _config_map(ns, f"reuse-{i}", {"a": str(i)})
            writer.perform([ApplyChild(cm)])
            assert kube.get("v1", "ConfigMap", f"reuse-{i}", ns) is not None
            assert kube.get("v1", "ConfigMap", "never-there", ns) is None
            kube.list("v1", "ConfigMap", ns, "a=b")
            kube.post_event(kube.get("v1", "ConfigMap", f"reuse-{i}", ns) or {}, "Normal", "Test", "reuse")
            writer.perform([DeleteChild("v1", "ConfigMap", f"reuse-{i}", ns)])
    opened = [r.getMessage() for r in caplog.records if "Starting new" in r.getMessage()]
    assert opened == [], opened


def test_replicas_are_compared_with_the_deployment_as_written_earlier_in_the_same_batch(
    kube_cluster: Any, kube_namespace: str
) -> None:
    """What a pass listed before it applied the Deployment is stale by the time replicas are set."""
    ns = kube_namespace
    kube = Kube(kube_cluster.api_client)
    writer = Writer(kube)

    def deployment(replicas: int, revision: str) -> dict[str, Any]:
        labels = {"app": "batch"}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "batch", "namespace": ns, "annotations": {"revision": revision}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
                },
            },
        }

    writer.perform([ApplyChild(deployment(1, "a")), SetReplicas("batch", ns, 3)])
    listed = kube.get("apps/v1", "Deployment", "batch", ns)
    assert listed is not None and listed["spec"]["replicas"] == 3
    # The child's apply takes replicas back (2); the listing still says the autoscaler's 3.
    done = writer.perform([ApplyChild(deployment(2, "b"), listed), SetReplicas("batch", ns, 3, listed)])
    assert done.writes == ["Deployment/batch", "Deployment/batch replicas=3"]
    live = kube.get("apps/v1", "Deployment", "batch", ns)
    assert live is not None and live["spec"]["replicas"] == 3
