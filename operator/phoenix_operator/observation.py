"""What the control loop sees of one PhoenixDeployment over one interval.

The same type is produced by the Prometheus metric source (production), by the serving
simulator (benchmarks, `phoenix plan`) and by the demo's digital twin, so the policies run
unchanged on all three. Missing, NaN or stale data is explicit (``None`` plus a reason in
``missing``) and never a zero: a zero TTFT would read as "plenty of slack" and trigger a
scale-down exactly when the metrics pipeline is broken. Zero load is told apart from that by
``idle``: fresh counters that stood still.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Observation:
    """Aggregated serving signals for one deployment, one interval (seconds, fractions, req/s)."""

    #: Wall-clock (or simulated) time the observation describes, seconds.
    at: float
    #: Length of the window the rates and quantiles were computed over, seconds.
    window_s: float
    #: Time-to-first-token p95 over all requests (request latency for non-decoupled models).
    ttft_p95_s: float | None = None
    #: TTFT p95 per priority class name (``urgent``, ``standard``...); absent key = no data.
    ttft_p95_by_class_s: Mapping[str, float | None] = field(default_factory=dict)
    #: Mean time a request waited in Triton's queue before execution.
    queue_time_s: float | None = None
    #: Mean compute (model execution) time per request.
    compute_time_s: float | None = None
    #: Successful + failed requests per second arriving at the fleet.
    request_rate: float | None = None
    #: Mean executed batch size (``nv_inference_count / nv_inference_exec_count``).
    mean_batch_size: float | None = None
    #: Mean GPU utilisation across ready replicas, 0..1.
    gpu_utilization: float | None = None
    #: Failed / all requests, 0..1.
    error_rate: float | None = None
    #: Requests waiting in Triton queues right now, summed over replicas.
    pending_requests: float | None = None
    #: Replicas serving traffic.
    ready_replicas: int | None = None
    #: Mean prompt tokens per request in the window (``rate(vllm:prompt_tokens_total)`` over the
    #: request rate); lets a policy measure load in work, not request counts. ``None`` = not
    #: exported (non-vLLM backends).
    mean_prompt_tokens: float | None = None
    #: Mean generated tokens per request in the window (``vllm:generation_tokens_total`` likewise).
    mean_output_tokens: float | None = None
    #: Retrieval (embed + search of one request) p95 at the gateway, which the per-class TTFT
    #: includes and Triton's does not (``phoenix_gateway_retrieval_seconds``).
    retrieval_p95_s: float | None = None
    #: p95 per gateway stage (``classify``, ``embed``, ``search``, ``first_token``); absent key =
    #: no data. Names the stage to blame when retrieval is slow.
    stage_p95_s: Mapping[str, float] = field(default_factory=dict)
    #: Where the TTFT figure came from: ``histogram``, ``vllm-histogram``, ``summary``,
    #: ``counters`` or ``simulator``.
    ttft_source: str | None = None
    #: Field name -> why it is None (``no data``, ``NaN``, ``stale``, ``query failed: ...``).
    missing: Mapping[str, str] = field(default_factory=dict)
    #: True when the newest sample is older than the staleness limit or the source is unreachable.
    stale: bool = False
    #: Human-readable reason when ``stale`` (shown in the MetricsAvailable condition).
    stale_reason: str | None = None

    @property
    def idle(self) -> bool:
        """Fresh metrics that saw no request: zero load, not missing data.

        The counters are there and current but stood still over the window (request rate 0), so
        there is no TTFT to measure and nothing waits in a queue. Only a stale or missing scrape
        is a reason to hold still; an idle fleet is one to shrink.
        """
        return (
            not self.stale
            and self.ttft_p95_s is None
            and self.request_rate is not None
            and self.request_rate <= 0
            and not self.pending_requests
        )

    @property
    def usable(self) -> bool:
        """Whether a policy may act on this observation (fail-static otherwise): fresh, and
        either a TTFT to judge or an idle window (zero load)."""
        return not self.stale and (self.ttft_p95_s is not None or self.idle)

    @staticmethod
    def clean(value: float | None) -> float | None:
        """Map NaN/inf to None so no policy ever compares against NaN."""
        if value is None or math.isnan(value) or math.isinf(value):
            return None
        return float(value)
