"""Kopf handlers: thin adapters from Kopf's events to `Reconciler.reconcile`.

Nothing is registered or built at import: `register` adds the handlers to a registry with the
settings read at start-up, and the start-up handler builds the process objects (`Process`) into
Kopf's operator memo, from which every handler takes them.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import kopf
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from phoenix_operator import API_GROUP, API_VERSION, KIND, PLURAL
from phoenix_operator.clients.kube import Kube
from phoenix_operator.intents import PostEvent, WriteStatus
from phoenix_operator.reconcile.reconciler import Outcome, Reconciler
from phoenix_operator.render.objects import DEPLOYMENT_LABEL
from phoenix_operator.runtime import metrics as opmetrics
from phoenix_operator.settings import OperatorSettings
from phoenix_operator.status.conditions import DeploymentState

log = logging.getLogger("phoenix_operator")
RESOURCE = (API_GROUP, API_VERSION, PLURAL)
#: The operator memo's key for the process objects.
PROCESS = "process"


def load_kube_config() -> None:
    """In-cluster credentials when running in a pod, else KUBECONFIG / ~/.kube/config."""
    try:
        k8s_config.load_incluster_config()
    except k8s_config.ConfigException:
        k8s_config.load_kube_config()


def api_client(ours: OperatorSettings, base: k8s_client.Configuration | None = None) -> k8s_client.ApiClient:
    """The process's one API client, with a connection for every thread that may use it at once.

    The client's default pool (five per CPU) is smaller than the handler and control-step
    threads together; every request beyond it opens, and then discards, a new TLS connection.
    """
    configuration = copy.copy(base) if base is not None else k8s_client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = ours.reconcile_workers + ours.control_workers + 2
    return k8s_client.ApiClient(configuration)


#: (namespace, name) of a PhoenixDeployment.
OwnerKey = tuple[str, str]


@dataclass
class Process:
    """What one operator process holds: built once at start-up, kept in Kopf's operator memo."""

    settings: OperatorSettings
    reconciler: Reconciler
    #: Kopf's executor for synchronous handlers (child-event refreshes run on it too).
    executor: Executor | None = None
    #: Coalesces bursts of child events into one status refresh per owner.
    children: Debouncer | None = None
    #: Child Deployments as the child watch last saw them, by (namespace, name): a control step
    #: sizes from its Triton Deployment's entry instead of reading it every interval. A plain
    #: dict rather than a Kopf index, which cost about 0.45 MB per deployment (measured at N = 100).
    deployments: dict[OwnerKey, DeploymentState] = field(default_factory=dict)
    #: One lock per object: Kopf runs timers concurrently with event handlers, and two passes
    #: interleaving their status writes could flip a condition back and forth. Keyed by
    #: (namespace, name), which a child's labels give without reading the owner.
    locks: dict[OwnerKey, threading.Lock] = field(default_factory=dict)
    locks_guard: threading.Lock = field(default_factory=threading.Lock)

    def lock_for(self, key: OwnerKey) -> threading.Lock:
        with self.locks_guard:
            return self.locks.setdefault(key, threading.Lock())

    def forget(self, key: OwnerKey) -> None:
        with self.locks_guard:
            self.locks.pop(key, None)


def process_of(memo: kopf.Memo) -> Process:
    """The process objects from a handler's memo (a per-object memo is a shallow copy of it)."""
    process: Process = memo[PROCESS]
    return process


def _configure_kopf(settings: kopf.OperatorSettings, ours: OperatorSettings) -> None:
    # Progress and diff-base in annotations: the status schema is strict (no `status.kopf`).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration"
    )
    # Only warnings become Events; the reconciler posts its own, once per state change.
    settings.posting.level = logging.WARNING
    # A stalled watch must not freeze the operator (Kopf's documented advice).
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 30
    # Threads for the synchronous handlers below (create/update/resume and the resync timer),
    # each held for one pass only. The control loop's daemons are async and never hold one of
    # these (they use their own pool of PHOENIX_CONTROL_WORKERS threads per step).
    settings.execution.max_workers = ours.reconcile_workers
    # Least privilege: without this Kopf lists namespaces and watches CRDs cluster-wide (runtime
    # discovery), which a namespaced install (Role/RoleBinding only) must not need. The CRDs are
    # installed before the operator (the chart's crds/) and namespaces are named exactly.
    settings.scanning.disabled = True
    # A standby takes over once the active replica's peering record expires: keep that short.
    settings.peering.lifetime = ours.peering_lifetime_seconds


async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Start-up: tune Kopf, then build the process objects into the operator memo."""
    ours: OperatorSettings = memo["settings"]
    _configure_kopf(settings, ours)

    def build() -> Reconciler:
        load_kube_config()
        return Reconciler(Kube(api_client(ours)), ours)

    reconciler = await asyncio.get_running_loop().run_in_executor(None, build)
    process = Process(ours, reconciler, executor=settings.execution.executor)
    process.children = Debouncer(
        CHILD_EVENT_DEBOUNCE_SECONDS, functools.partial(_refresh_in_executor, process)
    )
    memo[PROCESS] = process
    logger.info(
        f"reconciler: {ours.reconcile_workers} handler thread(s) (PHOENIX_RECONCILE_WORKERS), "
        f"resync every {ours.resync_seconds:g}s"
    )


class _Result(Protocol):
    status_patch: dict[str, Any]
    events: list[tuple[str, str, str]]


R = TypeVar("R", bound=_Result)


def run_exclusive(
    process: Process, body: Mapping[str, Any], work: Callable[[dict[str, Any]], R], *, deleting: bool = True
) -> R | None:
    """Run ``work`` on a fresh copy of the object under its lock, then write status and Events.

    Reconciler and control loop both write status (conditions included, as one list); reading
    the object again inside the lock means neither overwrites what the other just wrote.
    Returns None when the object is gone, or is being deleted and ``deleting`` is False.
    """
    meta = body["metadata"]
    with process.lock_for((meta["namespace"], meta["name"])):
        fresh = _read_owner(process, meta)
        if fresh is None or (not deleting and fresh["metadata"].get("deletionTimestamp")):
            return None
        result = work(fresh)
        _write_status(process, fresh, result)
    # Outside the lock: Events are notes, and the next pass on this object need not wait for them.
    _post_events(process, fresh, result)
    return result


class _Rebasable(_Result, Protocol):
    rebase: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[tuple[str, str, str]]]] | None


B = TypeVar("B", bound=_Rebasable)


def run_on_watched(process: Process, body: kopf.Body, work: Callable[[dict[str, Any]], B]) -> B | None:
    """Run ``work`` on Kopf's watched copy of the object under its lock; read it only to write.

    For the control loop, whose converged step writes nothing: a fresh read every interval
    would be most of the operator's API traffic at scale. When there is status to write, the
    object is read inside the lock and the result rebased on the status found there, so a
    write the watch has not delivered yet (the reconciler's, say) is not overwritten.
    """
    meta = body["metadata"]
    with process.lock_for((meta["namespace"], meta["name"])):
        seen = dict(body)
        result = work(seen)
        involved = seen
        if result.status_patch:
            fresh = _read_owner(process, meta)
            if fresh is None:
                return None
            if (fresh.get("status") or {}) != (seen.get("status") or {}) and result.rebase is not None:
                result.status_patch, result.events = result.rebase(fresh.get("status") or {})
            _write_status(process, fresh, result)
            involved = fresh
    _post_events(process, involved, result)
    return result


def _read_owner(process: Process, meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """The object as the API server has it now; None once it is gone."""
    return process.reconciler.kube.get(f"{API_GROUP}/{API_VERSION}", KIND, meta["name"], meta["namespace"])


def _write_status(process: Process, fresh: dict[str, Any], result: _Result) -> None:
    if result.status_patch:
        meta = fresh["metadata"]
        current = fresh.get("status") or {}
        process.reconciler.writer.perform(
            [WriteStatus(meta["name"], meta["namespace"], current, result.status_patch)]
        )


def _post_events(process: Process, involved: dict[str, Any], result: _Result) -> None:
    process.reconciler.writer.perform(
        PostEvent(involved, type_, reason, message) for type_, reason, message in result.events
    )


def _run(
    process: Process, body: Mapping[str, Any], from_timer: bool, deleting: bool = True
) -> Outcome | None:
    meta = body["metadata"]
    labels = {"namespace": meta["namespace"], "deployment": meta["name"]}
    try:
        outcome = run_exclusive(process, body, process.reconciler.reconcile, deleting=deleting)
    except Exception:
        opmetrics.RECONCILES.labels(**labels, result="error").inc()
        raise
    if outcome is None:
        return None
    result = "blocked" if outcome.retry_reason else "invalid" if outcome.invalid else "ok"
    opmetrics.RECONCILES.labels(**labels, result=result).inc()
    opmetrics.CHILD_WRITES.labels(**labels).inc(len(outcome.writes))
    opmetrics.observe_quality(meta["name"], meta["namespace"], outcome.quality)
    if outcome.retry_reason and not from_timer:
        raise kopf.TemporaryError(outcome.retry_reason, delay=process.settings.resync_seconds)
    return outcome


def on_change(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _run(process_of(memo), body, from_timer=False)


def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Drift check and status refresh; reads only, unless something drifted or changed."""
    _run(process_of(memo), body, from_timer=True)


def on_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Children go through ownerReferences (Kubernetes GC); only forget in-memory state."""
    meta = body["metadata"]
    process_of(memo).forget((meta["namespace"], meta["name"]))


#: How long a child's burst of events (a roll-out updates a Deployment's status several times a
#: second) is gathered into one status refresh of its owner.
CHILD_EVENT_DEBOUNCE_SECONDS = 1.0
#: Labels every child the operator renders carries (render/objects.py `labels`); the deployment
#: label names the owning PhoenixDeployment, also on the Jobs its CronJobs start.
CHILD_LABELS: dict[str, Any] = {
    "app.kubernetes.io/managed-by": "phoenix-operator",
    DEPLOYMENT_LABEL: kopf.PRESENT,
}


class Debouncer:
    """One pending run of ``action(key)`` per key, however many times the key is poked.

    A poke during the delay joins the pending run; a poke while the run is in progress schedules
    one more run after it (that run may have read the child before the change that caused the
    poke). Runs of different keys are independent. All calls come from one event loop.
    """

    def __init__(self, delay: float, action: Callable[[OwnerKey], Awaitable[None]]) -> None:
        self.delay = delay
        self.action = action
        self._dirty: dict[OwnerKey, bool] = {}
        self._tasks: dict[OwnerKey, asyncio.Task[None]] = {}

    def poke(self, key: OwnerKey) -> None:
        self._dirty[key] = True
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._drain(key))

    async def _drain(self, key: OwnerKey) -> None:
        try:
            while self._dirty.get(key):
                await asyncio.sleep(self.delay)
                self._dirty[key] = False
                try:
                    await self.action(key)
                except Exception:
                    # The resync covers it; one bad pass must not stop later refreshes.
                    log.exception("status refresh of %s failed", key)
        finally:
            self._tasks.pop(key, None)
            self._dirty.pop(key, None)

    @property
    def pending(self) -> int:
        return len(self._tasks)


def refresh_owner(process: Process, namespace: str, name: str) -> None:
    """The resync's pass for one PhoenixDeployment (status follows its children at once).

    Not for an owner being deleted: its children are going away on purpose (foreground
    deletion), and a pass would apply them again.
    """
    _run(process, {"metadata": {"namespace": namespace, "name": name}}, from_timer=True, deleting=False)


async def _refresh_in_executor(process: Process, key: OwnerKey) -> None:
    namespace, name = key
    # Kopf's contextvars (its Event queue) travel with the call, as for Kopf's own sync handlers.
    call = functools.partial(contextvars.copy_context().run, refresh_owner, process, namespace, name)
    await asyncio.get_running_loop().run_in_executor(process.executor, call)


async def on_child_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child changed: refresh its owner's status now instead of at the next resync.

    The refresh is the resync's own pass, under the owner's lock and in Kopf's executor, so
    status keeps a single writer and a child change that alters nothing writes nothing. The
    initial listing (type None) is skipped: the resume handler runs a full pass at start-up.
    A Deployment's state is also kept in ``Process.deployments`` for the control loop.
    """
    process = process_of(memo)
    meta = body.get("metadata") or {}
    if body.get("kind") == "Deployment" and meta.get("namespace") and meta.get("name"):
        key = (meta["namespace"], meta["name"])
        if event.get("type") == "DELETED":
            process.deployments.pop(key, None)
        else:
            process.deployments[key] = DeploymentState.from_object(body)
    if event.get("type") is None:
        return
    owner = (meta.get("labels") or {}).get(DEPLOYMENT_LABEL)
    children = process.children
    if owner and meta.get("namespace") and children is not None:
        children.poke((meta["namespace"], owner))


def probe(memo: kopf.Memo, **_: Any) -> str:
    return "ok" if PROCESS in memo else "starting"


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Add the reconciler's handlers to ``registry``, timed by ``settings``."""
    kopf.on.startup(registry=registry)(configure)
    for on in (kopf.on.resume, kopf.on.create):
        on(*RESOURCE, registry=registry)(on_change)
    kopf.on.update(*RESOURCE, field="spec", registry=registry)(on_change)
    kopf.timer(
        *RESOURCE,
        interval=settings.resync_seconds,
        initial_delay=settings.resync_seconds / 2,
        # A failed pass is retried at the resync period, not Kopf's default minute.
        backoff=settings.resync_seconds,
        registry=registry,
    )(resync)
    kopf.on.delete(*RESOURCE, optional=True, registry=registry)(on_delete)
    for group_version, plural in (
        ("apps/v1", "deployments"),
        ("apps/v1", "statefulsets"),
        ("batch/v1", "cronjobs"),
        ("batch/v1", "jobs"),
    ):
        group, version = group_version.split("/")
        kopf.on.event(group, version, plural, labels=CHILD_LABELS, registry=registry)(on_child_event)
    kopf.on.probe(id="reconciler", registry=registry)(probe)
