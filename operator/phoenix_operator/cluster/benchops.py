"""``phoenix bench operator``: the whole operator against its own local cluster, with N deployments.

A fresh control plane with kwok nodes, a real Prometheus and the real ``phoenix run`` process, so
the figures (time to Ready, control-loop drift, API requests, writes once converged, RSS) are the
operator's own, nothing shortcut. What runs and how each figure is measured: docs/scale.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.cluster.local import LocalCluster, tail
from phoenix_operator.cluster.manifests import NodeSpec
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import wait_for

MODES = ("off", "recommend", "auto")
NAMESPACE = "phoenix-bench"
BENCH_AGENT = "phoenix-bench"
#: Kopf's aiohttp client and the kubernetes package (the operator's reconciler and loop).
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")
ADMIN_USER = "kubernetes-admin"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
DRIFT_METRIC = "phoenix_control_step_interval_drift_ratio"
#: Every request by the admin identity (the operator and this bench), every write by anyone.
AUDIT_POLICY = f"""\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: Metadata
    users: [{ADMIN_USER}]
  - level: Metadata
    verbs: [{", ".join(sorted(WRITE_VERBS))}]
  - level: None
"""
#: One deployment's Triton pod takes one GPU; its gateway replicas about 1.5 CPUs: nodes for N with room.
GPUS_PER_NODE = 64
#: The autoscaled deployments' upper bound: the nodes must hold every one of them at it.
AUTO_MAX_REPLICAS = 2
#: The one metrics source's steady request rate, shared by every loop.
STEADY_RPS = 4.0
DEPLOYMENTS_PER_CPU_NODE = 20


# ============================================================================================
# Pure parts: the fleet, the audit log, the histogram
# ============================================================================================
def mode_of(index: int) -> str:
    return MODES[index % len(MODES)]


def fleet_doc(name: str, mode: str, prometheus_url: str, namespace: str, interval_s: int) -> dict[str, Any]:
    """A PhoenixDeployment without retrieval; loops read the one shared metrics source."""
    autoscaling: dict[str, Any] = {"mode": mode}
    if mode != "off":
        autoscaling |= {
            "minReplicas": 1,
            "maxReplicas": AUTO_MAX_REPLICAS,
            "prometheusUrl": prometheus_url,
            "intervalSeconds": interval_s,
            "ttftP95TargetSeconds": 3,
            "tuneBatching": False,
            # A load-tested prior, as a production spec carries (`phoenix plan --calibrate`):
            # the steady load below is a fifth of it, so a converged loop holds one replica.
            "replicaCapacity": {"requestsPerSecond": STEADY_RPS * 5},
            "metricsSelector": f'phoenix_deployment="fleet",namespace="{namespace}"',
        }
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "PhoenixDeployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": {
                "name": "llama-chat",
                "backend": "vllm",
                "maxBatchSize": 64,
                "repository": {"uri": "s3://models/llama"},
            },
            "batching": {"preferredBatchSizes": [8, 16], "maxQueueDelayMicroseconds": 2000},
            "priority": {
                "defaultClass": "standard",
                "classes": [
                    {"name": "urgent", "level": 1, "ttftTargetSeconds": 1.5},
                    {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
                ],
            },
            "gateway": {
                "routes": [
                    {"priorityClass": "urgent", "intents": ["lost_or_stolen_card", "compromised_card"]}
                ]
            },
            "autoscaling": autoscaling,
        },
    }


def node_shape(deployments: int) -> NodeSpec:
    """Fake nodes with room for every Triton pod (one GPU; the `auto` third at its maximum) and
    gateway pod, plus headroom."""
    autoscaled = sum(1 for i in range(deployments) if mode_of(i) == "auto")
    gpus = deployments + autoscaled * (AUTO_MAX_REPLICAS - 1)
    return NodeSpec(
        count=max(1, math.ceil(gpus / GPUS_PER_NODE)) + 1,
        gpus_per_node=GPUS_PER_NODE,
        cpu_nodes=max(1, math.ceil(deployments / DEPLOYMENTS_PER_CPU_NODE)) + 1,
        pods_per_node=max(110, GPUS_PER_NODE + 20),
    )


@dataclass(frozen=True)
class Request:
    """One API request the operator made, as the audit log recorded it."""

    at: float
    verb: str
    resource: str
    name: str
    subresource: str

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS

    def __str__(self) -> str:
        sub = f"/{self.subresource}" if self.subresource else ""
        return f"{self.verb} {self.resource}/{self.name}{sub}"


def operator_requests(
    lines: Iterable[str], namespace: str, agents: tuple[str, ...] = OPERATOR_AGENTS
) -> list[Request]:
    """The operator's requests (by default; ``agents``: user-agent prefixes) in ``namespace`` (or
    cluster-scoped), once each, in time order.

    Watches are audited when they end; a request seen at two stages is counted once.
    """
    seen: set[str] = set()
    out = []
    for line in lines:
        if not line.strip():
            continue
        entry = json.loads(line)
        agent = entry.get("userAgent") or ""
        if entry.get("user", {}).get("username") != ADMIN_USER or not agent.startswith(agents):
            continue
        ref = entry.get("objectRef") or {}
        if ref.get("namespace") not in (None, namespace) or entry["auditID"] in seen:
            continue
        seen.add(entry["auditID"])
        stamp = entry.get("requestReceivedTimestamp") or entry["stageTimestamp"]
        out.append(
            Request(
                at=datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp(),
                verb=entry["verb"],
                resource=ref.get("resource", ""),
                name=ref.get("name", ""),
                subresource=ref.get("subresource", ""),
            )
        )
    return sorted(out, key=lambda r: r.at)


def requests_by_kind(requests: Sequence[Request]) -> dict[str, int]:
    """Requests per ``verb resource[/subresource]`` over the run, most frequent first."""
    counts = Counter(f"{r.verb} {r.resource}{'/' + r.subresource if r.subresource else ''}" for r in requests)
    return dict(counts.most_common())


def audit_lines(path: Path) -> Iterator[str]:
    """Every line of the audit log, the files the API server rotated out (``audit-<time>.log``) first.

    The log rotates at 200 MB, which a run at N = 1,000 passes: reading only the current file
    loses the ramp.
    """
    rotated = sorted(path.parent.glob(f"{path.stem}-*{path.suffix}"))
    for file in [*rotated, path]:
        with file.open(errors="replace") as lines:
            yield from lines


def between(requests: Sequence[Request], start: float, end: float) -> list[Request]:
    return [r for r in requests if start <= r.at < end]


Buckets = list[tuple[float, float]]


def histogram_buckets(text: str, name: str) -> Buckets:
    """Cumulative (upper bound, count) pairs of histogram ``name`` in Prometheus text exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sorted(
                (float(s.labels["le"]), s.value) for s in family.samples if s.name == f"{name}_bucket"
            )
    return []


def bucket_difference(after: Buckets, before: Buckets) -> Buckets:
    """What was observed between two scrapes of the same histogram."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def histogram_quantile(buckets: Buckets, q: float) -> float | None:
    """PromQL's ``histogram_quantile``: linear within the bucket; None without observations."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


def share_within(buckets: Buckets, bound: float) -> float | None:
    """Share of observations ≤ ``bound`` (exact when ``bound`` is a bucket edge)."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    return dict(buckets).get(bound, 0.0) / total


def is_ready(item: dict[str, Any]) -> bool:
    """Ready=True in status, and that status is about the current spec."""
    status = item.get("status") or {}
    if status.get("observedGeneration") != item["metadata"].get("generation"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])


# ============================================================================================
# Processes
# ============================================================================================
class _BenchCluster(LocalCluster):
    """The local cluster with reads audited too (for ``api_rps``), only for the admin identity."""

    def _write_audit_policy(self) -> Path:
        path = self.state_dir / "audit-policy.yaml"
        path.write_text(AUDIT_POLICY)
        return path


@dataclass
class _Operator:
    proc: subprocess.Popen[bytes]
    metrics_url: str
    log_path: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    def rss_mb(self, field: str = "VmHWM") -> float:
        """Peak resident set (``VmHWM``), or the current one (``VmRSS``), in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc status")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _start_operator(local: LocalCluster, workdir: Path, resync_s: float) -> _Operator:
    liveness, metrics = pick_ports(2)
    log_path = workdir / "operator.log"
    env = dict(os.environ) | {
        "KUBECONFIG": str(local.kubeconfig),
        "PHOENIX_METRICS_ADDRESS": "127.0.0.1",
        "PHOENIX_RESYNC_SECONDS": f"{resync_s:g}",
        "PYTHONUNBUFFERED": "1",
    }
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "phoenix_operator.cli",
                "run",
                "--namespace",
                NAMESPACE,
                "--standalone",
                "--liveness",
                f"http://127.0.0.1:{liveness}/healthz",
                f"--metrics-port={metrics}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    operator = _Operator(proc, f"http://127.0.0.1:{metrics}/metrics", log_path)

    def alive() -> bool:
        if proc.poll() is not None:
            raise click.ClickException(f"the operator exited with {proc.returncode}:\n{tail(log_path, 30)}")
        with urllib.request.urlopen(f"http://127.0.0.1:{liveness}/healthz", timeout=2) as response:
            return bool(response.status == 200)

    try:
        wait_for(
            alive,
            timeout=120,
            interval=0.2,
            description="the operator's liveness endpoint",
            ignore=(OSError,),
        )
    except BaseException:
        operator.stop()
        raise
    return operator


def _feed_steady_load(state: Any) -> Callable[[], None]:
    """4 requests/s, 0.4 s each: a fifth of a replica's capacity, so every loop holds still."""
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(1.0 / STEADY_RPS):
            state.record_request(request_s=0.4, queue_s=0.1, compute_s=0.3, priority_class="standard")
            state.record_batch(1)

    thread = threading.Thread(target=feed, daemon=True, name="bench-load")
    thread.start()

    def stop_feeding() -> None:
        stop.set()
        thread.join(timeout=5)

    return stop_feeding


@contextlib.contextmanager
def _metrics_source(workdir: Path) -> Iterator[str]:
    """A Triton-compatible metrics server under steady load and a real Prometheus scraping it."""
    from phoenix_operator.local.prometheus import LocalPrometheus, ScrapeTarget
    from phoenix_operator.local.triton_metrics import TritonMetricsServer, TritonMetricsState

    state = TritonMetricsState(model="llama-chat")
    (port,) = pick_ports(1)
    with TritonMetricsServer([state], port):
        stop_feeding = _feed_steady_load(state)
        labels = {"phoenix_deployment": "fleet", "namespace": NAMESPACE}
        prometheus = LocalPrometheus(
            [ScrapeTarget(f"127.0.0.1:{port}", labels, job="triton")], workdir=workdir / "prometheus"
        )
        try:
            prometheus.start()
            prometheus.wait_for_targets_up()
            yield prometheus.url
        finally:
            stop_feeding()
            prometheus.stop()


def _api_client(local: LocalCluster) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config

    configuration = client.Configuration()
    kube_config.load_kube_config(config_file=str(local.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    api = client.ApiClient(configuration)
    api.user_agent = BENCH_AGENT
    return api


def _install_crd(local: LocalCluster) -> None:
    """The PhoenixDeployment CRD as ``phoenix crd`` renders it, and the bench namespace."""
    from phoenix_operator.api.crdgen import build_crd

    api = local.api()
    crd = build_crd()
    code, body = api.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    if code != 201:
        raise click.ClickException(f"could not create the CRD: HTTP {code} {body}")
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}"

    def established() -> bool:
        _, got = api.request("GET", path)
        conditions = (got.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    wait_for(established, timeout=60, interval=0.2, description="the CRD to be established")
    code, body = api.request("POST", "/api/v1/namespaces", {"metadata": {"name": NAMESPACE}})
    if code != 201:
        raise click.ClickException(f"could not create namespace {NAMESPACE}: HTTP {code} {body}")
    account = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default"
    wait_for(
        lambda: api.request("GET", account)[0] == 200,
        timeout=60,
        interval=0.2,
        description="the bench namespace's default ServiceAccount",
    )


# ============================================================================================
# The run
# ============================================================================================
@dataclass(frozen=True)
class BenchOptions:
    deployments: int
    interval_s: int = 15
    resync_s: float = 30.0
    settle_s: float | None = None
    window_s: float | None = None
    timeout_s: float = 900.0
    #: No operator: the bench writes the children itself (`benchfloor`).
    floor: bool = False

    @property
    def settle(self) -> float:
        return self.settle_s if self.settle_s is not None else 2.0 * self.interval_s

    @property
    def window(self) -> float:
        return self.window_s if self.window_s is not None else max(3.0 * self.interval_s, 2.0 * self.resync_s)


def run_bench(
    options: BenchOptions, workdir: Path, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Start everything, apply the fleet, measure, tear everything down; returns the figures."""
    started = time.monotonic()
    load_before = os.getloadavg()
    local = _BenchCluster(
        workdir / "cluster", node_shape(options.deployments), die_with_parent=True, quiet=True
    )
    say(f"starting a local cluster with {len(local.nodes.names())} fake nodes")
    local.up(timeout=300)
    try:
        _install_crd(local)
        api = _api_client(local)
        if options.floor:
            figures = _run_floor(options, api, local, say)
        else:
            figures = _run_operator(options, api, local, workdir, say)
    finally:
        local.down()
    return figures | _machine(started, load_before)


def _machine(started: float, load_before: tuple[float, float, float]) -> dict[str, Any]:
    """CPUs and load around the run: a figure taken on a busy machine says so."""
    return {
        "cpus": os.cpu_count(),
        "load_1m_before": round(load_before[0], 2),
        "load_1m_after": round(os.getloadavg()[0], 2),
        "bench_s": round(time.monotonic() - started, 1),
    }


def _run_operator(
    options: BenchOptions, api: Any, local: LocalCluster, workdir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """The real ``phoenix run`` against the fleet and one steady metrics source."""
    with _metrics_source(workdir) as prometheus_url:
        say("starting the operator (phoenix run)")
        operator = _start_operator(local, workdir, options.resync_s)
        try:
            figures = _measure(options, api, operator, local, prometheus_url, say)
        finally:
            operator.stop()
    figures["operator_log_errors"] = sum(
        " ERROR " in line for line in operator.log_path.read_text(errors="replace").splitlines()
    )
    return figures


def _run_floor(
    options: BenchOptions, api: Any, local: LocalCluster, say: Callable[[str], None]
) -> dict[str, Any]:
    """The same fleet's children written by the bench itself: the cluster's share of ``ready_s``."""
    from phoenix_operator.cluster.benchfloor import measure_floor

    docs = [
        fleet_doc(f"fleet-{i:04d}", mode_of(i), "http://127.0.0.1:9", NAMESPACE, options.interval_s)
        for i in range(options.deployments)
    ]
    figures = measure_floor(api, docs, NAMESPACE, _create_fleet, options.timeout_s, say)
    requests = operator_requests(audit_lines(local.audit_log), NAMESPACE, agents=(BENCH_AGENT,))
    figures["api_requests_by_kind"] = requests_by_kind(requests)
    return figures


def _create_fleet(api: Any, docs: list[dict[str, Any]]) -> None:
    from kubernetes import client

    custom = client.CustomObjectsApi(api)

    def create(doc: dict[str, Any]) -> None:
        custom.create_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, doc)

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="bench-create") as pool:
        list(pool.map(create, docs))


def _measure(
    options: BenchOptions,
    api: Any,
    operator: _Operator,
    local: LocalCluster,
    prometheus_url: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from kubernetes import client

    n = options.deployments
    names = [f"fleet-{i:04d}" for i in range(n)]
    docs = [
        fleet_doc(name, mode_of(i), prometheus_url, NAMESPACE, options.interval_s)
        for i, name in enumerate(names)
    ]
    custom = client.CustomObjectsApi(api)
    apps = client.AppsV1Api(api)
    # The bench shares the machine with what it measures: poll no more than needed, and read raw
    # JSON (the client's typed models for 1,000 Deployments cost a core for seconds).
    poll_s = max(1.0, n / 200)

    def items(response: Any) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(response.data)["items"]
        return listed

    say(f"applying {n} PhoenixDeployments")
    t0 = time.time()
    cpu0 = operator.cpu_seconds()
    _create_fleet(api, docs)
    applied_s = time.time() - t0
    rendered_s: float | None = None
    ready_s: float | None = None
    ready = 0
    deadline = time.monotonic() + options.timeout_s
    said = time.time()
    while time.monotonic() < deadline:
        if operator.proc.poll() is not None:
            raise click.ClickException(f"the operator exited:\n{tail(operator.log_path, 30)}")
        if rendered_s is None:
            tritons = apps.list_namespaced_deployment(
                NAMESPACE, label_selector="app.kubernetes.io/component=triton", _preload_content=False
            )
            if len(items(tritons)) >= n:
                rendered_s = time.time() - t0
        listed = custom.list_namespaced_custom_object(
            API_GROUP, API_VERSION, NAMESPACE, PLURAL, _preload_content=False
        )
        ready = sum(is_ready(item) for item in items(listed))
        if ready == n:
            ready_s = time.time() - t0
            break
        if time.time() - said >= 30:
            say(f"{ready}/{n} Ready after {time.time() - t0:.0f}s")
            said = time.time()
        time.sleep(poll_s)
    ready_at = time.time()
    cpu_ramp = operator.cpu_seconds() - cpu0
    say(f"{ready}/{n} Ready after {ready_at - t0:.1f}s; settling for {options.settle:g}s")
    time.sleep(options.settle)
    drift_before = histogram_buckets(operator.metrics(), DRIFT_METRIC)
    cpu1 = operator.cpu_seconds()
    window_start = time.time()
    say(f"converged window: {options.window:g}s")
    time.sleep(options.window)
    window_end = time.time()
    drift_after = histogram_buckets(operator.metrics(), DRIFT_METRIC)
    cpu_window = operator.cpu_seconds() - cpu1
    rss_mb, rss_mb_converged = operator.rss_mb(), operator.rss_mb("VmRSS")
    requests = operator_requests(audit_lines(local.audit_log), NAMESPACE)
    window = between(requests, window_start, window_end)
    ramp = between(requests, t0, ready_at)
    writes = [r for r in window if r.write]
    drift = bucket_difference(drift_after, drift_before)
    why = _why_written(custom, sorted({r.name for r in writes if r.resource == PLURAL}))

    def rounded(value: float | None, digits: int = 3) -> float | None:
        return None if value is None else round(value, digits)

    return {
        "deployments": n,
        "modes": {mode: sum(mode_of(i) == mode for i in range(n)) for mode in MODES},
        "interval_s": options.interval_s,
        "resync_s": options.resync_s,
        "applied_s": round(applied_s, 2),
        "rendered_s": rounded(rendered_s, 2),
        "ready_s": rounded(ready_s, 2),
        "ready": ready,
        "interval_drift": rounded(histogram_quantile(drift, 0.95), 4),
        "interval_drift_p50": rounded(histogram_quantile(drift, 0.5), 4),
        "interval_drift_run": rounded(histogram_quantile(drift_after, 0.95), 4),
        "steps_in_window": int(drift[-1][1]) if drift else 0,
        "steps_within_10pct": rounded(share_within(drift, 0.1), 4),
        "api_rps": round(len(window) / (window_end - window_start), 2),
        "api_rps_ramp": round(len(ramp) / max(ready_at - t0, 1e-9), 2),
        "api_requests_per_deployment": round(len(requests) / n, 1),
        "api_requests_by_kind": requests_by_kind(requests),
        "api_requests_converged_by_kind": requests_by_kind(window),
        "writes_converged": len(writes),
        "writes_converged_sample": [str(w) for w in writes[:10]],
        "writes_converged_why": why,
        "window_s": round(window_end - window_start, 1),
        "rss_mb": round(rss_mb, 1),
        "rss_mb_converged": round(rss_mb_converged, 1),
        "operator_cpu_ramp_s": round(cpu_ramp, 1),
        "operator_cpu_window_share": round(cpu_window / (window_end - window_start), 3),
    }


def _why_written(custom: Any, names: Sequence[str], limit: int = 5) -> dict[str, Any]:
    """The last decision and the control conditions of PhoenixDeployments written once converged."""
    out: dict[str, Any] = {}
    for name in names[:limit]:
        status = (
            custom.get_namespaced_custom_object(API_GROUP, API_VERSION, NAMESPACE, PLURAL, name).get("status")
            or {}
        )
        decisions = status.get("decisions") or []
        out[name] = {
            "last_decision": decisions[-1] if decisions else None,
            "conditions": {
                c["type"]: f"{c['status']} {c.get('reason', '')}: {c.get('message', '')}"
                for c in status.get("conditions") or []
                if c["type"] in ("MetricsAvailable", "Autoscaling")
            },
        }
    return out


@click.command("operator")
@click.option("--deployments", "-n", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write figures here."
)
@click.option(
    "--interval",
    "interval_s",
    type=click.IntRange(5, 3600),
    default=15,
    show_default=True,
    help="Control-loop interval of the recommend/auto deployments, seconds.",
)
@click.option(
    "--resync",
    "resync_s",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="The operator's resync period (PHOENIX_RESYNC_SECONDS).",
)
@click.option(
    "--settle",
    "settle_s",
    type=click.FloatRange(min=0),
    help="Seconds after Ready before the converged window [default: 2 intervals].",
)
@click.option(
    "--window",
    "window_s",
    type=click.FloatRange(min=1),
    help="Length of the converged window [default: max(3 intervals, 2 resyncs)].",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=1),
    default=900.0,
    show_default=True,
    help="Give up waiting for Ready after this long.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep logs (operator, cluster, Prometheus) here instead of a temporary folder.",
)
@click.option(
    "--floor",
    is_flag=True,
    help="No operator: write the fleet's children directly and time them until rolled out "
    "(the cluster's own share of ready_s on this machine).",
)
def bench_operator(
    deployments: int,
    json_path: Path | None,
    interval_s: int,
    resync_s: float,
    settle_s: float | None,
    window_s: float | None,
    timeout_s: float,
    workdir: Path | None,
    floor: bool,
) -> None:
    """The operator with N PhoenixDeployments on its own local cluster: Ready time, step drift,
    API load, writes once converged and memory."""
    options = BenchOptions(deployments, interval_s, resync_s, settle_s, window_s, timeout_s, floor)

    def say(message: str) -> None:
        click.echo(message, err=True)

    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        figures = run_bench(options, workdir.absolute(), say)
    else:
        with tempfile.TemporaryDirectory(prefix="phoenix-bench-operator-") as tmp:
            figures = run_bench(options, Path(tmp), say)
    text = json.dumps(figures, indent=2)
    if json_path is not None:
        json_path.write_text(text + "\n")
    click.echo(text)
    if figures["ready_s"] is None:
        what = "child Deployments rolled out" if floor else f"/{deployments} deployments became Ready"
        raise click.ClickException(f"only {figures['ready']}{what}")


if __name__ == "__main__":
    bench_operator()
