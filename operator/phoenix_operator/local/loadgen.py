"""Open-loop load generator for Triton with a priority mix and a client-side TTFT histogram.

Open loop, because a closed-loop client slows down with the server and hides the queueing the
control loop must see; per-class TTFT is measured client-side since Triton has no priority label.
See docs/fidelity.md ("The load generator").
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from phoenix_operator.stats import quantile

#: Buckets fine enough around a 3 s TTFT target (and sub-100 ms for the emulated model).
TTFT_BUCKETS: tuple[float, ...] = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0,
    3.5, 4.0, 5.0, 7.5, 10.0,
)  # fmt: skip

TTFT_METRIC = "phoenix_request_ttft_seconds"


@dataclass(frozen=True)
class Arrival:
    """One request to send ``at_s`` seconds after the run starts."""

    at_s: float
    priority_class: str = "standard"
    prompt_tokens: int = 128
    #: Server-side queue timeout for this request in microseconds (Triton's per-request
    #: ``timeout``; honoured when the queue policy has ``allow_timeout_override``).
    timeout_us: int | None = None
    #: Triton request id (shows up in server traces: the fidelity harness joins on it).
    request_id: str | None = None


@dataclass(frozen=True)
class RequestRecord:
    """What happened to one request; times are seconds after the run started (monotonic)."""

    index: int
    priority_class: str
    #: Triton priority level sent with the request (0 = the model's default level).
    priority: int
    scheduled_s: float
    start_s: float
    end_s: float
    ok: bool
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def lateness_s(self) -> float:
        """How late the generator sent it (large values mean the client, not Triton, lagged)."""
        return self.start_s - self.scheduled_s


@dataclass
class LoadResult:
    """All records of one run, plus the wall-clock time its t=0 corresponds to."""

    records: list[RequestRecord]
    #: ``time.time()`` and ``time.monotonic()`` at the run's t=0 (record times are offsets).
    started_wall: float
    started_monotonic: float
    duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[RequestRecord]:
        return [r for r in self.records if r.ok]

    @property
    def failed(self) -> list[RequestRecord]:
        return [r for r in self.records if not r.ok]

    def latencies(self, priority_class: str | None = None) -> list[float]:
        """Latencies of successful requests, optionally of one class."""
        return [
            r.latency_s
            for r in self.records
            if r.ok and (priority_class is None or r.priority_class == priority_class)
        ]

    def quantile(self, q: float, priority_class: str | None = None) -> float | None:
        """Empirical quantile of successful latencies (None when there are none)."""
        values = self.latencies(priority_class)
        return quantile(values, q) if values else None

    def max_lateness_s(self) -> float:
        return max((r.lateness_s for r in self.records), default=0.0)


def poisson_arrivals(
    rate: float,
    duration_s: float,
    mix: Mapping[str, float] | None = None,
    *,
    seed: int = 0,
    prompt_tokens: int = 128,
    start_s: float = 0.0,
) -> list[Arrival]:
    """Poisson arrivals at ``rate``/s for ``duration_s``; each request's class drawn from ``mix``.

    Seeded, so the simulator fidelity harness can replay the very same stream on both sides.
    """
    if rate <= 0 or duration_s <= 0:
        return []
    weights = dict(mix or {"standard": 1.0})
    names, probs = list(weights), list(weights.values())
    rng = random.Random(seed)
    out: list[Arrival] = []
    t = start_s
    while True:
        t += rng.expovariate(rate)
        if t >= start_s + duration_s:
            return out
        out.append(Arrival(t, rng.choices(names, probs)[0], prompt_tokens))


def explicit_arrivals(
    times_s: Iterable[float], classes: str | Sequence[str] = "standard", prompt_tokens: int = 128
) -> list[Arrival]:
    """Arrivals at given offsets (e.g. a time-scaled trace); one class or one per time."""
    times = list(times_s)
    names = [classes] * len(times) if isinstance(classes, str) else list(classes)
    if len(names) != len(times):
        raise ValueError(f"{len(times)} times but {len(names)} classes")
    return [Arrival(t, c, prompt_tokens) for t, c in zip(times, names, strict=True)]


class TtftExporter:
    """Client-side TTFT histogram per priority class, served for Prometheus on a free port.

    Each exporter has its own registry, so several generators in one process never collide.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, buckets: Sequence[float] = TTFT_BUCKETS):
        self.registry = CollectorRegistry()
        self.histogram = Histogram(
            TTFT_METRIC,
            "Client-side time to first token (request latency for non-decoupled models)",
            ["priority_class"],
            buckets=tuple(buckets),
            registry=self.registry,
        )
        self.requests = Counter(
            "phoenix_requests",
            "Requests sent by the load generator, by priority class and outcome",
            ["priority_class", "outcome"],
            registry=self.registry,
        )
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.host = host
        self.port = int(self._server.server_port)

    @property
    def target(self) -> str:
        """``host:port`` for a Prometheus scrape config."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    def declare(self, classes: Iterable[str]) -> None:
        """Create the series up front so every class is exported (with zero counts) from t=0."""
        for name in classes:
            self.histogram.labels(priority_class=name)
            for outcome in ("ok", "error"):
                self.requests.labels(priority_class=name, outcome=outcome)

    def record(self, record: RequestRecord) -> None:
        outcome = "ok" if record.ok else "error"
        self.requests.labels(priority_class=record.priority_class, outcome=outcome).inc()
        if record.ok:
            self.histogram.labels(priority_class=record.priority_class).observe(record.latency_s)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> TtftExporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoadRun:
    """A run in progress on its own thread; ``wait()`` returns its :class:`LoadResult`."""

    def __init__(self, generator: LoadGenerator, arrivals: Sequence[Arrival]) -> None:
        self._stop = threading.Event()
        self._result: LoadResult | None = None
        self._error: BaseException | None = None
        self._sent = 0
        #: Requests in the stream (``sent == total`` once the last one has gone out).
        self.total = len(arrivals)
        self._thread = threading.Thread(
            target=self._main, args=(generator, arrivals), name="phoenix-loadgen", daemon=True
        )
        self._thread.start()

    def _main(self, generator: LoadGenerator, arrivals: Sequence[Arrival]) -> None:
        try:
            self._result = asyncio.run(generator._run(arrivals, self))
        except BaseException as exc:  # surfaced by wait()
            self._error = exc

    @property
    def sent(self) -> int:
        """Requests sent so far (for wait-for-condition checks while the run goes on)."""
        return self._sent

    def stop(self) -> None:
        """Send no further requests; the ones in flight still complete."""
        self._stop.set()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> LoadResult:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"load run still going after {timeout_s}s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class LoadGenerator:
    """Sends :class:`Arrival` streams to one Triton model over HTTP or gRPC (aio clients).

    ``classes`` maps a priority class name to the Triton priority level sent with each request
    (1 = highest; 0 or an unknown class = the model's ``default_priority_level``).
    """

    def __init__(
        self,
        url: str,
        model: str,
        classes: Mapping[str, int],
        *,
        protocol: Literal["http", "grpc"] = "http",
        exporter: TtftExporter | None = None,
        input_name: str = "PROMPT_TOKENS",
        request_timeout_s: float = 120.0,
        max_connections: int = 2048,
    ) -> None:
        self.url = url
        self.model = model
        self.classes = dict(classes)
        self.protocol = protocol
        self.exporter = exporter
        self.input_name = input_name
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        if exporter is not None:
            exporter.declare(self.classes)

    def run(self, arrivals: Sequence[Arrival]) -> LoadResult:
        """Send the whole stream and wait for every answer."""
        return self.start(arrivals).wait()

    def start(self, arrivals: Sequence[Arrival]) -> LoadRun:
        """Start sending in the background."""
        return LoadRun(self, sorted(arrivals, key=lambda a: a.at_s))

    # -- internals -------------------------------------------------------------------------
    def _client(self) -> Any:
        if self.protocol == "grpc":
            import tritonclient.grpc.aio as grpc_aio

            return grpc_aio.InferenceServerClient(self.url)
        import tritonclient.http.aio as http_aio

        return http_aio.InferenceServerClient(
            self.url, conn_limit=self.max_connections, conn_timeout=self.request_timeout_s
        )

    def _inputs(self, prompt_tokens: int) -> list[Any]:
        if self.protocol == "grpc":
            import tritonclient.grpc as grpc_client

            tensor: Any = grpc_client.InferInput(self.input_name, [1, 1], "INT32")
        else:
            import tritonclient.http as http_client

            tensor = http_client.InferInput(self.input_name, [1, 1], "INT32")
        tensor.set_data_from_numpy(np.array([[prompt_tokens]], dtype=np.int32))
        return [tensor]

    async def _run(self, arrivals: Sequence[Arrival], run: LoadRun) -> LoadResult:
        client = self._client()
        loop = asyncio.get_running_loop()
        t0 = loop.time()  # asyncio's clock is time.monotonic()
        wall0 = time.time()
        tasks: list[asyncio.Task[RequestRecord]] = []
        try:
            for index, arrival in enumerate(arrivals):
                if run._stop.is_set():
                    break
                delay = t0 + arrival.at_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(loop.create_task(self._one(client, index, arrival, t0)))
                run._sent += 1
            records = list(await asyncio.gather(*tasks))
        finally:
            await client.close()
        return LoadResult(records, wall0, t0, loop.time() - t0)

    async def _one(self, client: Any, index: int, arrival: Arrival, t0: float) -> RequestRecord:
        loop = asyncio.get_running_loop()
        priority = self.classes.get(arrival.priority_class, 0)
        start = loop.time()
        error: str | None = None
        try:
            kwargs: dict[str, Any] = {"priority": priority}
            if arrival.timeout_us is not None:
                kwargs["timeout"] = arrival.timeout_us
            if arrival.request_id is not None:
                kwargs["request_id"] = arrival.request_id
            if self.protocol == "grpc":
                kwargs["client_timeout"] = self.request_timeout_s
            await client.infer(self.model, self._inputs(arrival.prompt_tokens), **kwargs)
        except Exception as exc:  # any failure is data here, not a crash of the generator
            error = f"{type(exc).__name__}: {exc}"
        end = loop.time()
        record = RequestRecord(
            index=index,
            priority_class=arrival.priority_class,
            priority=priority,
            scheduled_s=arrival.at_s,
            start_s=start - t0,
            end_s=end - t0,
            ok=error is None,
            error=error,
        )
        if self.exporter is not None:
            self.exporter.record(record)
        return record


def offered_rate(arrivals: Sequence[Arrival]) -> float:
    """Mean arrival rate of a stream (req/s), NaN for fewer than two arrivals."""
    if len(arrivals) < 2:
        return math.nan
    span = arrivals[-1].at_s - arrivals[0].at_s
    return (len(arrivals) - 1) / span if span > 0 else math.nan
