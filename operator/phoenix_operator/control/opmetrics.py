"""The operator's own Prometheus metrics: what it saw and what it decided, per deployment.

Served by `phoenix run --metrics-port` (the chart's metrics Service / ServiceMonitor scrape it),
so the decisions the operator explains in status and Events are also on a dashboard.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, start_http_server

from phoenix_operator.control.observation import Observation
from phoenix_operator.control.policy import Decision

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


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address)
