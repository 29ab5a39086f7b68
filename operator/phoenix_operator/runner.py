"""`phoenix run`: the operator process (Kopf underneath) with production settings."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click
import kopf

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.settings import OperatorSettings

log = logging.getLogger("phoenix_operator")

PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    """Every handler the operator runs, in a registry of its own, timed by ``settings``."""
    from phoenix_operator.runtime import control, reconcile

    registry = kopf.OperatorRegistry()
    # An explicit registry has none of Kopf's fallback logins: the kubernetes client's, as Kopf's
    # default registry would pick (kubeconfig, else the pod's service account).
    kopf.on.login(registry=registry)(kopf.login_via_client)
    reconcile.register(registry, settings)
    control.register(registry)
    return registry


@dataclass(frozen=True)
class PeeringCheck:
    """What peering needs before Kopf can start handling anything, said in one line."""

    #: The operator cannot work: exit with this line (the fix is in it).
    fatal: str | None = None
    #: The operator will wait (Kopf resumes by itself once the object exists): log this line.
    waiting: str | None = None


def _peering_kind(clusterwide: bool) -> tuple[str, str]:
    return ("ClusterKopfPeering", "clusterkopfpeerings") if clusterwide else ("KopfPeering", "kopfpeerings")


def judge_peering(
    name: str, clusterwide: bool, crd_served: bool, missing_in: Sequence[str], unreadable: str | None = None
) -> PeeringCheck:
    """Turn what the API server said about peering into the line to log (pure).

    Kopf with a named peering waits, silently and for ever, for a peering CRD that is not
    installed, and handles nothing while its peering object does not exist (Kopf never creates
    it). A missing CRD is fatal here (Kopf does not notice one installed later); a missing object
    is waited for, because Helm creates it alongside the operator's pod.
    """
    kind, plural = _peering_kind(clusterwide)
    if unreadable is not None:
        return PeeringCheck(
            waiting=f"could not check peering ({kind} {name!r}): {unreadable}; if the operator stays "
            f"idle, check that {plural}.{PEERING_GROUP} is installed and the object exists"
        )
    if not crd_served:
        return PeeringCheck(
            fatal=f"peering is on (--peering {name}) but the cluster has no {kind} CRD "
            f"({plural}.{PEERING_GROUP}): Kopf would wait for it for ever. Install it with "
            f"`kubectl apply --server-side -f crds/` (or the chart), or pass --standalone to run "
            f"a single replica without peering"
        )
    if missing_in:
        where = "cluster-wide" if clusterwide else f"in namespace(s) {', '.join(missing_in)}"
        return PeeringCheck(
            waiting=f"waiting for {kind} {name!r} {where}: Kopf never creates it and handles nothing "
            f"until it exists (the chart creates it; by hand: `kubectl apply -f` a {kind} named {name!r} "
            f"{'' if clusterwide else 'in each watched namespace '}— see docs/operator.md), or pass "
            f"--standalone"
        )
    return PeeringCheck()


def check_peering(api_client: Any, name: str, namespaces: Sequence[str], clusterwide: bool) -> PeeringCheck:
    """Ask the API server whether peering can work: is the CRD served, does the object exist.

    Lists with a field selector (the chart's RBAC grants list/watch on peerings, not get);
    a 404 on the list means the resource type is not served, i.e. the CRD is missing.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    api = client.CustomObjectsApi(api_client)
    _, plural = _peering_kind(clusterwide)
    selector = f"metadata.name={name}"
    missing: list[str] = []
    try:
        if clusterwide:
            found = api.list_cluster_custom_object(
                PEERING_GROUP, PEERING_VERSION, plural, field_selector=selector
            )
            if not _has_items(found):
                missing.append("")
        else:
            for namespace in exact_names(namespaces):
                found = api.list_namespaced_custom_object(
                    PEERING_GROUP, PEERING_VERSION, namespace, plural, field_selector=selector
                )
                if not _has_items(found):
                    missing.append(namespace)
    except ApiException as exc:
        if exc.status == 404:
            return judge_peering(name, clusterwide, crd_served=False, missing_in=())
        return judge_peering(name, clusterwide, True, (), unreadable=f"HTTP {exc.status} {exc.reason}")
    except Exception as exc:  # unreachable API server etc.: Kopf will report it in its own words
        return judge_peering(name, clusterwide, True, (), unreadable=f"{type(exc).__name__}: {exc}")
    return judge_peering(name, clusterwide, crd_served=True, missing_in=missing)


def exact_names(namespaces: Sequence[str]) -> list[str]:
    """The namespaces that can be looked up by name: Kopf also accepts glob patterns."""
    return [n for n in namespaces if not any(c in n for c in "*?[!")]


def _has_items(answer: object) -> bool:
    return isinstance(answer, dict) and bool(answer.get("items"))


#: How long start-up waits for the API server to serve PhoenixDeployments: its cache of a CRD
#: applied just before answers 429 until filled, and an API server restarting answers nothing.
SERVED_WAIT_S = 60.0


@dataclass(frozen=True)
class ServedCheck:
    """Whether the operator's account can list PhoenixDeployments where it watches, in one line."""

    ok: bool = False
    #: The operator cannot work: exit with this line (the fix is in it).
    fatal: str | None = None
    #: Likely to pass soon (a cache filling, an API server starting): ask again.
    retry: str | None = None


def judge_served(where: str, status: int | None, detail: str) -> ServedCheck:
    """One answer to listing PhoenixDeployments ``where``: HTTP ``status`` (None: no answer)."""
    if status == 200:
        return ServedCheck(ok=True)
    if status == 404:
        return ServedCheck(
            fatal=f"the cluster does not serve PhoenixDeployments (no CRD {PLURAL}.{API_GROUP}): "
            "install it with `kubectl apply --server-side -f crds/` (or the chart)"
        )
    if status in (401, 403):
        return ServedCheck(
            fatal=f"the operator's account may not list PhoenixDeployments {where} (HTTP {status} "
            f"{detail}): grant it the chart's RBAC (charts/phoenix-operator, or `helm template` "
            "its Role/ClusterRole) for the namespaces it watches"
        )
    return ServedCheck(retry=f"listing PhoenixDeployments {where}: {detail}")


def check_served(
    api_client: Any,
    namespaces: Sequence[str],
    clusterwide: bool,
    wait_s: float = SERVED_WAIT_S,
    say: Callable[[str], None] = log.info,
) -> ServedCheck:
    """List PhoenixDeployments where the operator watches, until the answer is final or ``wait_s``.

    Kopf would log a refused list or watch and retry for ever (a missing CRD or RBAC never
    heals by itself) and logs a cache still filling as an error; this says which it is.
    """
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from phoenix_operator.clients.writer import api_message
    from phoenix_operator.cluster.waiting import WaitTimeout, wait_for

    api = client.CustomObjectsApi(api_client)
    places: list[tuple[str, str | None]] = [("cluster-wide", None)]
    if not clusterwide:
        places = [(f"in namespace {n}", n) for n in exact_names(namespaces)]
    deadline = time.monotonic() + wait_s
    answers: list[ServedCheck] = []

    def answer(where: str, namespace: str | None) -> bool:
        try:
            if namespace is None:
                api.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, limit=1)
            else:
                api.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, limit=1)
            check = judge_served(where, 200, "")
        except ApiException as exc:
            check = judge_served(where, exc.status, f"{exc.reason}: {api_message(exc)}")
        except Exception as exc:  # no answer at all: refused, timed out, TLS
            check = judge_served(where, None, f"{type(exc).__name__}: {exc}")
        if check.retry and not any(a.retry for a in answers):
            say(f"waiting for the API server to serve PhoenixDeployments: {check.retry}")
        answers.append(check)
        return check.ok

    for where, namespace in places:
        try:
            wait_for(
                functools.partial(answer, where, namespace),
                timeout=max(0.0, deadline - time.monotonic()),
                interval=1.0,
                ignore=(),
                abort=lambda: answers[-1].fatal,
                description=f"PhoenixDeployments served {where}",
            )
        except (WaitTimeout, RuntimeError):
            last = answers[-1]
            return last if last.fatal else ServedCheck(fatal=f"gave up after {wait_s:g}s {last.retry}")
    return ServedCheck(ok=True)


@click.command("run")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (cluster mode).")
@click.option("--standalone", is_flag=True, help="No peering: run even if another replica is active.")
@click.option(
    "--peering",
    "peering_name",
    default="phoenix-operator",
    show_default=True,
    help="Kopf peering object; with two replicas only the one with the highest priority acts.",
)
@click.option("--priority", type=int, default=0, show_default=True, help="Peering priority of this replica.")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint served by Kopf ('' to disable).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=8081,
    show_default=True,
    help="Port of the operator's own Prometheus metrics (0 to disable).",
)
@click.option("--verbose", is_flag=True)
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering_name: str,
    priority: int,
    liveness_endpoint: str,
    metrics_port: int,
    verbose: bool,
) -> None:
    """Run the operator against whatever KUBECONFIG (or the in-cluster account) points to."""
    if not namespaces and not all_namespaces:
        env_ns = os.environ.get("PHOENIX_WATCH_NAMESPACES", "")
        namespaces = tuple(n for n in env_ns.split(",") if n)
        if not namespaces:
            raise click.UsageError("pass --namespace NS (repeatable) or --all-namespaces")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        settings = OperatorSettings.from_env()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    registry = build_registry(settings)
    from kubernetes import client as k8s_client

    from phoenix_operator.runtime.reconcile import load_kube_config

    try:
        load_kube_config()
        unreadable = None
    except Exception as exc:  # Kopf's own login then says what is wrong
        unreadable = str(exc)
    checks_client = k8s_client.ApiClient() if unreadable is None else None
    if not standalone:
        if checks_client is None:
            peering = judge_peering(peering_name, all_namespaces, True, (), unreadable=unreadable)
        else:
            peering = check_peering(checks_client, peering_name, namespaces, all_namespaces)
        if peering.fatal:
            log.error(peering.fatal)
            sys.exit(2)
        if peering.waiting:
            log.warning(peering.waiting)
    if checks_client is not None:
        served = check_served(checks_client, namespaces, all_namespaces)
        if served.fatal:
            log.error(served.fatal)
            sys.exit(2)
    if metrics_port:
        from phoenix_operator.runtime import metrics as opmetrics

        opmetrics.serve(metrics_port)
    from phoenix_operator.runtime.managed_fields import drop_managed_fields

    drop_managed_fields()
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=kopf.Memo(settings=settings),
            clusterwide=all_namespaces,
            namespaces=list(namespaces),
            standalone=standalone,
            # Naming a peering makes it mandatory in Kopf (the chart installs its CRDs);
            # standalone names none.
            peering_name=None if standalone else peering_name,
            priority=priority,
            liveness_endpoint=liveness_endpoint or None,
        )
    )
