"""The gateway's Prometheus metrics, in a registry of their own (the names the control loop reads)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Stage and retrieval buckets: 1 ms steps where the gateway's own work lives, then coarse to 60 s
#: (the first_token stage is Triton's queue + prefill and can be long).
STAGE_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
#: TTFT buckets: the spec's default TTFT target lies between 1.5 and 10 s, p95 must resolve there.
TTFT_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
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
    15.0,
    20.0,
    30.0,
    60.0,
)
STAGES = ("classify", "embed", "search", "first_token")
CONTENT_TYPE = CONTENT_TYPE_LATEST


class GatewayMetrics:
    """One instance per app; its own registry so in-process test gateways never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ttft = Histogram(
            "phoenix_request_ttft_seconds",
            "Time to first token as the client sees it, from request arrival.",
            ["priority_class"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "phoenix_gateway_stage_seconds",
            "Time of one request stage (first_token = Triton queue + prefill, from send to first token).",
            ["stage", "priority_class"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.retrieval = Histogram(
            "phoenix_gateway_retrieval_seconds",
            "Embed + search time of one request.",
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "phoenix_gateway_requests",
            "Finished chat requests by class and HTTP status.",
            ["priority_class", "code"],
            registry=r,
        )
        self.errors = Counter(
            "phoenix_gateway_errors",
            "Failed chat requests by class, HTTP status and error type.",
            ["priority_class", "code", "type"],
            registry=r,
        )
        self.upstream_timeouts = Counter(
            "phoenix_gateway_upstream_timeouts",
            "Requests that timed out upstream (Triton queue timeout or the request deadline).",
            ["priority_class"],
            registry=r,
        )
        self.retrieval_failures = Counter(
            "phoenix_gateway_retrieval_failures",
            "Searches that failed; the request was answered without passages.",
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
