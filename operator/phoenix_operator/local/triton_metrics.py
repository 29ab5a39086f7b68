"""A Triton-compatible ``/metrics`` endpoint fed by something other than Triton.

The demo's digital twin (the serving simulator driven in real time) and the control-loop tests
publish what a Triton fleet would: the same metric names, labels and types as Triton 2.51
(counters, summaries with quantiles, the pending gauge, ``nv_gpu_utilization``) plus the
gateway's per-class TTFT histogram. Prometheus scrapes it like a real Triton pod, and the metric
source cannot tell the difference — which is the point: the operator runs unchanged.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

QUANTILES = (0.5, 0.9, 0.95, 0.99)
#: vLLM's own TTFT buckets (Triton's vLLM backend exports them as `vllm:time_to_first_token_seconds`).
VLLM_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
CLASS_TTFT_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    20.0,
    60.0,
)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


@dataclass
class _Counters:
    success: int = 0
    failure: int = 0
    inferences: int = 0
    executions: int = 0
    request_us: float = 0.0
    queue_us: float = 0.0
    compute_us: float = 0.0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    ttft_buckets: list[int] = field(default_factory=lambda: [0] * len(VLLM_TTFT_BUCKETS))
    ttft_sum: float = 0.0
    ttft_count: int = 0


@dataclass
class TritonMetricsState:
    """Mutable metrics of one model on one (virtual) Triton instance; thread-safe."""

    model: str
    version: str = "1"
    #: Sliding window of the summaries, like Triton's (about a minute).
    summary_window_s: float = 60.0
    _counters: _Counters = field(default_factory=_Counters)
    _recent: deque[tuple[float, float, float]] = field(default_factory=deque)  # (t, request_us, queue_us)
    _class_buckets: dict[str, list[int]] = field(default_factory=dict)
    _class_sum: dict[str, float] = field(default_factory=dict)
    _class_count: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    gpu_utilization: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_request(
        self,
        request_s: float,
        queue_s: float,
        compute_s: float,
        ok: bool = True,
        priority_class: str | None = None,
        ttft_s: float | None = None,
        at: float | None = None,
        prompt_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """One finished request; token counts and TTFT feed the vLLM-backend series."""
        now = time.time() if at is None else at
        with self._lock:
            c = self._counters
            if not ok:
                c.failure += 1
                return
            c.success += 1
            c.request_us += request_s * 1e6
            c.queue_us += queue_s * 1e6
            c.compute_us += compute_s * 1e6
            c.prompt_tokens += prompt_tokens
            c.generation_tokens += output_tokens
            if ttft_s is not None:
                c.ttft_sum += ttft_s
                c.ttft_count += 1
                for i, bound in enumerate(VLLM_TTFT_BUCKETS):
                    if ttft_s <= bound:
                        c.ttft_buckets[i] += 1
            self._recent.append((now, request_s * 1e6, queue_s * 1e6))
            if priority_class is not None:
                value = request_s if ttft_s is None else ttft_s
                buckets = self._class_buckets.setdefault(priority_class, [0] * len(CLASS_TTFT_BUCKETS))
                for i, bound in enumerate(CLASS_TTFT_BUCKETS):
                    if value <= bound:
                        buckets[i] += 1
                self._class_sum[priority_class] = self._class_sum.get(priority_class, 0.0) + value
                self._class_count[priority_class] = self._class_count.get(priority_class, 0) + 1

    def record_batch(self, size: int) -> None:
        with self._lock:
            self._counters.inferences += size
            self._counters.executions += 1

    def _summaries(self, now: float) -> tuple[list[float], list[float]]:
        while self._recent and now - self._recent[0][0] > self.summary_window_s:
            self._recent.popleft()
        return sorted(r for _, r, _ in self._recent), sorted(q for _, _, q in self._recent)

    def families(self, now: float | None = None) -> Iterator[Metric]:
        now = time.time() if now is None else now
        labels = ["model", "version"]
        values = [self.model, self.version]
        with self._lock:
            c = self._counters
            requests, queues = self._summaries(now)

            def counter(name: str, doc: str, value: float, extra: dict[str, str] | None = None) -> Metric:
                # Samples named exactly as Triton names them (no `_total`, which prometheus_client's
                # CounterMetricFamily would append and the queries would then not find).
                family = Metric(name, doc, "counter")
                family.add_sample(name, dict(zip(labels, values, strict=True)) | (extra or {}), value)
                return family

            yield counter("nv_inference_request_success", "Successful requests", c.success)
            yield counter("nv_inference_request_failure", "Failed requests", c.failure, {"reason": "OTHER"})
            yield counter("nv_inference_count", "Inferences performed", c.inferences)
            yield counter("nv_inference_exec_count", "Batch executions", c.executions)
            yield counter("nv_inference_request_duration_us", "Cumulative request duration", c.request_us)
            yield counter("nv_inference_queue_duration_us", "Cumulative queue duration", c.queue_us)
            yield counter("nv_inference_compute_input_duration_us", "Cumulative compute input duration", 0.0)
            yield counter(
                "nv_inference_compute_infer_duration_us", "Cumulative compute duration", c.compute_us
            )
            yield counter(
                "nv_inference_compute_output_duration_us", "Cumulative compute output duration", 0.0
            )
            for name, sample in (
                ("nv_inference_request_summary_us", requests),
                ("nv_inference_queue_summary_us", queues),
            ):
                # Written as gauges with a quantile label: the exposition is identical to a summary's
                # quantile series, which is all the queries read.
                family = GaugeMetricFamily(
                    name, "Summary quantiles over a sliding window", labels=[*labels, "quantile"]
                )
                for q in QUANTILES:
                    family.add_metric([*values, repr(q)], _quantile(sample, q))
                yield family
            yield counter("vllm:prompt_tokens_total", "Prefill tokens processed", c.prompt_tokens)
            yield counter("vllm:generation_tokens_total", "Generation tokens processed", c.generation_tokens)
            if c.ttft_count:
                ttft = HistogramMetricFamily(
                    "vllm:time_to_first_token_seconds",
                    "Histogram of time to first token in seconds",
                    labels=labels,
                )
                buckets = [
                    (repr(b), float(n)) for b, n in zip(VLLM_TTFT_BUCKETS, c.ttft_buckets, strict=True)
                ]
                ttft.add_metric(values, [*buckets, ("+Inf", float(c.ttft_count))], c.ttft_sum)
                yield ttft
            pending = GaugeMetricFamily(
                "nv_inference_pending_request_count", "Pending requests", labels=labels
            )
            pending.add_metric(values, self.pending)
            yield pending
            if self.gpu_utilization is not None:
                gpu = GaugeMetricFamily("nv_gpu_utilization", "GPU utilization (0..1)", labels=["gpu_uuid"])
                gpu.add_metric(["GPU-twin"], self.gpu_utilization)
                yield gpu
            if self._class_buckets:
                hist = HistogramMetricFamily(
                    "phoenix_request_ttft_seconds",
                    "Client-side TTFT by priority class",
                    labels=["priority_class"],
                )
                for cls, counts in sorted(self._class_buckets.items()):
                    buckets = [(repr(b), float(n)) for b, n in zip(CLASS_TTFT_BUCKETS, counts, strict=True)]
                    total = float(self._class_count[cls])
                    hist.add_metric([cls], [*buckets, ("+Inf", total)], self._class_sum[cls])
                yield hist


class _StateCollector(Collector):
    def __init__(self, states: Iterable[TritonMetricsState]) -> None:
        self.states = list(states)

    def collect(self) -> Iterator[Metric]:
        for state in self.states:
            yield from state.families()


class TritonMetricsServer:
    """Serves the states on ``127.0.0.1:port/metrics`` until ``stop()``."""

    def __init__(self, states: Iterable[TritonMetricsState], port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(states))
        self.port = port
        self.host = host
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> TritonMetricsServer:
        self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> TritonMetricsServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
