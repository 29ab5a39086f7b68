"""The real parts the demo runs around the twin: cluster, Prometheus, Milvus Lite, the operator.

Each part is started by the launcher the tests use (``LocalCluster``, ``LocalPrometheus``,
``LocalMilvus``) or, for the operator, exactly as the tests start it (``python -m
phoenix_operator.cli run`` as a subprocess with endpoint overrides), and :class:`ClusterWatch`
reads the cluster back once a second: the Triton Deployment, its pods and the PhoenixDeployment's
status. Every wall-clock time is ``time.time()``; the demo converts to simulated seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.cluster.local import LocalCluster, tail
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.demo.spec import KWOK_READY_DELAY
from phoenix_operator.render.objects import triton_name

__all__ = [
    "ClusterWatch",
    "OperatorProcess",
    "Snapshot",
    "apply_crd",
    "apply_documents",
    "default_demo_cluster_dir",
    "recreate_namespace",
]


def default_demo_cluster_dir() -> Path:
    """``$XDG_CACHE_HOME/phoenix-operator/demo-cluster``: the demo's own cluster, never the default one."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "phoenix-operator" / "demo-cluster"


def supports_ready_delay(cluster: LocalCluster) -> bool:
    """Whether the cluster's kwok honours the pod-ready delay annotation (clusters started by an
    older version do not, and new Triton pods would turn Ready without a warm-up)."""
    try:
        return KWOK_READY_DELAY in (cluster.state_dir / "kwok.yaml").read_text()
    except OSError:
        return False


# ----------------------------------------------------------------------------- API objects


def api_client(kubeconfig: Path) -> Any:
    from kubernetes import config as kube_config

    return kube_config.new_client_from_config(config_file=str(kubeconfig))


def apply_crd(client: Any) -> None:
    """Install (or update) the PhoenixDeployment CRD generated from the models, and wait for it."""
    from kubernetes import dynamic

    from phoenix_operator.api.crdgen import build_crd

    crd = build_crd()
    resource = dynamic.DynamicClient(client).resources.get(
        api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
    )
    resource.server_side_apply(
        body=crd, name=crd["metadata"]["name"], field_manager="phoenix-demo", force_conflicts=True
    )

    def established() -> bool:
        live = resource.get(name=crd["metadata"]["name"]).to_dict()
        return any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in (live.get("status") or {}).get("conditions") or []
        )

    wait_for(established, timeout=60, interval=0.2, description="the PhoenixDeployment CRD to be established")


def recreate_namespace(client: Any, namespace: str, timeout: float = 120.0) -> bool:
    """Delete ``namespace`` if it exists (a previous ``--keep`` run), wait until it is gone, create it.

    Returns whether an old namespace was removed.
    """
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    core = k8s.CoreV1Api(client)
    try:
        core.read_namespace(namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
        return False
    # The PhoenixDeployments there carry the finalizer of an operator that is gone (the kept run
    # stopped it): release them, or the namespace would wait for it forever.
    custom = k8s.CustomObjectsApi(client)
    listing: Any = custom.list_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL)
    for item in listing.get("items", []):
        if item["metadata"].get("finalizers"):
            custom.patch_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                item["metadata"]["name"],
                {"metadata": {"finalizers": None}},
            )
    removed = True
    try:
        core.delete_namespace(namespace)
    except ApiException as exc:
        if exc.status not in (404, 409):  # 409: already terminating
            raise
    if removed:

        def gone() -> bool:
            try:
                core.read_namespace(namespace)
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_for(gone, timeout=timeout, interval=0.3, description=f"namespace {namespace} to be deleted")
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=namespace)))
    return removed


def apply_documents(client: Any, documents: list[dict[str, Any]]) -> list[str]:
    """Server-side apply each document (Secret, PhoenixDeployment, ...); returns ``Kind/name`` lines."""
    from kubernetes import dynamic

    dyn = dynamic.DynamicClient(client)
    applied = []
    for doc in documents:
        meta = doc["metadata"]
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        resource.server_side_apply(
            body=doc,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager="phoenix-demo",
            force_conflicts=True,
        )
        applied.append(f"{doc['kind']}/{meta['name']}")
    return applied


# ----------------------------------------------------------------------------- the operator


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class OperatorProcess:
    """``phoenix run --namespace NS --standalone`` as a subprocess, its output in ``log_path``."""

    namespace: str
    env: Mapping[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    liveness_url: str = ""

    def start(self, timeout: float = 90.0) -> OperatorProcess:
        liveness, metrics = pick_ports(2)
        self.liveness_url = f"http://127.0.0.1:{liveness}/healthz"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "phoenix_operator.cli",
                    "run",
                    "--namespace",
                    self.namespace,
                    "--standalone",
                    "--liveness",
                    self.liveness_url,
                    "--metrics-port",
                    str(metrics),
                ],
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        wait_for(self._alive, timeout=timeout, interval=0.2, description="the operator's liveness endpoint")
        return self

    def _alive(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{tail(self.log_path, 30)}")
        with urllib.request.urlopen(self.liveness_url, timeout=2) as response:
            return bool(response.status == 200)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def operator_env(
    kubeconfig: Path, *, milvus: str, triton: str, resync_seconds: float = 5.0
) -> dict[str, str]:
    """The operator's environment: the demo cluster, and every in-cluster address it cannot reach
    from here mapped to the local server that plays it (Milvus Lite; the twin's Triton API)."""
    env = dict(os.environ)
    env.update(
        {
            "KUBECONFIG": str(kubeconfig),
            "PHOENIX_RESYNC_SECONDS": f"{resync_seconds:g}",
            "PHOENIX_MILVUS_TIMEOUT_SECONDS": "5",
            "PHOENIX_ENDPOINT_OVERRIDES": json.dumps({"*.svc:19530": milvus, "*:8000": triton}),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


# ----------------------------------------------------------------------------- watching


@dataclass
class PodLife:
    """One Triton pod as the watch saw it (wall-clock seconds)."""

    created: float
    ready: float | None = None
    gone: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """One poll of the cluster."""

    at: float
    desired: int
    ready: int
    #: Pods holding a GPU: created and not yet gone (warming, ready or terminating).
    provisioned: int
    status: Mapping[str, Any]


@dataclass
class ClusterWatch:
    """Polls the deployment about once a second; calls ``on_ready`` whenever the Ready count changes."""

    client: Any
    namespace: str
    name: str
    on_ready: Callable[[int], None] | None = None
    interval_s: float = 1.0
    snapshots: list[Snapshot] = field(default_factory=list)
    pods: dict[str, PodLife] = field(default_factory=dict)
    #: Every control-loop decision seen in status, in order (status keeps only the last few).
    decisions: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _ready: int | None = None

    def poll(self) -> Snapshot:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException

        apps, core = k8s.AppsV1Api(self.client), k8s.CoreV1Api(self.client)
        custom = k8s.CustomObjectsApi(self.client)
        now = time.time()
        desired = 0
        selector = None
        try:
            deployment = apps.read_namespaced_deployment(triton_name(self.name), self.namespace)
            desired = int(deployment.spec.replicas or 0)
            labels = deployment.spec.selector.match_labels or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        except ApiException as exc:
            if exc.status != 404:
                raise
        ready = provisioned = 0
        if selector:
            pods: list[Any] = core.list_namespaced_pod(self.namespace, label_selector=selector).items
            alive = set()
            for pod in pods:
                uid = pod.metadata.uid
                alive.add(uid)
                life = self.pods.setdefault(uid, PodLife(created=now))
                terminating = pod.metadata.deletion_timestamp is not None
                is_ready = not terminating and any(
                    c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
                )
                if is_ready and life.ready is None:
                    life.ready = now
                if terminating and life.gone is None:
                    life.gone = now  # leaves the Service at once; kwok deletes it right after
                ready += is_ready
                provisioned += not terminating
            for uid, life in self.pods.items():
                if uid not in alive and life.gone is None:
                    life.gone = now
        status: dict[str, Any] = {}
        try:
            body: Any = custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, self.namespace, PLURAL, self.name
            )
            status = dict(body.get("status") or {})
        except ApiException as exc:
            if exc.status != 404:
                raise
        for entry in status.get("decisions") or []:
            key = (str(entry.get("time")), str(entry.get("summary")))
            if key not in self._seen:
                self._seen.add(key)
                self.decisions.append(dict(entry))
        snap = Snapshot(at=now, desired=desired, ready=ready, provisioned=provisioned, status=status)
        with self._lock:
            self.snapshots.append(snap)
        if self.on_ready is not None and ready != self._ready and selector:
            self._ready = ready
            self.on_ready(ready)
        return snap

    def follow(self, on_ready: Callable[[int], None]) -> None:
        """Call ``on_ready`` with the Ready count at the next poll and at every change after it."""
        self.on_ready = on_ready
        self._ready = None

    @property
    def latest(self) -> Snapshot | None:
        with self._lock:
            return self.snapshots[-1] if self.snapshots else None

    def start(self) -> ClusterWatch:
        self._thread = threading.Thread(target=self._run, name="cluster-watch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception as exc:  # the API server hiccups under load; the next poll retries
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
            self._stop.wait(max(0.05, self.interval_s - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
