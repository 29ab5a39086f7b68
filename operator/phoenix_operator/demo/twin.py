"""The digital twin: the benchmark's fleet simulator, driven against the wall clock.

The same simulator as ``phoenix bench``, stepped in scaled real time so the operator, Kubernetes and
Prometheus can interact with it: it serves with the cluster's Ready pods, takes the operator's
batching through a Triton API and publishes Triton-compatible metrics. One re-entrant lock guards
it. Details: docs/demo.md#the-twin-in-detail.
"""

from __future__ import annotations

import json
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import simpy

from phoenix_operator.demo.timescale import TimeScale
from phoenix_operator.local.triton_metrics import TritonMetricsState
from phoenix_operator.render.tritonconfig import normalize_config
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.fleet import Fleet, FleetSettings
from phoenix_operator.sim.modelconfig import batcher_from_model_config
from phoenix_operator.sim.replica import call_at
from phoenix_operator.sim.request import Arrival, RequestRecord
from phoenix_operator.stats import quantile

#: How often the stepping thread advances the simulation (wall seconds).
TICK_S = 0.02


class TwinFleet(Fleet):
    """A :class:`Fleet` that also publishes what a Triton fleet exports (one metrics target)."""

    def __init__(
        self,
        env: simpy.Environment,
        cost: LLMEngineCost | BlockingBatchCost,
        batching: BatcherConfig,
        settings: FleetSettings,
        total_requests: int,
        metrics: TritonMetricsState,
        wall_of: Callable[[float], float],
    ) -> None:
        self.metrics = metrics
        self.wall_of = wall_of
        #: Live requests (submitted through the twin's gRPC endpoint) someone waits on, by record id.
        self.watchers: dict[int, LiveWatcher] = {}
        super().__init__(env, cost, batching, settings, total_requests)

    def expect_one_more(self) -> None:
        """A live record joins the run: ``all_done`` waits for it too."""
        if self._total == self._terminal and self.all_done.triggered:
            self.all_done = self.env.event()
        self._total += 1

    def first_token(self, rec: RequestRecord) -> None:
        super().first_token(rec)
        if (watcher := self.watchers.get(rec.id)) is not None:
            watcher.first_token(rec)
        now = self.env.now
        ttft = now - rec.arrival_s
        queue = 0.0 if rec.dispatch_s is None else rec.dispatch_s - rec.enqueue_s
        # TTFT is what this streaming model's clients wait for: it goes into the vLLM backend's
        # TTFT histogram, the per-class histogram and (as Triton 2.51 reports a non-decoupled
        # request) the request-duration summary; token counts feed the vLLM token counters.
        self.metrics.record_request(
            request_s=ttft,
            queue_s=queue,
            compute_s=rec.compute_s,
            priority_class=rec.klass,
            ttft_s=ttft,
            at=self.wall_of(now),
            prompt_tokens=rec.prompt_tokens,
            output_tokens=rec.output_tokens,
        )

    def dispatched(self, recs: Sequence[RequestRecord], rows: int, compute_s: float) -> None:
        super().dispatched(recs, rows, compute_s)
        self.metrics.record_batch(rows)

    def reject(self, rec: RequestRecord, reason: str) -> None:
        super().reject(rec, reason)
        self.metrics.record_request(0.0, 0.0, 0.0, ok=False, at=self.wall_of(self.env.now))
        if (watcher := self.watchers.pop(rec.id, None)) is not None:
            watcher.rejected(rec, reason)

    def finished(self, rec: RequestRecord) -> None:
        super().finished(rec)
        if (watcher := self.watchers.pop(rec.id, None)) is not None:
            watcher.finished(rec)


class LiveWatcher(Protocol):
    """Told what becomes of one live request; called from the simulation under the twin's lock,
    so it must only hand the news on (e.g. ``loop.call_soon_threadsafe``), never block."""

    def first_token(self, rec: RequestRecord) -> None: ...

    def finished(self, rec: RequestRecord) -> None: ...

    def rejected(self, rec: RequestRecord, reason: str) -> None: ...


@dataclass(frozen=True)
class LiveFigures:
    """What the live view shows of the twin (simulated seconds and requests/s)."""

    sim_s: float
    ready_replicas: int
    draining_replicas: int
    request_rate: float
    pending: int
    #: Requests refused in the window (queue full, or timed out in the queue: bulk's 30 s).
    rejected: int
    ttft_p95_s: float | None
    ttft_p95_by_class_s: Mapping[str, float | None]
    batching: str
    lag_s: float


@dataclass
class TwinLog:
    """Changes the outside world made to the twin, in simulated seconds."""

    replicas: list[tuple[float, int]] = field(default_factory=list)
    configs: list[tuple[float, str]] = field(default_factory=list)


class DigitalTwin:
    """The simulated Triton fleet of one deployment, in (scaled) real time."""

    def __init__(
        self,
        arrivals: Sequence[Arrival],
        cost: LLMEngineCost | BlockingBatchCost,
        model_config: Mapping[str, Any],
        timescale: TimeScale,
        *,
        initial_replicas: int,
        end_s: float,
        backend: str = "",
        batching_apply_s: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.timescale = timescale
        self.end_s = float(end_s)
        self._config: dict[str, Any] = normalize_config(dict(model_config))
        self._model = str(self._config.get("name", "model"))
        self._backend = backend or str(self._config.get("backend", ""))
        self.metrics = TritonMetricsState(model=self._model, summary_window_s=timescale.summary_window_wall_s)
        self.lock = threading.RLock()
        self.env = simpy.Environment()
        self.records = [RequestRecord(i, a, a.klass or f"p{a.priority}") for i, a in enumerate(arrivals)]
        #: Requests that arrived live (through the gRPC endpoint), in arrival order.
        self.live_records: list[RequestRecord] = []
        settings = FleetSettings(
            initial_replicas=max(1, initial_replicas),
            min_replicas=1,
            max_replicas=10_000,
            startup_s=0.0,  # warm-up happens in the cluster (kwok's ready delay)
            batching_apply_s=batching_apply_s,
            seed=seed,
        )
        self.fleet = TwinFleet(
            self.env,
            cost,
            batcher_from_model_config(self._config),
            settings,
            len(self.records),
            self.metrics,
            self.wall_of,
        )
        self.log = TwinLog(replicas=[(0.0, self.fleet.desired)], configs=[(0.0, self._describe())])
        self._t0_wall: float | None = None  # time.time() at simulated 0
        self._t0_mono = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.finished = threading.Event()
        self.max_lag_s = 0.0
        self._schedule_arrivals()
        self._update_gauges()

    # ------------------------------------------------------------------ ModelHost (Triton API)

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def backend(self) -> str:
        return self._backend

    def model_config(self) -> dict[str, Any]:
        with self.lock:
            config: dict[str, Any] = json.loads(json.dumps(self._config))
            return config

    def load_model_config(self, config: Mapping[str, Any] | None) -> None:
        """Triton's ``load`` with a config override: the whole config is replaced, live."""
        with self.lock:
            new = normalize_config(dict(config)) if config is not None else self._config
            batching = batcher_from_model_config(new)  # raises ModelConfigError before anything changes
            self._config = new
            if self.fleet.set_batching(batching):
                self.log.configs.append((self.env.now, self._describe()))

    def _describe(self) -> str:
        b = self.fleet.config
        sizes = ",".join(map(str, b.preferred_batch_sizes)) or "-"
        return f"preferred=[{sizes}] delay={b.max_queue_delay_us}us instances={b.instance_count}"

    # ------------------------------------------------------------------ live requests

    def submit_live(
        self,
        *,
        priority: int,
        klass: str,
        prompt_tokens: int,
        output_tokens: int,
        watcher: LiveWatcher,
        timeout_us: int = 0,
    ) -> RequestRecord:
        """A request that arrives now (from a real client), into the fleet at the current simulated
        time; ``watcher`` hears of its first token, completion or rejection."""
        with self.lock:
            target = min(self.elapsed_sim(), self.end_s) if self._t0_wall is not None else self.env.now
            if target > self.env.now:
                self.env.run(until=target)
            arrival = Arrival(
                float(self.env.now),
                priority=priority,
                prompt_tokens=max(1, prompt_tokens),
                output_tokens=max(1, output_tokens),
                klass=klass,
                timeout_us=timeout_us,
            )
            rec = RequestRecord(len(self.records) + len(self.live_records), arrival, klass)
            self.live_records.append(rec)
            self.fleet.expect_one_more()
            self.fleet.watchers[rec.id] = watcher
            self.fleet.submit(rec)
            return rec

    def forget_live(self, rec: RequestRecord) -> None:
        """The client left: nobody waits for this request any more (the fleet still serves it, as
        a Triton already executing it would; a queued one costs its share of the batch)."""
        with self.lock:
            self.fleet.watchers.pop(rec.id, None)

    def all_records(self) -> list[RequestRecord]:
        """Pre-scheduled and live requests, by arrival time (what the summary measures)."""
        with self.lock:
            return sorted([*self.records, *self.live_records], key=lambda r: r.arrival_s)

    # ------------------------------------------------------------------ replicas

    def set_replicas(self, ready: int) -> bool:
        """Follow the cluster: ``ready`` Triton pods serve (at least one: the fleet never empties)."""
        with self.lock:
            changed = self.fleet.set_target(max(1, ready))
            if changed:
                self.log.replicas.append((self.env.now, self.fleet.desired))
            return changed

    @property
    def replicas(self) -> int:
        with self.lock:
            return len(self.fleet.ready)

    # ------------------------------------------------------------------ time

    def wall_of(self, sim_s: float) -> float:
        """Wall-clock (epoch) time of a simulated instant (now, before the twin starts)."""
        if self._t0_wall is None:
            return time.time()
        return self._t0_wall + self.timescale.to_wall(sim_s)

    def mono_of(self, sim_s: float) -> float:
        """``time.monotonic()`` of a simulated instant (the twin must have started)."""
        return self._t0_mono + self.timescale.to_wall(sim_s)

    @property
    def now(self) -> float:
        with self.lock:
            return float(self.env.now)

    def elapsed_sim(self) -> float:
        """Simulated seconds the wall clock says should have passed (0 before start)."""
        if self._t0_wall is None:
            return 0.0
        return self.timescale.to_sim(time.monotonic() - self._t0_mono)

    def start(self) -> DigitalTwin:
        """Start the clock: simulated time 0 is now."""
        self._t0_mono = time.monotonic()
        self._t0_wall = time.time()
        self._thread = threading.Thread(target=self._run, name="digital-twin", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            target = min(self.elapsed_sim(), self.end_s)
            self.advance_to(target)
            self.max_lag_s = max(self.max_lag_s, self.timescale.to_wall(self.elapsed_sim() - target))
            if target >= self.end_s:
                self.finished.set()
                return
            self._stop.wait(TICK_S)  # pacing against the wall clock, not synchronisation

    def advance_to(self, sim_s: float) -> None:
        """Run the simulation up to ``sim_s`` (no-op if it is already there)."""
        with self.lock:
            if sim_s > self.env.now:
                self.env.run(until=sim_s)
            self._update_gauges()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def drain(self, extra_s: float) -> None:
        """After the run: let queued requests finish (as fast as possible, replicas frozen)."""
        self.stop()
        with self.lock:
            until = self.end_s + extra_s
            if until > self.env.now:
                self.env.run(
                    until=simpy.AnyOf(self.env, [self.fleet.all_done, self.env.timeout(until - self.env.now)])
                )

    # ------------------------------------------------------------------ live figures

    def _schedule_arrivals(self) -> None:
        records = self.records
        env, fleet = self.env, self.fleet

        def arrive(idx: int) -> None:
            fleet.submit(records[idx])
            nxt = idx + 1
            if nxt < len(records):
                call_at(env, records[nxt].arrival_s - env.now, lambda: arrive(nxt))

        if records:
            call_at(env, records[0].arrival_s, lambda: arrive(0))

    def _update_gauges(self) -> None:
        fleet = self.fleet
        self.metrics.pending = sum(r.batcher.size for r in fleet.ready) + sum(
            r.batcher.size for r in fleet.draining
        )
        now = self.env.now
        span = self.timescale.to_sim(1.0)
        busy = total = 0.0
        for rep in fleet.ready:
            start = max(now - span, rep.ready_s if rep.ready_s is not None else now)
            if now > start:
                busy += rep.busy_seconds(now) - rep.busy_seconds(start)
                total += now - start
        self.metrics.gpu_utilization = busy / total if total > 0 else 0.0

    def live(self, window_s: float, classes: Sequence[str]) -> LiveFigures:
        """TTFT p95 (overall and per class) of first tokens in the last ``window_s`` simulated seconds."""
        with self.lock:
            fleet = self.fleet
            now = float(self.env.now)
            i = bisect_left(fleet.ft_t, now - window_s)
            values = fleet.ft_v[i:]
            names = fleet.ft_c[i:]
            arrivals = len(fleet.arr_t) - bisect_left(fleet.arr_t, now - window_s)
            rejected = len(fleet.err_t) - bisect_left(fleet.err_t, now - window_s)
            pending = int(self.metrics.pending)
            ready, draining = len(fleet.ready), len(fleet.draining)
            batching = self._describe()
        by_class: dict[str, float | None] = {}
        for name in classes:
            chosen = [v for v, c in zip(values, names, strict=True) if c == name]
            by_class[name] = _p95(chosen)
        return LiveFigures(
            sim_s=now,
            ready_replicas=ready,
            draining_replicas=draining,
            request_rate=arrivals / window_s if now >= window_s else arrivals / max(now, 1e-9),
            pending=pending,
            rejected=rejected,
            ttft_p95_s=_p95(values),
            ttft_p95_by_class_s=by_class,
            batching=batching,
            lag_s=self.max_lag_s,
        )


def _p95(values: Sequence[float]) -> float | None:
    if not values:
        return None
    return quantile(values, 0.95)
