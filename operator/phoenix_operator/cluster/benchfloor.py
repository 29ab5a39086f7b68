"""``phoenix bench operator --floor``: the cluster's own cost of N deployments' children.

The operator bench's cluster, nodes and fleet, but no operator: the bench renders each created
PhoenixDeployment's children with the operator's renderer and has the operator's writer apply
them, a first pass's writes and nothing else (no reads, no status, no Events, no control loops),
on as many threads as the operator's reconciler has. The time until every child Deployment has
rolled out is what the API server, etcd, the controllers, the scheduler and kwok need on this
machine for that many objects: the floor under the operator's ``ready_s``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.writer import Writer
from phoenix_operator.intents import ApplyChild, Intent
from phoenix_operator.reconcile import plan
from phoenix_operator.reconcile.reconciler import PRUNABLE_KINDS, new_secret_value
from phoenix_operator.render.objects import (
    COMPONENT_LABEL,
    DEPLOYMENT_LABEL,
    Target,
    generated_secrets,
    render_all,
)
from phoenix_operator.render.tritonconfig import batching_in_force
from phoenix_operator.settings import OperatorSettings
from phoenix_operator.status.conditions import DeploymentState


def first_pass_writes(owner: Mapping[str, Any], settings: OperatorSettings) -> list[Intent]:
    """What the reconciler's first pass writes for ``owner`` (a created PhoenixDeployment), with
    every listing empty: the same children, Secrets and replicas, and nothing read."""
    meta = owner["metadata"]
    target = Target(meta["name"], meta["namespace"], meta["uid"], meta.get("generation"))
    spec = PhoenixDeploymentSpec.model_validate(owner["spec"])
    desired = render_all(target, spec, batching_in_force(spec, {}), None, None, settings.network)
    live = plan.LiveChildren()
    for api_version, kind in PRUNABLE_KINDS:
        live.add_listing(api_version, kind, [])
    secret_intents, _ = plan.generated_secret_intents(
        target, generated_secrets(target, spec), {}, new_secret_value
    )
    return plan.apply_intents(target, spec, {}, desired, secret_intents, live)


def deployments_of(intents: Sequence[Intent]) -> int:
    return sum(isinstance(i, ApplyChild) and i.manifest["kind"] == "Deployment" for i in intents)


def measure_floor(
    api: Any,
    docs: list[dict[str, Any]],
    namespace: str,
    create_fleet: Callable[[Any, list[dict[str, Any]]], None],
    timeout_s: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Create the fleet, write every first pass, and time the children until all rolled out.

    ``api`` needs a connection pool of at least the reconciler's thread count (the bench's has 16).
    """
    from kubernetes import client

    settings = OperatorSettings.from_env()
    kube = Kube(api)
    writer = Writer(kube)
    custom, apps = client.CustomObjectsApi(api), client.AppsV1Api(api)
    n = len(docs)

    def listed(response: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        return items

    say(f"applying {n} PhoenixDeployments; no operator runs")
    t0 = time.time()
    create_fleet(api, docs)
    applied_s = time.time() - t0
    owners = listed(
        custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, PLURAL, _preload_content=False
        )
    )
    passes = [first_pass_writes(owner, settings) for owner in owners]
    expected = sum(deployments_of(p) for p in passes)
    say(f"writing {sum(map(len, passes))} children on {settings.reconcile_workers} threads")
    with ThreadPoolExecutor(settings.reconcile_workers, thread_name_prefix="floor") as pool:
        writes = sum(len(done.writes) for done in pool.map(writer.perform, passes))
    written_s = time.time() - t0
    rendered_s: float | None = None
    ready_s: float | None = None
    ready = 0
    deadline = time.monotonic() + timeout_s
    said = time.time()
    while time.monotonic() < deadline:
        children = listed(
            apps.list_namespaced_deployment(
                namespace, label_selector=DEPLOYMENT_LABEL, _preload_content=False
            )
        )
        tritons = sum(c["metadata"].get("labels", {}).get(COMPONENT_LABEL) == "triton" for c in children)
        if rendered_s is None and tritons >= n:
            rendered_s = time.time() - t0
        ready = sum(DeploymentState.from_object(child).rolled_out for child in children)
        if ready >= expected:
            ready_s = time.time() - t0
            break
        if time.time() - said >= 30:
            say(f"{ready}/{expected} child Deployments rolled out after {time.time() - t0:.0f}s")
            said = time.time()
        time.sleep(max(1.0, n / 200))
    say(f"{ready}/{expected} child Deployments rolled out after {time.time() - t0:.1f}s")
    return {
        "mode": "floor",
        "deployments": n,
        "applied_s": round(applied_s, 2),
        "written_s": round(written_s, 2),
        "rendered_s": None if rendered_s is None else round(rendered_s, 2),
        "ready_s": None if ready_s is None else round(ready_s, 2),
        "ready": ready,
        "child_deployments": expected,
        "writes": writes,
        "writer_threads": settings.reconcile_workers,
    }
