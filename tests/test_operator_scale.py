"""The operator with many deployments, and what its start-up waits for.

* The control loop holds no thread between steps: a dozen deployments in `recommend` mode all
  report their metrics, and a further deployment is still rendered at once (the whole operator
  process against the local cluster, real Prometheus scraping Triton-compatible metrics).
* Steps run on a fixed grid (no drift), every Kopf daemon is a coroutine, and a step before the
  reconciler's first pass reads nothing (no Deployment, no Prometheus).
* `phoenix run` with peering (the default) says what it waits for: a missing peering CRD is a
  clear error with the fix, a missing peering object a clear warning (its own bare cluster, so
  the shared one keeps its CRDs).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml
from kubernetes import client

from api_cases import valid_doc
from fixtures.operator import CRD_DIR, ROOT
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.prometheus import PrometheusMetricSource
from phoenix_operator.clients.writer import Writer
from phoenix_operator.cluster import build
from phoenix_operator.cluster.local import LocalCluster, tail
from phoenix_operator.cluster.manifests import NodeSpec
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.control.loop import ControlLoop, rendered
from phoenix_operator.control.schedule import missed_slots, next_start
from phoenix_operator.intents import WriteStatus
from phoenix_operator.local.prometheus import LocalPrometheus, ScrapeTarget
from phoenix_operator.local.triton_metrics import TritonMetricsServer, TritonMetricsState
from phoenix_operator.reconcile.reconciler import Reconciler
from phoenix_operator.runner import build_registry, check_served, judge_peering, judge_served
from phoenix_operator.runtime.control import run_periodically
from phoenix_operator.runtime.reconcile import Process, api_client, run_on_watched
from phoenix_operator.settings import OperatorSettings


# ============================================================================================
# Scheduling (pure)
# ============================================================================================
@pytest.mark.parametrize(
    ("planned", "interval", "now", "expected"),
    [
        (100.0, 10.0, 100.5, 110.0),  # a quick step: the next slot, measured from the planned start
        (100.0, 10.0, 109.9, 110.0),  # a slow step that still fits
        (100.0, 10.0, 110.0, 110.0),  # due right now
        (100.0, 10.0, 110.1, 120.0),  # overran by a little: the missed slot is skipped
        (100.0, 10.0, 135.0, 140.0),  # overran by three slots: no burst of catch-up steps
        (100.0, 5.0, 99.0, 105.0),  # a clock read before the planned start still moves forward
        (100.0, 30.0, 101.0, 130.0),  # a spec edit's new interval applies from the last slot
    ],
)
def test_next_start_is_on_the_grid_of_planned_starts(
    planned: float, interval: float, now: float, expected: float
) -> None:
    assert next_start(planned, interval, now) == pytest.approx(expected)


def test_missed_slots_and_bad_intervals() -> None:
    assert missed_slots(100.0, 10.0, 110.0) == 0
    assert missed_slots(100.0, 10.0, 140.0) == 3
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="interval"):
            next_start(0.0, bad, 1.0)


def test_steps_do_not_drift_when_each_takes_most_of_the_interval() -> None:
    """Real asyncio and a real clock: 6 steps of 0.12 s every 0.2 s start 0.2 s apart, not 0.32 s."""
    interval, work, steps = 0.2, 0.12, 6
    starts: list[float] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def step() -> None:
            starts.append(time.monotonic())
            await asyncio.to_thread(time.sleep, work)  # blocking I/O, off the event loop
            if len(starts) == steps:
                stop.set()

        async def wait(seconds: float) -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
            return stop.is_set()

        await run_periodically(step, lambda: interval, wait)

    asyncio.run(main())
    assert len(starts) == steps
    offsets = [s - starts[0] for s in starts]
    for k, offset in enumerate(offsets):
        # Slack for a loaded machine, far below the 0.12 s per step a drifting loop would add.
        assert offset == pytest.approx(k * interval, abs=0.06), offsets


def test_many_loops_share_a_few_threads() -> None:
    """Twenty loops waiting on the event loop need no thread each: all step, on two threads."""
    loops, rounds, pool_size = 20, 3, 2
    steps: dict[int, int] = {}
    threads: set[str] = set()

    def blocking(loop_id: int) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.005)
        steps[loop_id] = steps.get(loop_id, 0) + 1

    async def main() -> None:
        done = asyncio.Event()
        pool = ThreadPoolExecutor(max_workers=pool_size)

        def make(loop_id: int) -> Callable[[], Awaitable[None]]:
            async def step() -> None:
                await asyncio.get_running_loop().run_in_executor(pool, blocking, loop_id)
                if len(steps) == loops and min(steps.values()) >= rounds:
                    done.set()

            return step

        async def wait(seconds: float) -> bool:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), seconds)
            return done.is_set()

        try:
            await asyncio.wait_for(
                asyncio.gather(*(run_periodically(make(i), lambda: 0.1, wait) for i in range(loops))), 10
            )
        finally:
            pool.shutdown()

    asyncio.run(main())
    assert len(steps) == loops and min(steps.values()) >= rounds
    assert len(threads) <= pool_size


# ============================================================================================
# Kopf wiring (the handlers registered by `phoenix run`)
# ============================================================================================
def test_the_registry_logs_in_with_the_kubernetes_client() -> None:
    """An explicit registry starts without Kopf's fallback logins; without one Kopf never logs in."""
    from kopf._core.intents.causes import Activity  # Kopf keeps no public view of activities

    activities = build_registry(OperatorSettings())._activities.get_handlers(Activity.AUTHENTICATION)
    assert [h.fn for h in activities] == [kopf.login_via_client]


def test_every_daemon_is_a_coroutine_so_none_holds_an_executor_thread() -> None:
    from kopf._core.intents.handlers import DaemonHandler  # Kopf keeps no public list of daemons

    spawning = build_registry(OperatorSettings())._spawning.get_all_handlers()
    daemons = [h for h in spawning if isinstance(h, DaemonHandler)]
    assert daemons, "the control loop's daemon is registered"
    for handler in daemons:
        assert inspect.iscoroutinefunction(handler.fn), f"{handler.id} is a synchronous daemon"


# ============================================================================================
# Peering at start-up (pure judgement, CRD files)
# ============================================================================================
@pytest.mark.parametrize(
    ("clusterwide", "served", "missing", "unreadable", "fatal", "waiting"),
    [
        (False, True, [], None, None, None),
        (False, False, [], None, "no KopfPeering CRD (kopfpeerings.kopf.dev)", None),
        (True, False, [], None, "no ClusterKopfPeering CRD (clusterkopfpeerings.kopf.dev)", None),
        (
            False,
            True,
            ["a", "b"],
            None,
            None,
            "waiting for KopfPeering 'phoenix-operator' in namespace(s) a, b",
        ),
        (True, True, [""], None, None, "waiting for ClusterKopfPeering 'phoenix-operator' cluster-wide"),
        (False, True, [], "HTTP 403 Forbidden", None, "could not check peering"),
    ],
)
def test_peering_judgement(
    clusterwide: bool,
    served: bool,
    missing: list[str],
    unreadable: str | None,
    fatal: str | None,
    waiting: str | None,
) -> None:
    check = judge_peering("phoenix-operator", clusterwide, served, missing, unreadable)
    if fatal is None:
        assert check.fatal is None
    else:
        assert check.fatal is not None and fatal in check.fatal
        assert "kubectl apply --server-side -f crds/" in check.fatal and "--standalone" in check.fatal
        assert "\n" not in check.fatal
    if waiting is None:
        assert check.waiting is None
    else:
        assert check.waiting is not None and waiting in check.waiting and "\n" not in check.waiting


def test_crds_folder_carries_kopfs_peering_crds_as_the_chart_does() -> None:
    chart = [
        d
        for d in yaml.safe_load_all(
            (ROOT / "charts/phoenix-operator/crds/kopf.dev_peerings.yaml").read_text()
        )
        if d
    ]
    ours = {p.name: yaml.safe_load(p.read_text()) for p in sorted(CRD_DIR.glob("kopf.dev_*.yaml"))}
    assert sorted(d["metadata"]["name"] for d in ours.values()) == [
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    ]
    assert sorted(ours.values(), key=lambda d: d["metadata"]["name"]) == sorted(
        chart, key=lambda d: d["metadata"]["name"]
    )


# ============================================================================================
# Many deployments against the whole operator
# ============================================================================================
RECOMMENDING = 12


def _fleet_doc(name: str, namespace: str, prometheus_url: str | None) -> dict[str, Any]:
    doc = copy.deepcopy(valid_doc(name))
    del doc["spec"]["retrieval"]
    if prometheus_url is None:
        doc["spec"]["autoscaling"] = {"mode": "off"}
    else:
        doc["spec"]["autoscaling"] = {
            "mode": "recommend",
            "prometheusUrl": prometheus_url,
            "intervalSeconds": 5,
            # Every deployment reads the one metrics server below.
            "metricsSelector": f'phoenix_deployment="fleet",namespace="{namespace}"',
        }
    return doc


def _feed(state: TritonMetricsState) -> Callable[[], None]:
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.1):
            state.record_request(request_s=0.4, queue_s=0.1, compute_s=0.3, priority_class="standard")
            state.record_batch(1)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()

    def stop_feeding() -> None:
        stop.set()
        thread.join(timeout=5)

    return stop_feeding


@pytest.mark.integration
@pytest.mark.prometheus
@pytest.mark.slow
def test_a_dozen_recommending_loops_report_and_a_new_deployment_is_still_rendered(
    kube_cluster: Any, operator_process: Any, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    apps = client.AppsV1Api(kube_cluster.api_client)
    state = TritonMetricsState(model="llama-chat")
    (port,) = pick_ports(1)
    with TritonMetricsServer([state], port):
        stop_feeding = _feed(state)
        prometheus = LocalPrometheus(
            [ScrapeTarget(f"127.0.0.1:{port}", {"phoenix_deployment": "fleet", "namespace": ns})],
            workdir=tmp_path / "prom",
        ).start()
        try:
            prometheus.wait_for_targets_up()
            names = [f"loop-{i:02d}" for i in range(RECOMMENDING)]
            began = time.monotonic()
            for name in names:
                custom.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, ns, PLURAL, _fleet_doc(name, ns, prometheus.url)
                )

            def reporting() -> dict[str, str]:
                out = {}
                for item in custom.list_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL)["items"]:
                    for cond in (item.get("status") or {}).get("conditions") or []:
                        if cond["type"] == "MetricsAvailable":
                            out[item["metadata"]["name"]] = cond["status"]
                return out

            report = wait_for(
                lambda: (r := reporting()) and all(r.get(n) == "True" for n in names) and r,
                timeout=120,
                interval=1.0,
                description=f"all {RECOMMENDING} recommending deployments reporting fresh metrics",
            )
            all_reporting_s = time.monotonic() - began
            assert sorted(report) == names

            # The loops keep stepping; a deployment with autoscaling off is rendered regardless.
            created = time.monotonic()
            custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, ns, PLURAL, _fleet_doc("extra", ns, None)
            )
            wait_for(
                lambda: apps.read_namespaced_deployment("extra-triton", ns) is not None,
                timeout=30,
                interval=0.1,
                max_interval=0.1,
                description="the extra deployment's Triton Deployment",
            )
            render_s = time.monotonic() - created
            print(
                f"\n{RECOMMENDING} recommending deployments all reported fresh metrics after "
                f"{all_reporting_s:.1f}s; the extra deployment was rendered {render_s:.2f}s after it "
                "was applied"
            )
            assert render_s < 5.0, f"rendering the extra deployment took {render_s:.1f}s"
            # Still stepping afterwards: every loop writes one decision or condition at least.
            pd = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, names[-1])
            kinds = {c["type"] for c in pd["status"]["conditions"]}
            assert {"MetricsAvailable", "Autoscaling"} <= kinds
        finally:
            stop_feeding()
            prometheus.stop()


@pytest.mark.integration
def test_a_step_waits_for_the_first_pass_and_asks_nothing_before_it(
    kube_cluster: Any, kube_namespace: str, crds_installed: None, session_operator_paused: None, mocker: Any
) -> None:
    """Before the reconciler's first pass a step reads nothing: no Deployment, no Prometheus.

    The metrics source is the real client pointed at a closed port; the step after the pass
    must ask it and the API server, which is what shows the early return is the only difference.
    """
    ns = kube_namespace
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    custom.create_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, _fleet_doc("unrendered", ns, "http://127.0.0.1:9")
    )
    body = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "unrendered")
    assert not rendered(body)
    kube = Kube(kube_cluster.api_client)
    asked: list[str] = []

    def source_factory(url: str) -> PrometheusMetricSource:
        asked.append(url)
        return PrometheusMetricSource(url)

    get = mocker.spy(kube, "get")
    loop = ControlLoop(kube, OperatorSettings(), source_factory=source_factory)
    result = loop.step(body)
    assert result.decision is None and result.observation is None
    assert get.call_count == 0 and asked == []

    outcome = Reconciler(kube, OperatorSettings()).reconcile(body)
    Writer(kube).perform([WriteStatus("unrendered", ns, body.get("status") or {}, outcome.status_patch)])
    body = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "unrendered")
    assert rendered(body)
    after = loop.step(body)
    assert asked == ["http://127.0.0.1:9"]
    assert any(c.args[1] == "Deployment" for c in get.call_args_list)
    assert after.observation is not None and not after.observation.usable


def _condition(kind: str) -> dict[str, str]:
    return {
        "type": kind,
        "status": "True",
        "reason": "Test",
        "message": "",
        "lastTransitionTime": "2026-12-06T00:00:00Z",
    }


@dataclass
class _Draft:
    """What a control step hands back: a status draft it can recompute against other status."""

    status_patch: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    rebase: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[tuple[str, str, str]]]] | None = None


@pytest.mark.integration
def test_a_step_on_the_watched_copy_reads_nothing_and_rebases_what_it_writes(
    kube_cluster: Any, kube_namespace: str, crds_installed: None, session_operator_paused: None, mocker: Any
) -> None:
    """``run_on_watched``: nothing to write, no request; something to write, one read, and the
    draft recomputed against the status found there, so a condition another writer added after
    the watched copy was taken survives the step's write (a real object, a real status patch)."""
    ns = kube_namespace
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    custom.create_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, _fleet_doc("watched", ns, "http://127.0.0.1:9")
    )
    watched = kopf.Body(custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "watched"))
    kube = Kube(kube_cluster.api_client)
    process = Process(settings=OperatorSettings(), reconciler=Reconciler(kube, OperatorSettings()))
    # The reconciler writes a condition; the watched copy has not seen it yet.
    Writer(kube).perform([WriteStatus("watched", ns, {}, {"conditions": [_condition("Ready")]})])
    get = mocker.spy(kube, "get")

    def step(wants: str | None) -> Callable[[dict[str, Any]], _Draft]:
        def work(obj: dict[str, Any]) -> _Draft:
            draft = _Draft()

            def record(status: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
                have = list(status.get("conditions") or [])
                wanted = [] if wants is None or any(c["type"] == wants for c in have) else [_condition(wants)]
                return ({"conditions": have + wanted} if wanted else {}), []

            draft.status_patch, draft.events = record(obj.get("status") or {})
            draft.rebase = record
            return draft

        return work

    quiet = run_on_watched(process, watched, step(None))
    assert quiet is not None and get.call_count == 0
    wrote = run_on_watched(process, watched, step("MetricsAvailable"))
    assert wrote is not None and get.call_count == 1
    after: dict[str, Any] = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "watched")
    assert [c["type"] for c in after["status"]["conditions"]] == ["Ready", "MetricsAvailable"]


@pytest.mark.parametrize(
    ("status", "ok", "fatal", "retry"),
    [
        (200, True, None, None),
        (404, False, "no CRD phoenixdeployments.serving.phoenixoperator.io", None),
        (403, False, "may not list PhoenixDeployments in namespace shop (HTTP 403", None),
        (401, False, "may not list PhoenixDeployments in namespace shop (HTTP 401", None),
        (429, False, None, "storage is (re)initializing"),
        (503, False, None, "storage is (re)initializing"),
        (None, False, None, "storage is (re)initializing"),
    ],
)
def test_served_judgement(status: int | None, ok: bool, fatal: str | None, retry: str | None) -> None:
    """Listing PhoenixDeployments at start-up: a missing CRD or RBAC is final, the rest is retried."""
    check = judge_served("in namespace shop", status, "storage is (re)initializing")
    assert check.ok is ok
    if fatal is None:
        assert check.fatal is None
    else:
        assert check.fatal is not None and fatal in check.fatal and "\n" not in check.fatal
        assert ("crds/" if status == 404 else "RBAC") in check.fatal
    assert (check.retry is None) if retry is None else (check.retry is not None and retry in check.retry)


def test_start_up_retries_an_api_server_that_does_not_answer_then_says_so() -> None:
    """No server listens on the port (a real refused connection): retried, said once, then final."""
    (port,) = pick_ports(1)
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 0
    said: list[str] = []
    began = time.monotonic()
    check = check_served(client.ApiClient(configuration), ["shop"], False, wait_s=2.0, say=said.append)
    assert 2.0 <= time.monotonic() - began < 10.0
    assert not check.ok and check.fatal is not None
    assert check.fatal.startswith("gave up after 2s listing PhoenixDeployments in namespace shop:")
    assert "Connection refused" in check.fatal or "ConnectionRefused" in check.fatal, check.fatal
    assert len(said) == 1 and said[0].startswith("waiting for the API server to serve PhoenixDeployments")


# ============================================================================================
# Start-up against a cluster without the peering CRD (its own bare cluster)
# ============================================================================================
@pytest.fixture
def bare_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A fresh control plane with no CRDs at all (4 s to start): the shared one has Kopf's."""
    local = LocalCluster(tmp_path / "bare", NodeSpec(count=1), die_with_parent=True, quiet=True)
    local.up(timeout=120)
    try:
        yield local
    finally:
        local.down()


def _kubectl(local: LocalCluster, *args: str, input: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(local.kubeconfig))
    done = subprocess.run(
        [str(build.binary_path("kubectl")), *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def _phoenix_run(local: LocalCluster, log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, KUBECONFIG=str(local.kubeconfig), PYTHONUNBUFFERED="1", PHOENIX_RESYNC_SECONDS="2")
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "phoenix_operator.cli", "run", "--metrics-port", "0", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.integration
@pytest.mark.slow
def test_start_up_says_what_peering_it_waits_for(bare_cluster: LocalCluster, tmp_path: Path) -> None:
    ns = "shop"
    log_path = tmp_path / "operator.log"

    # 1. No peering CRD: one clear line with the fix, and a non-zero exit (not a silent wait).
    began = time.monotonic()
    proc = _phoenix_run(bare_cluster, log_path, "--namespace", ns)
    try:
        code = proc.wait(timeout=60)
    finally:
        _stop(proc)
    text = log_path.read_text()
    assert code == 2, text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1, text
    assert "no KopfPeering CRD (kopfpeerings.kopf.dev)" in errors[0]
    assert "kubectl apply --server-side -f crds/" in errors[0] and "--standalone" in errors[0]
    print(f"\nexited {code} after {time.monotonic() - began:.1f}s: {errors[0]}")

    # Standalone needs no peering, but still our CRD: the same kind of line, naming it.
    proc = _phoenix_run(bare_cluster, log_path, "--namespace", ns, "--standalone")
    try:
        code = proc.wait(timeout=60)
    finally:
        _stop(proc)
    text = log_path.read_text().split(errors[0], 1)[1]
    assert code == 2, text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"no CRD {PLURAL}.{API_GROUP}" in errors[0], text
    assert "kubectl apply --server-side -f crds/" in errors[0]

    # 2. The fix as the line says: crds/ now holds Kopf's CRDs. The peering object is missing:
    #    the operator starts, says what it waits for, and handles nothing yet.
    _kubectl(bare_cluster, "apply", "--server-side", "-f", str(CRD_DIR))
    _kubectl(
        bare_cluster,
        "wait",
        "--for=condition=Established",
        "crd/kopfpeerings.kopf.dev",
        f"crd/{PLURAL}.{API_GROUP}",
        "--timeout=60s",
    )
    _kubectl(bare_cluster, "create", "namespace", ns)
    (port,) = pick_ports(1)
    proc = _phoenix_run(
        bare_cluster, log_path, "--namespace", ns, "--liveness", f"http://127.0.0.1:{port}/healthz"
    )
    try:
        wait_for(
            lambda: "waiting for KopfPeering 'phoenix-operator' in namespace(s) shop" in log_path.read_text(),
            timeout=60,
            abort=lambda: None if proc.poll() is None else f"exited {proc.returncode}:\n{tail(log_path, 30)}",
            description="the operator's line about the missing peering object",
        )
        # Started right after the CRDs were applied: nothing was logged as an error (the API
        # server's cache of the new kinds may still have been filling; start-up waited for it).
        assert " ERROR " not in log_path.read_text().split(errors[0], 1)[1], tail(log_path, 30)
        doc = _fleet_doc("paused", ns, None)
        doc["metadata"]["namespace"] = ns
        _kubectl(bare_cluster, "apply", "-f", "-", input=yaml.safe_dump(doc))
        time.sleep(3)  # several resync periods: a paused operator renders nothing
        assert "paused-triton" not in _kubectl(bare_cluster, "get", "deployments", "-n", ns, "-o", "name")

        # 3. Once the object exists Kopf resumes by itself (no restart) and the deployment is rendered.
        peering = {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "phoenix-operator", "namespace": ns},
        }
        _kubectl(bare_cluster, "apply", "-f", "-", input=yaml.safe_dump(peering))
        wait_for(
            lambda: "paused-triton" in _kubectl(bare_cluster, "get", "deployments", "-n", ns, "-o", "name"),
            timeout=90,
            interval=0.5,
            abort=lambda: None if proc.poll() is None else f"exited {proc.returncode}",
            description="the deployment rendered once the peering object exists",
        )
    finally:
        _stop(proc)


# ============================================================================================
# `phoenix bench operator`: its arithmetic, then a small fleet end to end
# ============================================================================================
def test_histogram_quantile_interpolates_within_a_bucket_as_promql_does() -> None:
    from phoenix_operator.cluster.benchops import bucket_difference, histogram_quantile, share_within

    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.01)
    assert histogram_quantile(buckets, 0.7) == pytest.approx(0.01 + 0.09 * 20 / 40)
    assert histogram_quantile(buckets, 0.95) == pytest.approx(0.1 + 0.9 * 5 / 10)
    assert share_within(buckets, 0.1) == pytest.approx(0.9)
    assert histogram_quantile([(0.1, 0.0), (float("inf"), 0.0)], 0.95) is None
    assert bucket_difference(buckets, [(0.01, 40.0), (0.1, 40.0)])[:2] == [(0.01, 10.0), (0.1, 50.0)]


def test_audit_entries_count_the_operators_requests_once_and_only_them() -> None:
    from phoenix_operator.cluster.benchops import operator_requests

    def entry(
        audit_id: str, agent: str, verb: str, namespace: str = "ns", user: str = "kubernetes-admin"
    ) -> str:
        return json.dumps(
            {
                "auditID": audit_id,
                "verb": verb,
                "userAgent": agent,
                "user": {"username": user},
                "objectRef": {"resource": "phoenixdeployments", "namespace": namespace, "name": "a"},
                "requestReceivedTimestamp": "2026-12-04T19:00:00.000000Z",
                "stageTimestamp": "2026-12-04T19:00:00.100000Z",
            }
        )

    lines = [
        entry("1", "kopf/1.38", "patch"),
        entry("1", "kopf/1.38", "patch"),  # the same request at a second stage
        entry("2", "OpenAPI-Generator/37.0.2/python", "get"),
        entry("3", "phoenix-bench", "create"),  # the bench itself
        entry("4", "kopf/1.38", "patch", namespace="other"),
        entry("5", "kube-controller-manager/v1.34", "update", user="system:serviceaccount:x:y"),
    ]
    requests = operator_requests(lines, "ns")
    assert [(r.verb, r.write) for r in requests] == [("patch", True), ("get", False)]


@pytest.mark.integration
@pytest.mark.prometheus
@pytest.mark.slow
def test_bench_operator_reports_every_figure_for_a_small_fleet(tmp_path: Path) -> None:
    """Six deployments (two per mode) on the bench's own cluster: all Ready, steps on time, silent."""
    from click.testing import CliRunner

    from phoenix_operator.cluster.benchops import bench_operator

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        bench_operator,
        ["--deployments", "6", "--interval", "5", "--resync", "300", "--settle", "10", "--window", "15",
         "--json", str(out), "--workdir", str(tmp_path / "work")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + tail(tmp_path / "work" / "operator.log", 40)
    figures = json.loads(out.read_text())
    print("\n" + json.dumps(figures, indent=2))
    assert figures["modes"] == {"off": 2, "recommend": 2, "auto": 2}
    assert figures["ready"] == 6
    assert 0 < figures["rendered_s"] <= figures["ready_s"] < 120
    # Four loops every 5 s over 15 s: about 12 steps; each started within 10 % of its interval.
    assert figures["steps_in_window"] >= 8
    assert figures["interval_drift"] is not None and figures["interval_drift"] < 0.1
    assert figures["steps_within_10pct"] >= 0.95
    # No resync falls in the window (the first is half a period in): what remains is the loops'
    # steps, which size from the watched copies of their objects and read neither by name.
    converged = figures["api_requests_converged_by_kind"]
    assert not {"get phoenixdeployments", "get deployments"} & set(converged), converged
    # Steady load at a fifth of the specs' load-tested capacity: converged, no deployment in
    # any mode writes anything, status or Event.
    assert figures["writes_converged"] == 0, figures["writes_converged_why"]
    assert 50 < figures["rss_mb_converged"] <= figures["rss_mb"] <= 250
    assert figures["operator_log_errors"] == 0, tail(tmp_path / "work" / "operator.log", 80)
    # Children are read with one list per kind each pass, never one by one.
    by_kind = figures["api_requests_by_kind"]
    assert by_kind["list configmaps"] >= 6
    assert [k for k in by_kind if k in ("get configmaps", "get services", "get poddisruptionbudgets")] == []


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["auto", "off"])
def test_the_floor_writes_exactly_what_a_first_pass_writes(
    kube_cluster: Any, kube_namespace: str, crds_installed: None, session_operator_paused: None, mode: str
) -> None:
    """`bench operator --floor` times the cluster on the operator's own first-pass writes.

    After the floor's writes for a real object, a reconcile pass has nothing to apply and
    nothing to prune: the floor wrote every child the operator renders and no other.
    """
    from phoenix_operator.cluster.benchfloor import deployments_of, first_pass_writes
    from phoenix_operator.cluster.benchops import fleet_doc

    ns, name = kube_namespace, f"floor-{mode}"
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    custom.create_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, fleet_doc(name, mode, "http://127.0.0.1:9", ns, 15)
    )
    body = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
    kube = Kube(kube_cluster.api_client)
    intents = first_pass_writes(body, OperatorSettings())
    done = Writer(kube).perform(intents)
    assert done.rejected == [] and len(done.writes) >= 8, done.writes
    assert deployments_of(intents) == 2  # Triton and the gateway
    outcome = Reconciler(kube, OperatorSettings()).reconcile(body)
    assert outcome.writes == []


@pytest.mark.integration
def test_bench_operator_floor_times_the_children_without_an_operator(tmp_path: Path) -> None:
    """Three deployments' children written by the bench itself, on its own cluster: all rolled
    out, with the first pass's writes and no reads but the one that pass makes."""
    from click.testing import CliRunner

    from phoenix_operator.cluster.benchops import bench_operator

    out = tmp_path / "floor.json"
    result = CliRunner().invoke(
        bench_operator, ["--floor", "--deployments", "3", "--timeout", "120", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["mode"] == "floor" and figures["deployments"] == 3
    assert figures["child_deployments"] == figures["ready"] == 6
    assert figures["written_s"] > 0 and 0 < figures["rendered_s"] <= figures["ready_s"] < 120
    by_kind = figures["api_requests_by_kind"]
    assert by_kind["create phoenixdeployments"] == 3
    assert by_kind["patch deployments"] >= 6
    # As in the operator's first pass, only an `auto` deployment's replicas are set after a read
    # of the Triton Deployment just applied; nothing else is read by name (`get ` is discovery).
    reads = {k: v for k, v in by_kind.items() if k.startswith("get ") and k != "get "}
    assert reads == {"get deployments": 1}, by_kind


@pytest.mark.integration
def test_kopf_keeps_watched_objects_without_managed_fields(
    kube_cluster: Any,
    kube_namespace: str,
    crds_installed: None,
    session_operator_paused: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The body Kopf keeps for a daemon (as for the control loop's) has no managedFields once
    `drop_managed_fields` is installed, as `phoenix run` installs it; the API server still has them.

    Real Kopf (in-process, through its test runner) against the local cluster.
    """
    from kopf._core.reactor import processing
    from kopf.testing import KopfRunner

    from phoenix_operator.runtime.managed_fields import drop_managed_fields

    monkeypatch.setattr(processing, "process_resource_event", processing.process_resource_event)
    ns = kube_namespace
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    custom.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, _fleet_doc("slim", ns, None))
    seen: list[set[str]] = []
    registry = kopf.OperatorRegistry()
    cfg = kube_cluster.api_client.configuration

    def login(**_: Any) -> kopf.ConnectionInfo:
        # The test cluster's own credentials: the kubernetes package's global default is not
        # this cluster's in every test session.
        header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
        scheme, _, token = (header or "").partition(" ")
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
            scheme=scheme or None,
            token=token or None,
        )

    kopf.on.login(registry=registry)(login)

    async def record(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        seen.append(set(body["metadata"]))
        await stopped.wait()

    kopf.daemon(API_GROUP, API_VERSION, PLURAL, registry=registry)(record)
    assert drop_managed_fields() and drop_managed_fields()  # idempotent
    with KopfRunner(["run", "--standalone", "--namespace", ns], registry=registry, timeout=60) as runner:
        wait_for(lambda: seen, timeout=30, interval=0.2, description="the daemon to start")
    assert runner.exception is None, runner.output
    live = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "slim")
    assert live["metadata"]["managedFields"]
    assert "managedFields" not in seen[0] and {"uid", "generation", "name"} <= seen[0]


def test_a_watch_event_loses_only_its_managed_fields() -> None:
    from phoenix_operator.runtime.managed_fields import without_managed_fields

    event = {"type": "MODIFIED", "object": {"metadata": {"name": "a", "managedFields": [{}]}, "spec": {}}}
    assert without_managed_fields(event) == {
        "type": "MODIFIED",
        "object": {"metadata": {"name": "a"}, "spec": {}},
    }
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 410}}
    assert without_managed_fields(copy.deepcopy(error)) == error
    assert without_managed_fields({"type": None, "object": None}) == {"type": None, "object": None}


def test_the_operator_process_loads_no_grpc_or_numpy() -> None:
    """Memory at rest: no gRPC, numpy, pymilvus or pandas until a deployment needs them.

    Triton's model-config schema comes without tritonclient.grpc's package, and pymilvus (with
    pandas, pyarrow and gRPC) is imported when a deployment has retrieval: at module level they
    cost an operator whose deployments have none about 120 MB of resident memory. Building the
    registry imports every handler module, as `phoenix run` does.
    """
    probe = (
        "import sys, phoenix_operator.runner as r, phoenix_operator.settings as s\n"
        "r.build_registry(s.OperatorSettings())\n"
        "heavy = ('grpc', 'numpy', 'ml_dtypes', 'pymilvus', 'pandas', 'pyarrow')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        # VmRSS, not ru_maxrss: the high-water mark survives exec from the (large) test process.
        "rss = next(l for l in open('/proc/self/status') if l.startswith('VmRSS:'))\n"
        "print(int(rss.split()[1]) // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    loaded, rss_mb = out.stdout.splitlines()
    assert loaded == "[]", loaded
    assert int(rss_mb) < 85, f"importing the operator takes {rss_mb} MB"


def test_bench_nodes_hold_every_autoscaled_deployment_at_its_maximum() -> None:
    """At N = 1,000 the auto third scaled to its maximum and 124 deployments waited for a GPU."""
    from phoenix_operator.cluster.benchops import AUTO_MAX_REPLICAS, fleet_doc, mode_of, node_shape

    for deployments in (10, 100, 1000):
        shape = node_shape(deployments)
        gpus_wanted = sum(AUTO_MAX_REPLICAS if mode_of(i) == "auto" else 1 for i in range(deployments))
        assert shape.count * shape.gpus_per_node >= gpus_wanted, (deployments, shape)
    doc = fleet_doc("d", "auto", "http://prom:9090", "ns", 30)
    assert doc["spec"]["autoscaling"]["maxReplicas"] == AUTO_MAX_REPLICAS


def test_every_handler_and_control_thread_keeps_its_connection(
    kube_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """All threads talking at once reuse pooled connections: none is opened and then discarded."""
    settings = OperatorSettings(reconcile_workers=8, control_workers=4)
    shared = api_client(settings, kube_cluster.api_client.configuration)
    core = client.CoreV1Api(shared)
    threads = settings.reconcile_workers + settings.control_workers
    barrier = threading.Barrier(threads)

    def hold_a_connection(_: int) -> None:
        barrier.wait()
        # A watch that the API server ends after a second: every thread holds its connection at once.
        core.list_namespace(watch=True, timeout_seconds=1, _preload_content=False).read()

    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        for _ in range(2):
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(hold_a_connection, range(threads)))
    discarded = [r.getMessage() for r in caplog.records if "pool is full" in r.getMessage()]
    assert discarded == []


def test_the_bench_reads_the_audit_files_the_api_server_rotated_out(tmp_path: Path) -> None:
    from phoenix_operator.cluster.benchops import audit_lines

    (tmp_path / "audit-2026-12-06T04-10-00.000.log").write_text("first\nsecond\n")
    (tmp_path / "audit-2026-12-06T04-20-00.000.log").write_text("third\n")
    (tmp_path / "audit.log").write_text("fourth\n")
    (tmp_path / "other.log").write_text("not ours\n")
    assert [line.strip() for line in audit_lines(tmp_path / "audit.log")] == [
        "first",
        "second",
        "third",
        "fourth",
    ]
