"""The operator's own Prometheus metrics: what it saw and what it decided, per deployment.

Served by `phoenix run --metrics-port` (the chart's metrics Service / ServiceMonitor scrape it),
so the decisions the operator explains in status and Events are also on a dashboard.
"""

from __future__ import annotations

import contextlib
import os

from prometheus_client import Counter, Gauge, start_http_server

from phoenix_operator.api.models import QualityStatus
from phoenix_operator.control.policy import Decision
from phoenix_operator.observation import Observation
from phoenix_operator.status.quality import parse_time

_LABELS = ("namespace", "deployment")

DECISIONS = Counter(
    "phoenix_decisions_total",
    "Control-loop decisions by action and whether they were applied",
    [*_LABELS, "action", "applied", "mode"],
)
OBSERVED_TTFT = Gauge("phoenix_observed_ttft_p95_seconds", "TTFT p95 the control loop last observed", _LABELS)
OBSERVED_RATE = Gauge(
    "phoenix_observed_request_rate", "Request rate the control loop last observed (req/s)", _LABELS
)
OBSERVED_RETRIEVAL = Gauge(
    "phoenix_observed_retrieval_p95_seconds",
    "Retrieval (embed + search) p95 at the gateway the control loop last observed",
    _LABELS,
)
METRICS_STALE = Gauge(
    "phoenix_metrics_stale", "1 while the loop holds still because metrics are stale", _LABELS
)
DESIRED_REPLICAS = Gauge("phoenix_desired_replicas", "Replicas the control loop wants", _LABELS)
QUEUE_DELAY = Gauge(
    "phoenix_batching_max_queue_delay_microseconds", "Triton max_queue_delay in force", _LABELS
)
LARGEST_PREFERRED = Gauge(
    "phoenix_batching_largest_preferred_batch_size", "Largest preferred batch size in force", _LABELS
)
RECONCILES = Counter("phoenix_reconcile_total", "Reconcile passes", [*_LABELS, "result"])
CHILD_WRITES = Counter(
    "phoenix_child_writes_total", "Server-side applies of children (0 when converged)", _LABELS
)


def observe_step(
    name: str, namespace: str, obs: Observation, decision: Decision, applied: bool, mode: str
) -> None:
    labels = {"namespace": namespace, "deployment": name}
    if obs.ttft_p95_s is not None:
        OBSERVED_TTFT.labels(**labels).set(obs.ttft_p95_s)
    if obs.request_rate is not None:
        OBSERVED_RATE.labels(**labels).set(obs.request_rate)
    if obs.retrieval_p95_s is not None:
        OBSERVED_RETRIEVAL.labels(**labels).set(obs.retrieval_p95_s)
    METRICS_STALE.labels(**labels).set(0 if obs.usable else 1)
    DECISIONS.labels(**labels, action=decision.action, applied=str(applied).lower(), mode=str(mode)).inc()
    desired = decision.metrics.get("desired_replicas")
    if decision.replicas is not None:
        DESIRED_REPLICAS.labels(**labels).set(decision.replicas)
    elif desired is not None:
        DESIRED_REPLICAS.labels(**labels).set(desired)
    if decision.batching is not None and applied:
        QUEUE_DELAY.labels(**labels).set(decision.batching.max_queue_delay_us)
        LARGEST_PREFERRED.labels(**labels).set(max(decision.batching.preferred_batch_sizes, default=0))


def serve(port: int, address: str | None = None) -> None:
    """Serve /metrics; ``PHOENIX_METRICS_ADDRESS`` narrows the bind address (tests use 127.0.0.1)."""
    start_http_server(port, addr=address or os.environ.get("PHOENIX_METRICS_ADDRESS", "0.0.0.0"))


EVAL_F1 = Gauge("phoenix_eval_f1", "Macro-F1 of the last offline evaluation (status.quality)", _LABELS)
EVAL_ACCURACY = Gauge("phoenix_eval_accuracy", "Accuracy of the last offline evaluation", _LABELS)
EVAL_URGENT_RECALL = Gauge(
    "phoenix_eval_urgent_recall", "Recall of routing to the most urgent class, last evaluation", _LABELS
)
EVAL_HIT_AT_K = Gauge("phoenix_eval_hit_at_k", "Retrieval hit@k of the last evaluation", _LABELS)
EVAL_TIMESTAMP = Gauge(
    "phoenix_eval_timestamp_seconds", "Unix time the last offline evaluation finished", _LABELS
)


def observe_quality(name: str, namespace: str, quality: QualityStatus | None) -> None:
    """Export status.quality; a figure the last evaluation did not report is removed, never kept stale."""
    labels = {"namespace": namespace, "deployment": name}
    figures = quality.model_dump() if quality is not None else {}
    evaluated = parse_time(quality.evaluated_at) if quality is not None else None
    figures["evaluated_at"] = evaluated.timestamp() if evaluated is not None else None
    for gauge, key in (
        (EVAL_F1, "macro_f1"),
        (EVAL_ACCURACY, "accuracy"),
        (EVAL_URGENT_RECALL, "urgent_recall"),
        (EVAL_HIT_AT_K, "hit_at_k"),
        (EVAL_TIMESTAMP, "evaluated_at"),
    ):
        value = figures.get(key)
        if value is None:
            with contextlib.suppress(KeyError):
                gauge.remove(*labels.values())
        else:
            gauge.labels(**labels).set(value)
