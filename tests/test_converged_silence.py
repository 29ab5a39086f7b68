"""Converged means silent in every mode: an `auto` deployment under steady load writes nothing.

The band rule that decides when ``status.ttftP95Seconds`` is worth rewriting is pure and tested
as a table; the whole operator then runs against the local cluster with a real Prometheus
scraping Triton-compatible metrics whose TTFT swings by 20 % every few seconds (inside one
band), and the API server's audit log must show no write by the operator over several control
intervals. A breach afterwards proves the loop was running all along: it writes at once.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from api_cases import valid_doc
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.control.loop import ttft_worth_writing
from phoenix_operator.local.prometheus import LocalPrometheus, ScrapeTarget
from phoenix_operator.local.triton_metrics import TritonMetricsServer, TritonMetricsState
from test_reconciler_integration import _operator_writes

INTERVAL_S = 5


@pytest.mark.parametrize(
    ("new", "written", "worth"),
    [
        (0.50, None, True),  # nothing in status yet
        (0.60, 0.50, False),  # +20 %, same band (below a quarter of the 3 s target)
        (0.45, 0.50, False),
        (0.85, 0.50, True),  # past a quarter of the target (0.75 s) by more than the hysteresis
        (0.76, 0.70, False),  # just over the edge: hysteresis
        (2.90, 2.50, False),  # 0.83x -> 0.97x: still below target
        (3.40, 2.90, True),  # over target
        (3.10, 3.30, False),  # hovering over target
        (2.60, 3.30, True),  # back under it, clearly
        (20.0, 9.0, True),  # 3x -> 6.7x
    ],
)
def test_ttft_is_rewritten_only_across_bands(new: float, written: float | None, worth: bool) -> None:
    assert ttft_worth_writing(new, written, target_s=3.0) is worth


def _feed(state: TritonMetricsState, ttft_of: Callable[[float], float]) -> Callable[[], None]:
    """Publish 30 requests/s whose latency (the TTFT of this non-streaming model) is ``ttft_of(t)``."""
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.1):
            ttft = ttft_of(time.monotonic())
            for _ in range(3):
                state.record_request(request_s=ttft, queue_s=0.1 * ttft, compute_s=0.9 * ttft)
                state.record_batch(1)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()

    def stop_feeding() -> None:
        stop.set()
        thread.join(timeout=5)

    return stop_feeding


@pytest.mark.integration
@pytest.mark.prometheus
def test_auto_mode_under_steady_load_makes_no_writes(
    kube_cluster: Any, operator_process: Any, kube_namespace: str, tmp_path: Path
) -> None:
    ns, name = kube_namespace, "steady"
    breach = threading.Event()
    # 0.5 s and 0.6 s in turn every 4 s (±20 %: the old 10 % rule rewrote status on each swing).
    state = TritonMetricsState(model="llama-chat", summary_window_s=3.0)
    stop_feeding = _feed(state, lambda t: 6.0 if breach.is_set() else (0.5 if int(t / 4) % 2 else 0.6))
    (port,) = pick_ports(1)
    labels = {"phoenix_deployment": name, "namespace": ns}
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    with TritonMetricsServer([state], port):
        prometheus = LocalPrometheus(
            [ScrapeTarget(f"127.0.0.1:{port}", labels, job="triton")], workdir=tmp_path / "prom"
        ).start()
        try:
            prometheus.wait_for_targets_up()
            doc = copy.deepcopy(valid_doc(name))
            del doc["spec"]["retrieval"]
            doc["spec"]["autoscaling"] = {
                "mode": "auto",
                "minReplicas": 1,
                "maxReplicas": 4,
                "prometheusUrl": prometheus.url,
                "intervalSeconds": INTERVAL_S,
                "ttftP95TargetSeconds": 3,
                "tuneBatching": False,
            }
            custom.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)

            def status() -> dict[str, Any]:
                pd = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
                return dict(pd.get("status") or {})

            def conditions() -> dict[str, dict[str, Any]]:
                return {c["type"]: c for c in status().get("conditions") or []}

            wait_for(
                lambda: (
                    conditions().get("MetricsAvailable", {}).get("status") == "True"
                    and conditions().get("Autoscaling", {}).get("reason") == "Auto"
                    and conditions().get("Ready", {}).get("status") == "True"
                ),
                timeout=90,
                interval=1.0,
                description="the loop deciding from fresh metrics, the stack ready",
            )
            wait_for(
                lambda: not _operator_writes(kube_cluster, ns, time.time() - 2 * INTERVAL_S - 1),
                timeout=60,
                interval=1.0,
                description="the operator to go quiet",
            )
            start = time.time()
            written = status().get("ttftP95Seconds")
            time.sleep(5 * INTERVAL_S)
            writes = _operator_writes(kube_cluster, ns, start)
            assert writes == [], writes
            assert status().get("ttftP95Seconds") == written
            assert written is not None and 0.4 <= written <= 0.7, written

            # The loop was running all along: a breach is written within a couple of intervals.
            breach.set()
            wait_for(
                lambda: any(
                    w.startswith("patch phoenixdeployments/")
                    for w in _operator_writes(kube_cluster, ns, start)
                ),
                timeout=6 * INTERVAL_S,
                interval=1.0,
                description="the operator to report the breach",
            )
            latest = status()
            assert latest["decisions"][-1]["action"] == "scale-up", latest["decisions"][-1]
            assert latest["ttftP95Seconds"] > 3.0
        finally:
            stop_feeding()
            prometheus.stop()
