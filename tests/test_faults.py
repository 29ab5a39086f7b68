"""The operator under faults, each on a private local cluster (its own etcd and API server).

* SIGKILLed while it applies ten deployments → a new process converges them all, with exactly
  the rendered children (no duplicates, nothing deleted and re-created, no extra roll-outs).
* kube-apiserver restarted, and etcd restarted, while it reconciles → the same process (never
  restarted) recovers by itself: deployments applied just before and after are rendered.
* Two replicas with Kopf peering, the active one SIGKILLed → the stand-by takes over in < 30 s.
* An external Milvus (real Milvus Lite) stopped → RetrievalReady=False; Triton's children and
  every condition not about retrieval stay as they were.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fixtures.faults import (
    PEERING_NAME,
    FaultCluster,
    OperatorRun,
    census,
    condition,
    expected_children,
    is_ready,
    small_deployment,
)
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.local.milvus import LocalMilvus
from phoenix_operator.render.objects import DEPLOYMENT_LABEL

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def fault_cluster(tmp_path: Path) -> Iterator[FaultCluster]:
    cluster = FaultCluster.up(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        cluster.down()


def _all_ready(cluster: FaultCluster, ns: str, names: list[str]) -> bool:
    return all(is_ready(cluster.deployment(ns, n)) for n in names)


def _applied(cluster: FaultCluster, ns: str, name: str) -> bool:
    cluster.apply_deployment(ns, small_deployment(name))
    return True


def _uids(children: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    return {(o["kind"], o["metadata"]["name"]): o["metadata"]["uid"] for o in children}


# ============================================================================================
# SIGKILL mid-reconcile
# ============================================================================================
def test_operator_killed_mid_reconcile_converges_without_duplicates(
    fault_cluster: FaultCluster, tmp_path: Path
) -> None:
    ns = "shop"
    fault_cluster.create_namespace(ns)
    operator = OperatorRun(fault_cluster, tmp_path / "operator.log", ["--all-namespaces", "--standalone"])
    operator.start()
    names = [f"chat-{i}" for i in range(10)]
    try:
        for name in names:
            fault_cluster.apply_deployment(ns, small_deployment(name))
        # Kill it as soon as its first children exist: most deployments are half rendered.
        wait_for(
            lambda: fault_cluster.children(ns),
            timeout=60,
            interval=0.05,
            abort=operator.exit_reason,
            description="the first child",
        )
        operator.kill()
        before = fault_cluster.children(ns)
        owners_started = {o["metadata"]["labels"][DEPLOYMENT_LABEL] for o in before}
        assert owners_started, "killed before any child was written"
        assert not _all_ready(fault_cluster, ns, names), "killed too late: nothing was mid-reconcile"

        restarted = time.monotonic()
        operator.start()
        wait_for(
            lambda: _all_ready(fault_cluster, ns, names),
            timeout=180,
            interval=0.5,
            abort=operator.exit_reason,
            description="all ten deployments Ready after the restart",
        )
        converged_s = time.monotonic() - restarted
        after = fault_cluster.children(ns)
    finally:
        operator.stop()
    print(
        f"\nkilled with children of {len(owners_started)}/10 deployments written ({len(before)} objects); "
        f"the new operator converged all 10 in {converged_s:.1f}s"
    )
    for name in names:
        expected = expected_children(small_deployment(name), ns)
        counts = census(after, name)
        kinds = {k: n for k, n in counts.items() if k[0] != "ReplicaSet of"}
        assert kinds == dict.fromkeys(expected, 1), f"{name}: {sorted(kinds)} != {sorted(expected)}"
        # One ReplicaSet per Deployment: nothing re-applied a different pod template.
        replica_sets = {k: n for k, n in counts.items() if k[0] == "ReplicaSet of"}
        deployments = sorted(n for k, n in expected if k == "Deployment")
        assert replica_sets == {("ReplicaSet of", d): 1 for d in deployments}, replica_sets
    # What existed at the kill is the same object afterwards, not deleted and re-created.
    before_uids, after_uids = _uids(before), _uids(after)
    assert {k: after_uids.get(k) for k in before_uids} == before_uids


# ============================================================================================
# Control plane restarts
# ============================================================================================
@pytest.mark.parametrize("component", ["kube-apiserver", "etcd"])
def test_operator_recovers_by_itself_when_the_control_plane_restarts(
    fault_cluster: FaultCluster, tmp_path: Path, component: str
) -> None:
    ns = "shop"
    fault_cluster.create_namespace(ns)
    operator = OperatorRun(fault_cluster, tmp_path / "operator.log", ["--all-namespaces", "--standalone"])
    operator.start()
    pid = operator.pid
    try:
        fault_cluster.apply_deployment(ns, small_deployment("steady"))
        wait_for(
            lambda: is_ready(fault_cluster.deployment(ns, "steady")),
            timeout=90,
            interval=0.5,
            abort=operator.exit_reason,
            description="the first deployment Ready",
        )
        # Applied just before the outage: the operator is reconciling them when it begins.
        before = [f"before-{i}" for i in range(3)]
        for name in before:
            fault_cluster.apply_deployment(ns, small_deployment(name))
        fault_cluster.local.stop_component(component)
        time.sleep(5)  # several resync periods with no API: every call fails or hangs
        fault_cluster.local.start_component(component)
        back = time.monotonic()
        # Applied after: only a watch that reconnected can see these.
        after = [f"after-{i}" for i in range(2)]
        for name in after:
            wait_for(
                functools.partial(_applied, fault_cluster, ns, name),
                timeout=30,
                interval=0.5,
                description=f"the API to accept {name}",
            )
        names = ["steady", *before, *after]
        wait_for(
            lambda: _all_ready(fault_cluster, ns, names),
            timeout=120,
            interval=0.5,
            abort=operator.exit_reason,
            description=f"every deployment Ready after {component} came back",
        )
        recovered_s = time.monotonic() - back
        assert operator.alive() and operator.pid == pid, "the operator was restarted"
        children = fault_cluster.children(ns)
    finally:
        operator.stop()
    print(f"\n{component} down 5 s; all {len(names)} deployments Ready {recovered_s:.1f}s after it was back")
    for name in names:
        counts = census(children, name)
        expected = expected_children(small_deployment(name), ns)
        assert {k for k in counts if k[0] != "ReplicaSet of"} == expected, name
        assert max(counts.values()) == 1, f"{name}: duplicates {counts}"


# ============================================================================================
# Peering: the stand-by takes over
# ============================================================================================
TAKEOVER_LIMIT_S = 30.0


def test_standby_takes_over_when_the_active_replica_is_killed(
    fault_cluster: FaultCluster, tmp_path: Path
) -> None:
    ns = "shop"
    fault_cluster.create_namespace(ns)
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": PEERING_NAME, "namespace": ns},
    }
    fault_cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(peering))
    # As the chart runs them: the same peering, each replica its own priority (highest acts).
    active = OperatorRun(fault_cluster, tmp_path / "active.log", ["--namespace", ns, "--priority", "1"])
    standby = OperatorRun(fault_cluster, tmp_path / "standby.log", ["--namespace", ns, "--priority", "0"])
    active.start()
    try:
        fault_cluster.apply_deployment(ns, small_deployment("first"))
        wait_for(
            lambda: is_ready(fault_cluster.deployment(ns, "first")),
            timeout=90,
            interval=0.5,
            abort=active.exit_reason,
            description="the active replica to make the first deployment Ready",
        )
        standby.start()
        # Kopf starts paused under peering and resumes only when no live peer outranks it.
        time.sleep(4)
        idle = standby.log_text()
        assert "Resuming operations" not in idle and "Handler 'on_change'" not in idle, idle

        killed = active.kill()
        fault_cluster.apply_deployment(ns, small_deployment("second"))
        wait_for(
            lambda: fault_cluster.children(ns) and census(fault_cluster.children(ns), "second"),
            timeout=TAKEOVER_LIMIT_S + 60,  # measured beyond the limit, so the report says by how much
            interval=0.2,
            abort=standby.exit_reason,
            description="the stand-by's first reconcile of a deployment applied after the kill",
        )
        takeover_s = time.monotonic() - killed
        print(f"\nstand-by took over {takeover_s:.1f}s after the active replica was SIGKILLed")
        assert takeover_s < TAKEOVER_LIMIT_S, (
            f"the stand-by took {takeover_s:.1f}s to take over:\n{standby.log_tail()}"
        )
        wait_for(
            lambda: is_ready(fault_cluster.deployment(ns, "second")),
            timeout=60,
            interval=0.5,
            abort=standby.exit_reason,
            description="the stand-by to make the second deployment Ready",
        )
    finally:
        active.stop()
        standby.stop()


# ============================================================================================
# Milvus down
# ============================================================================================
#: Conditions that are about retrieval by design: Ready aggregates it, Degraded says why.
RETRIEVAL_CONDITIONS = {"RetrievalReady", "Ready", "Degraded"}


def _with_external_milvus(name: str, uri: str) -> dict[str, Any]:
    doc = small_deployment(name)
    doc["spec"]["retrieval"] = {
        "milvus": {"mode": "external", "external": {"uri": uri}},
        "collection": {"name": "kb", "dimension": 384},
    }
    return doc


@pytest.mark.milvus
def test_milvus_down_fails_retrieval_only(fault_cluster: FaultCluster, tmp_path: Path) -> None:
    from kubernetes import client

    ns, name = "shop", "chat"
    fault_cluster.create_namespace(ns)
    milvus = LocalMilvus(tmp_path / "milvus").start()
    operator = OperatorRun(
        fault_cluster,
        tmp_path / "operator.log",
        ["--all-namespaces", "--standalone"],
        extra_env={"PHOENIX_MILVUS_TIMEOUT_SECONDS": "3"},
    )
    apps = client.AppsV1Api(fault_cluster.api_client)
    core = client.CoreV1Api(fault_cluster.api_client)
    try:
        operator.start()
        fault_cluster.apply_deployment(ns, _with_external_milvus(name, milvus.uri))
        wait_for(
            lambda: is_ready(fault_cluster.deployment(ns, name)),
            timeout=90,
            interval=0.5,
            abort=operator.exit_reason,
            description="Ready with Milvus up",
        )
        pd = fault_cluster.deployment(ns, name)
        assert condition(pd, "RetrievalReady")["status"] == "True"  # type: ignore[index]
        conditions_before = {c["type"]: (c["status"], c["reason"]) for c in pd["status"]["conditions"]}
        triton_before: Any = apps.read_namespaced_deployment(f"{name}-triton", ns)
        config_before: Any = core.read_namespaced_config_map(f"{name}-triton-config", ns)
        gateway_before: Any = apps.read_namespaced_deployment(f"{name}-gateway", ns)

        milvus.stop()
        stopped = time.monotonic()

        def retrieval_down() -> dict[str, Any] | None:
            cond = condition(fault_cluster.deployment(ns, name), "RetrievalReady")
            return cond if cond is not None and cond["status"] == "False" else None

        retrieval = wait_for(
            retrieval_down,
            timeout=60,
            interval=0.5,
            abort=operator.exit_reason,
            description="RetrievalReady=False after Milvus stopped",
        )
        detected_s = time.monotonic() - stopped
        assert retrieval is not None
        time.sleep(3 * 2)  # three more resync periods with Milvus down
        pd = fault_cluster.deployment(ns, name)
        conditions_after = {c["type"]: (c["status"], c["reason"]) for c in pd["status"]["conditions"]}
        triton_after: Any = apps.read_namespaced_deployment(f"{name}-triton", ns)
        config_after: Any = core.read_namespaced_config_map(f"{name}-triton-config", ns)
        gateway_after: Any = apps.read_namespaced_deployment(f"{name}-gateway", ns)
    finally:
        operator.stop()
        milvus.stop()
    print(f"\nRetrievalReady=False {detected_s:.1f}s after Milvus stopped; conditions {conditions_after}")
    # Ready says retrieval is what is missing, Degraded says why; nothing else moved.
    assert conditions_after["Ready"] == ("False", "RetrievalNotReady")
    assert conditions_after["Degraded"][0] == "True"
    untouched = {t: v for t, v in conditions_before.items() if t not in RETRIEVAL_CONDITIONS}
    assert untouched and {t: conditions_after.get(t) for t in untouched} == untouched
    for before, after in ((triton_before, triton_after), (gateway_before, gateway_after)):
        assert after.metadata.uid == before.metadata.uid
        assert after.metadata.generation == before.metadata.generation
        assert after.status.ready_replicas == before.status.ready_replicas >= 1
    assert config_after.metadata.resource_version == config_before.metadata.resource_version
    # A server that went away is unreachable, as one that was never there (same reason, same alerts).
    assert retrieval["reason"] == "MilvusUnreachable", retrieval
    assert conditions_after["Degraded"] == ("True", "MilvusUnreachable")
