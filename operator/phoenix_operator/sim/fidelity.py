"""Simulator fidelity (issue 8): the same arrivals through a real ``tritonserver`` and the simulator.

Every benchmark figure comes from the simulator, so its dynamic batcher is held to Triton's here:
one Triton 2.51 (CPU, from the nvidia-pytriton wheel) serves the ``emulated_llm`` Python-backend
model, whose ``execute()`` sleeps ``a + b × rows``, under a given ``dynamic_batching`` block; the
simulator gets the same :class:`BatcherConfig`, the same cost and the same arrivals.

How each side is measured, and why:

* **Server clock, not client clock.** Triton traces every request (``--trace-config
  level=TIMESTAMPS``, rate 1). Queue time is ``COMPUTE_START − QUEUE_START`` (Triton's own
  definition), latency ``REQUEST_END − QUEUE_START``. On a loaded 2-core machine the load
  generator sends late now and then; that changes what arrives, not how Triton batches it, so the
  simulator replays the arrival times *Triton saw* (each request's ``QUEUE_START``) with the
  request's priority (joined on the request id). Client-side latency and lateness are reported
  next to it, not compared.
* **Mean executed batch size** is ``Δnv_inference_count / Δnv_inference_exec_count`` from
  ``/metrics`` around each case (the trace's batches are a cross-check in the JSON).
* **Execute cost, measured once** (:func:`calibrate`, before the cases): ``a + b × rows`` fitted
  to the server's compute times of calibration batches (the Python backend's IPC and tensor
  handling on top of the sleep). It does not move with load, so one constant serves every case.
* **Hand-off and missed wake-ups, measured per case** (:func:`observe_handoffs`): the gap from
  one execution to the next, and the share of completions Triton's batcher sleeps through (a
  race in Triton core without prefetch; docs/fidelity.md). Both follow the machine's CPU
  contention, so each case's own trace supplies them — read off completions, arrivals and start
  times only, never off the figures being compared.

Trace files are flushed per case by toggling the server's trace ``log_frequency`` (Triton writes
the finished setting's traces to ``<file>.<n>`` when the setting is replaced), so no shutdown is
needed to read them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import click
import numpy as np

from phoenix_operator.sim.cli import output_options
from phoenix_operator.sim.config import BatcherConfig, QueuePolicy
from phoenix_operator.sim.cost import BlockingBatchCost
from phoenix_operator.sim.fleet import simulate
from phoenix_operator.sim.request import Arrival as SimArrival
from phoenix_operator.sim.request import RequestRecord as SimRecord

#: Acceptance bound of issue 8 (mean batch size and p95 latency, every rate below saturation).
TOLERANCE = 0.10

#: Priority classes of the harness and the Triton priority each is sent with.
CLASSES: dict[str, int] = {"urgent": 1, "standard": 2}
MIX: dict[str, float] = {"urgent": 0.2, "standard": 0.8}

#: The batching block under test: preferred sizes, a queue delay, two priority levels, and a
#: queue policy with a timeout (standard requests are rejected after 200 ms in the queue; urgent
#: ones never time out).
DEFAULT_BATCHING = BatcherConfig(
    max_batch_size=16,
    preferred_batch_sizes=(4, 8),
    max_queue_delay_us=5000,
    priority_levels=2,
    default_priority_level=2,
    default_queue_policy=QueuePolicy(timeout_action="REJECT", default_timeout_us=200_000),
    priority_queue_policy={1: QueuePolicy(timeout_action="REJECT", default_timeout_us=0)},
)

DEFAULT_RATES: tuple[float, ...] = (20.0, 60.0, 120.0, 180.0, 240.0, 320.0)

#: A batch starting this much later than it could have (at an arrival or a poll) was missed.
MISSED_THRESHOLD_S = 0.003

#: Trace ``log_frequency`` values toggled to flush the traces of a case (never reached).
_FLUSH_FREQUENCIES = ("1000000", "1000001")


@dataclass(frozen=True)
class FidelityConfig:
    """What one harness run compares."""

    batching: BatcherConfig = DEFAULT_BATCHING
    #: The emulated model's nominal execute cost ``a + b × rows`` (its ``step_*_ms`` parameters).
    step_base_ms: float = 20.0
    step_per_row_ms: float = 2.0
    rates: tuple[float, ...] = DEFAULT_RATES
    duration_s: float = 20.0
    #: A Poisson case lasts long enough for this many requests: a low rate's p95 rests on a
    #: few missed wake-ups followed by long silences, so it needs more requests to settle.
    min_requests: int = 1200
    #: Azure LLM conversation trace (CC-BY 4.0) to slice; None = Poisson cases only.
    trace: Path | None = None
    #: Trace seconds (before compression) of the slice, and the mean rate it is compressed to.
    trace_window: tuple[float, float] = (1200.0, 1320.0)
    trace_rate: float = 100.0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(MIX))
    classes: Mapping[str, int] = field(default_factory=lambda: dict(CLASSES))
    seed: int = 0
    #: Calibration: (A, X-during-A) pairs for the wake-up race, bursts for the cost fit.
    calibration_pairs: int = 40
    calibration_bursts: int = 16
    #: Simulator runs per case (pooled) when the missed-wake-up draw makes it random.
    sim_runs: int = 10
    #: Times each case's arrival stream is sent, round-robin over the cases. Near saturation one
    #: stream's p95 rests on a few backlog episodes whose cost follows the machine's contention at
    #: that moment; the figures compared pool every repeat (each repeat gets its own measured
    #: hand-off and missed-wake-up share in the simulator).
    repeats: int = 1
    protocol: Literal["http", "grpc"] = "http"


# ------------------------------------------------------------------------------------------
# Cases
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One open-loop arrival stream, sent as-is to the server."""

    name: str
    offered_rps: float
    #: (seconds from the case start, priority class), sorted by time.
    schedule: tuple[tuple[float, str], ...]
    #: Which sending of the same stream this is (``FidelityConfig.repeats``).
    repeat: int = 0

    def request_id(self, index: int) -> str:
        return f"{self.name}#{index}" if self.repeat == 0 else f"{self.name}/{self.repeat}#{index}"

    def again(self, repeat: int) -> Case:
        """The same stream under fresh request ids."""
        return Case(self.name, self.offered_rps, self.schedule, repeat)


def _classes_for(n: int, mix: Mapping[str, float], seed: int) -> list[str]:
    names = list(mix)
    weights = np.array([mix[c] for c in names], dtype=float)
    rng = np.random.default_rng([seed, 0xF1DE])
    return [names[i] for i in rng.choice(len(names), size=n, p=weights / weights.sum())]


def poisson_case(rate: float, duration_s: float, mix: Mapping[str, float], seed: int) -> Case:
    """Poisson arrivals at ``rate`` for ``duration_s`` with classes drawn from ``mix``."""
    rng = np.random.default_rng([seed, int(rate * 1000)])
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration_s * 1.5) + 20))
    times = times[times < duration_s]
    labels = _classes_for(len(times), mix, seed + int(rate * 1000))
    return Case(f"poisson-{rate:g}", rate, tuple(zip(times.tolist(), labels, strict=True)))


def trace_case(
    path: Path, window: tuple[float, float], rate: float, mix: Mapping[str, float], seed: int
) -> Case:
    """A slice of a CSV trace, time-compressed so its mean rate is ``rate`` (burstiness kept)."""
    from phoenix_operator.sim.workloads import read_trace

    t, _prompt, _output = read_trace(path)
    start, end = window
    times = t[(t >= start) & (t < end)] - start
    if len(times) < 2:
        raise ValueError(f"trace window {window} of {path} holds fewer than 2 requests")
    multiplier = rate * (end - start) / len(times)
    scaled = times / multiplier
    labels = _classes_for(len(scaled), mix, seed)
    name = f"{path.stem}[{start:g}-{end:g}]x{multiplier:.1f}"
    offered = len(scaled) / ((end - start) / multiplier)
    return Case(name, offered, tuple(zip(scaled.tolist(), labels, strict=True)))


# ------------------------------------------------------------------------------------------
# Server-side records
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Span:
    """One request as Triton's trace saw it (steady-clock nanoseconds)."""

    request_id: str
    queue_start_ns: int
    request_end_ns: int
    compute_start_ns: int | None = None
    compute_end_ns: int | None = None

    @property
    def executed(self) -> bool:
        return self.compute_start_ns is not None

    @property
    def queue_s(self) -> float | None:
        if self.compute_start_ns is None:
            return None
        return (self.compute_start_ns - self.queue_start_ns) / 1e9

    @property
    def latency_s(self) -> float:
        return (self.request_end_ns - self.queue_start_ns) / 1e9


def parse_trace(entries: Iterable[Mapping[str, Any]]) -> dict[str, Span]:
    """Triton trace JSON entries (``level=TIMESTAMPS``) → spans of requests that carry an id."""
    ids: dict[int, str] = {}
    stamps: dict[int, dict[str, int]] = defaultdict(dict)
    for entry in entries:
        tid = int(entry["id"])
        if entry.get("request_id"):
            ids[tid] = str(entry["request_id"])
        for stamp in entry.get("timestamps", ()):
            stamps[tid][str(stamp["name"])] = int(stamp["ns"])
    out: dict[str, Span] = {}
    for tid, rid in ids.items():
        ts = stamps.get(tid, {})
        if "QUEUE_START" not in ts or "REQUEST_END" not in ts:
            continue
        out[rid] = Span(
            request_id=rid,
            queue_start_ns=ts["QUEUE_START"],
            request_end_ns=ts["REQUEST_END"],
            compute_start_ns=ts.get("COMPUTE_START"),
            compute_end_ns=ts.get("COMPUTE_END"),
        )
    return out


@dataclass(frozen=True)
class Batch:
    """An executed batch, recovered from the trace (its requests share ``COMPUTE_START``)."""

    start_ns: int
    end_ns: int
    rows: int


def batches_of(spans: Iterable[Span]) -> list[Batch]:
    groups: dict[int, list[Span]] = defaultdict(list)
    for span in spans:
        if span.compute_start_ns is not None:
            groups[span.compute_start_ns].append(span)
    return [
        Batch(start, max(s.compute_end_ns or start for s in group), len(group))
        for start, group in sorted(groups.items())
    ]


# ------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Handoffs:
    """How the real batcher handed the instance over from one batch to the next, in one run.

    Both figures depend on the machine's CPU contention (docs/fidelity.md), so they are measured
    per run on the server's own clock, never fitted to the comparison's outputs.
    """

    #: Completions with requests waiting where a missed wake-up would show: no arrival came
    #: before the next batch was due.
    races: int = 0
    #: ... of which the batcher slept through: the next batch started at an arrival or a poll.
    missed: int = 0
    #: Late starts that are neither: nothing in the simulator explains them (they would point
    #: at a semantic difference), so they are counted, not fed to it.
    unexplained: int = 0
    #: Mean gap from an execution's end to the next start when the next batch was ready.
    handoff_s: float = 0.0
    handoff_samples: int = 0

    @property
    def missed_p(self) -> float:
        return self.missed / self.races if self.races else 0.0


#: A late start this close after an arrival was woken by that arrival (``Enqueue`` notifies).
_ARRIVAL_WAKE_NS = 2_000_000
#: A late start this long after the completion is the batcher's 500 ms slot poll.
_POLL_NS = 400_000_000


def observe_handoffs(spans: Sequence[Span], batching: BatcherConfig) -> Handoffs:
    """Classify every completion with requests waiting as won, missed or unexplained.

    The next batch is due at the completion if the queue holds a preferred size (or the delay
    is 0), else when its oldest request's delay expires. A start later than that by more than
    :data:`MISSED_THRESHOLD_S`, at an arrival or a poll, is a missed wake-up. Completions after
    which an arrival came before the batch was due are skipped: a miss would not show there,
    and the choice depends on arrival times only, so the share is unbiased. One instance only.
    """
    if batching.instance_count != 1:
        return Handoffs()
    executed = sorted((s for s in spans if s.executed), key=lambda s: s.queue_start_ns)
    batches = batches_of(executed)
    arrivals = np.sort(np.array([s.queue_start_ns for s in spans], dtype=np.int64))
    queued = np.array([s.queue_start_ns for s in executed], dtype=np.int64)
    started = np.array([s.compute_start_ns or 0 for s in executed], dtype=np.int64)
    delay_ns = batching.max_queue_delay_us * 1000
    min_pref = min(batching.effective_preferred)
    threshold = int(MISSED_THRESHOLD_S * 1e9)
    gaps: list[float] = []
    races = missed = unexplained = 0
    for prev, nxt in itertools.pairwise(batches):
        te = prev.end_ns
        waiting = queued[(queued < te) & (started > te)]
        if not len(waiting):
            continue
        due = te
        if delay_ns and len(waiting) < min_pref:
            due = max(te, int(waiting.min()) + delay_ns)
        i = int(np.searchsorted(arrivals, te, side="right"))
        if i < len(arrivals) and arrivals[i] <= due + threshold:
            continue
        races += 1
        late = nxt.start_ns - due
        if late <= threshold:
            if due == te:
                gaps.append(max(late, 0) / 1e9)
            continue
        j = int(np.searchsorted(arrivals, nxt.start_ns, side="right")) - 1
        if (j >= 0 and nxt.start_ns - arrivals[j] <= _ARRIVAL_WAKE_NS) or nxt.start_ns - te >= _POLL_NS:
            missed += 1
        else:
            unexplained += 1
    return Handoffs(races, missed, unexplained, float(np.mean(gaps)) if gaps else 0.0, len(gaps))


@dataclass(frozen=True)
class Calibration:
    """The execute cost, measured once per run before the cases and used for every one of them."""

    #: Least-squares fit of the server's compute time per batch: ``a_fit + b_fit × rows``.
    a_fit_s: float
    b_fit_s: float
    batches: int
    residual_ms: float
    #: The calibration phase's own hand-offs (fallback for a case with too few samples).
    handoffs: Handoffs = field(default_factory=Handoffs)

    def cost(self, handoff_s: float) -> BlockingBatchCost:
        """The simulator's cost: the hand-off holds the instance too, so it adds to ``a``."""
        return BlockingBatchCost(self.a_fit_s + handoff_s, self.b_fit_s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit_cost(batches: Sequence[Batch]) -> tuple[float, float, float]:
    """(a, b, rms residual in ms) of ``duration = a + b × rows``.

    Fitted to the mean duration of each batch size, every size weighing the same: the
    calibration yields many single-request batches and few full ones, and ``b`` matters most for
    the full ones.
    """
    by_rows: dict[int, list[float]] = defaultdict(list)
    for batch in batches:
        by_rows[batch.rows].append((batch.end_ns - batch.start_ns) / 1e9)
    if len(by_rows) < 2:
        raise ValueError("calibration needs batches of at least two sizes")
    sizes = np.array(sorted(by_rows), dtype=float)
    means = np.array([float(np.mean(by_rows[int(n)])) for n in sizes])
    b_s, a_s = np.polyfit(sizes, means, 1)
    rows = np.array([b.rows for b in batches], dtype=float)
    dur = np.array([(b.end_ns - b.start_ns) / 1e9 for b in batches])
    resid = dur - (a_s + b_s * rows)
    return float(a_s), float(max(b_s, 0.0)), float(np.sqrt(np.mean(resid**2)) * 1e3)


def calibration_case(config: FidelityConfig) -> Case:
    """Pairs (A, then X while A executes) for the wake-up race, then bursts for the cost fit."""
    batching = config.batching
    a_s = config.step_base_ms / 1e3
    b_s = config.step_per_row_ms / 1e3
    delay = batching.max_queue_delay_us * 1e-6
    offset = delay + 0.5 * (a_s + b_s)
    period = max(0.08, 3.0 * (delay + a_s + b_s))
    schedule: list[tuple[float, str]] = []
    t = 0.0
    for _ in range(config.calibration_pairs):
        schedule += [(t, "standard"), (t + offset, "standard")]
        t += period
    # A burst first sends a preferred size, then everything left (up to max_batch_size) once the
    # delay has passed: these sizes give batches across 1..max_batch_size.
    top = batching.max_batch_size
    sizes = [top + 4, top // 2 + 2, 3, top + 2, top // 4 + 2, 2 * top, top - 2, 6]
    burst_period = max(0.15, 3.0 * (a_s + b_s * batching.max_batch_size))
    for i in range(config.calibration_bursts):
        schedule += [(t, "standard")] * sizes[i % len(sizes)]
        t += burst_period
    return Case("calibration", 0.0, tuple(schedule))


def calibrate(spans: Sequence[Span], batching: BatcherConfig) -> Calibration:
    batches = batches_of(spans)
    a_fit, b_fit, resid = fit_cost(batches)
    return Calibration(a_fit, b_fit, len(batches), resid, observe_handoffs(spans, batching))


# ------------------------------------------------------------------------------------------
# The real server
# ------------------------------------------------------------------------------------------
@dataclass
class RealRun:
    """What the server did with one case."""

    spans: dict[str, Span]
    #: ``nv_inference_*`` counter deltas over the case.
    counters: dict[str, float]
    #: Client view, per request id: (latency s, lateness s, ok).
    client: dict[str, tuple[float, float, bool]]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def dynamic_batching_block(batching: BatcherConfig) -> str:
    """The ``dynamic_batching { ... }`` block of :meth:`BatcherConfig.to_pbtxt`."""
    lines = batching.to_pbtxt().splitlines()
    start = lines.index("dynamic_batching {")
    depth = 0
    for i in range(start, len(lines)):
        depth += lines[i].count("{") - lines[i].count("}")
        if depth == 0:
            return "\n".join(lines[start : i + 1])
    raise ValueError("unbalanced dynamic_batching block")


def read_counters(metrics_url: str, model: str) -> dict[str, float]:
    """Triton's ``nv_inference_*`` counters of one model, summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "counter" or not family.name.startswith("nv_inference_"):
            continue
        for sample in family.samples:
            if sample.labels.get("model") == model:
                out[family.name] = out.get(family.name, 0.0) + sample.value
    return out


class RealServer:
    """A traced ``tritonserver`` running the emulated model with the config under test."""

    def __init__(self, config: FidelityConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.trace_dir = self.workdir / "traces"
        self._consumed: set[Path] = set()
        self._flushes = 0
        self._server: Any = None
        self.model = "emulated_llm"

    def __enter__(self) -> RealServer:
        from phoenix_operator.local.models import EMULATED_LLM, emulated_llm_config, write_model_repository
        from phoenix_operator.local.triton import LocalTriton

        cfg = self.config
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        pbtxt = emulated_llm_config(
            max_batch_size=cfg.batching.max_batch_size,
            step_base_ms=cfg.step_base_ms,
            step_per_row_ms=cfg.step_per_row_ms,
            instance_count=cfg.batching.instance_count,
            dynamic_batching=dynamic_batching_block(cfg.batching),
        )
        self.model = EMULATED_LLM
        write_model_repository(self.workdir / "models", self.model, pbtxt)
        trace_args = [
            f"--trace-config=triton,file={self.trace_dir / 'trace.json'}",
            "--trace-config=level=TIMESTAMPS",
            "--trace-config=rate=1",
            "--trace-config=count=-1",
            f"--trace-config=triton,log-frequency={_FLUSH_FREQUENCIES[0]}",
        ]
        self._server = LocalTriton(
            self.workdir / "models",
            [EMULATED_LLM],
            log_path=self.workdir / "tritonserver.log",
            extra_args=trace_args,
        )
        self._server.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.stop()

    @property
    def server(self) -> Any:
        return self._server

    def run(self, case: Case) -> RealRun:
        """Send the case open-loop, wait for every answer, and read its traces and counters."""
        from phoenix_operator.local.loadgen import Arrival as LoadArrival
        from phoenix_operator.local.loadgen import LoadGenerator

        url = self._server.grpc_url if self.config.protocol == "grpc" else self._server.http_url
        arrivals = [
            LoadArrival(at, klass, request_id=case.request_id(i))
            for i, (at, klass) in enumerate(case.schedule)
        ]
        generator = LoadGenerator(url, self.model, dict(self.config.classes), protocol=self.config.protocol)
        load_before = os.getloadavg()
        before = read_counters(self._server.metrics_url, self.model)
        result = generator.run(arrivals)
        spans = self._flush({a.request_id for a in arrivals if a.request_id})
        after = read_counters(self._server.metrics_url, self.model)
        client = {case.request_id(r.index): (r.latency_s, r.lateness_s, r.ok) for r in result.records}
        return RealRun(
            spans=spans,
            counters={k: after.get(k, 0.0) - before.get(k, 0.0) for k in after},
            client=client,
            load_before=load_before,
            load_after=os.getloadavg(),
        )

    def _flush(self, expected: set[str], timeout_s: float = 30.0) -> dict[str, Span]:
        """Replace the trace setting so Triton writes this case's traces, then read them."""
        import tritonclient.http as httpclient

        from phoenix_operator.local._proc import wait_for

        self._flushes += 1
        value = _FLUSH_FREQUENCIES[self._flushes % 2]
        with httpclient.InferenceServerClient(self._server.http_url) as client:
            client.update_trace_settings(settings={"log_frequency": value})
        found: dict[str, Span] = {}

        def collect() -> bool:
            for path in sorted(self.trace_dir.glob("trace.json.*")):
                if path in self._consumed:
                    continue
                try:
                    entries = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # still being written
                self._consumed.add(path)
                found.update(parse_trace(entries))
            return expected <= found.keys()

        # On a timeout the case is compared on what arrived; the report counts the missing ones.
        with contextlib.suppress(TimeoutError):
            wait_for(collect, timeout_s, interval_s=0.02, what="the server's traces of the case")
        return {rid: span for rid, span in found.items() if rid in expected}


# ------------------------------------------------------------------------------------------
# Figures and comparison
# ------------------------------------------------------------------------------------------
#: Key suffix of the per-priority-class p95 latency figures.
_CLASS_P95 = "_latency_p95_ms"


def _q(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(np.asarray(values), q)) if len(values) else None


def figures(
    latency: Sequence[float],
    queue: Sequence[float],
    by_class: Mapping[str, Sequence[float]],
    rejected: int,
    mean_batch: float | None,
) -> dict[str, float | None]:
    out: dict[str, float | None] = {
        "mean_batch": mean_batch,
        "queue_mean_ms": float(np.mean(queue)) * 1e3 if len(queue) else None,
        "queue_p95_ms": _ms(_q(queue, 0.95)),
        "latency_mean_ms": float(np.mean(latency)) * 1e3 if len(latency) else None,
        "latency_p50_ms": _ms(_q(latency, 0.50)),
        "latency_p95_ms": _ms(_q(latency, 0.95)),
        "latency_p99_ms": _ms(_q(latency, 0.99)),
    }
    for klass, values in sorted(by_class.items()):
        out[f"{klass}{_CLASS_P95}"] = _ms(_q(values, 0.95))
    out["rejected"] = float(rejected)
    return out


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1e3


def _class_of(case: Case) -> dict[str, str]:
    return {case.request_id(i): c for i, (_t, c) in enumerate(case.schedule)}


def real_figures(runs: Sequence[tuple[Case, RealRun]]) -> dict[str, float | None]:
    """Triton's figures pooled over the repeats of one case (rejections averaged per repeat)."""
    latency: list[float] = []
    queue: list[float] = []
    by_class: dict[str, list[float]] = defaultdict(list)
    rejected = count = execs = 0.0
    for case, run in runs:
        klass = _class_of(case)
        for s in run.spans.values():
            if not s.executed:
                rejected += 1
                continue
            latency.append(s.latency_s)
            queue.append(s.queue_s or 0.0)
            by_class[klass[s.request_id]].append(s.latency_s)
        count += run.counters.get("nv_inference_count", 0.0)
        execs += run.counters.get("nv_inference_exec_count", 0.0)
    figs = figures(latency, queue, by_class, 0, count / execs if execs else None)
    figs["rejected"] = rejected / len(runs) if runs else 0.0
    return figs


def sim_arrivals(run: RealRun, case: Case, classes: Mapping[str, int]) -> list[SimArrival]:
    """The arrivals Triton saw (``QUEUE_START``), from t = 0, with each request's priority."""
    klass = _class_of(case)
    spans = sorted(run.spans.values(), key=lambda s: s.queue_start_ns)
    if not spans:
        return []
    t0 = spans[0].queue_start_ns
    return [
        SimArrival(
            (s.queue_start_ns - t0) / 1e9,
            priority=classes[klass[s.request_id]],
            klass=klass[s.request_id],
        )
        for s in spans
    ]


def sim_figures(records: Sequence[SimRecord]) -> dict[str, float | None]:
    done = [r for r in records if r.status == "ok"]
    by_class: dict[str, list[float]] = defaultdict(list)
    for r in done:
        by_class[r.klass].append(r.latency_s)
    return figures(
        [r.latency_s for r in done],
        [r.queue_s or 0.0 for r in done],
        by_class,
        sum(1 for r in records if r.status in ("timeout", "rejected")),
        None,
    )


@dataclass(frozen=True)
class SimInput:
    """One repeat as the simulator gets it: Triton's arrivals and that repeat's environment."""

    arrivals: Sequence[SimArrival]
    cost: BlockingBatchCost
    missed_p: float


def run_sim(
    inputs: Sequence[SimInput], batching: BatcherConfig, runs: int, seed: int
) -> tuple[dict[str, float | None], list[dict[str, float | None]]]:
    """Simulator figures pooled over the inputs (repeats), each over ``runs`` seeds; and per input.

    An input without missed wake-ups is deterministic and runs once, its records counted
    ``runs`` times so that every input weighs the same. Rejections are per run.
    """
    pooled: list[SimRecord] = []
    per_input: list[dict[str, float | None]] = []
    batches = 0
    for n, item in enumerate(inputs):
        seeds = runs if item.missed_p > 0 else 1
        records: list[SimRecord] = []
        item_batches = 0
        for k in range(seeds):
            one = simulate(
                item.arrivals, batching, item.cost, seed=seed + 1000 * n + k, missed_wakeup_p=item.missed_p
            )
            item_batches += len({r.batch_id for r in one if r.batch_id >= 0})
            records.extend(one)
        per_input.append(_with_batches(sim_figures(records), records, item_batches, seeds))
        pooled.extend(records * (runs // seeds))
        batches += item_batches * (runs // seeds)
    return _with_batches(sim_figures(pooled), pooled, batches, runs * len(inputs)), per_input


def _with_batches(
    figs: dict[str, float | None], records: Sequence[SimRecord], batches: int, runs: int
) -> dict[str, float | None]:
    done = sum(1 for r in records if r.status == "ok")
    figs["mean_batch"] = done / batches if batches else None
    figs["rejected"] = (figs["rejected"] or 0.0) / runs if runs else 0.0
    return figs


#: A run with fewer observations than this uses the calibration phase's hand-off figures.
MIN_HANDOFF_SAMPLES = 10


def case_environment(observed: Handoffs, calibration: Calibration) -> tuple[float, float]:
    """(missed-wake-up probability, hand-off s) the simulator gets for a case."""
    fallback = calibration.handoffs
    p = observed.missed_p if observed.races >= MIN_HANDOFF_SAMPLES else fallback.missed_p
    h = observed.handoff_s if observed.handoff_samples >= MIN_HANDOFF_SAMPLES else fallback.handoff_s
    return p, h


def rel_error(real: float | None, sim: float | None) -> float | None:
    if real is None or sim is None or real == 0:
        return None
    return (sim - real) / real


@dataclass
class CaseResult:
    case: str
    offered_rps: float
    requests: int
    saturated: bool
    real: dict[str, float | None]
    sim: dict[str, float | None]
    errors: dict[str, float | None]
    #: What the real server's hand-offs looked like, and what the simulator was given.
    handoffs: Handoffs
    missed_p: float
    handoff_s: float
    #: The simulator with Triton's intended hand-off (no missed wake-ups), for reference.
    sim_intended: dict[str, float | None]
    #: Extra observations: trace batches, client-side latency and lateness, missing traces, load.
    notes: dict[str, Any]

    @property
    def passed(self) -> bool:
        if self.saturated:
            return True
        return all(
            (err := self.errors.get(key)) is not None and abs(err) <= TOLERANCE
            for key in ("mean_batch", "latency_p95_ms")
        )


@dataclass
class FidelityReport:
    config: FidelityConfig
    calibration: Calibration
    results: list[CaseResult]
    machine: dict[str, Any]
    elapsed_s: float

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "batching": cfg.batching.to_dict(),
            "nominal_cost_ms": {"a": cfg.step_base_ms, "b": cfg.step_per_row_ms},
            "calibration": self.calibration.to_json(),
            "tolerance": TOLERANCE,
            "passed": self.passed,
            "machine": self.machine,
            "elapsed_s": round(self.elapsed_s, 1),
            "cases": [
                {
                    "case": r.case,
                    "offered_rps": round(r.offered_rps, 2),
                    "requests": r.requests,
                    "saturated": r.saturated,
                    "passed": r.passed,
                    "real": r.real,
                    "sim": r.sim,
                    "rel_error": r.errors,
                    "observed_handoffs": asdict(r.handoffs),
                    "sim_missed_wakeup_p": r.missed_p,
                    "sim_handoff_s": r.handoff_s,
                    "sim_no_missed_wakeups": r.sim_intended,
                    "notes": r.notes,
                }
                for r in self.results
            ],
        }


def _merge(observed: Sequence[Handoffs]) -> Handoffs:
    """The repeats' hand-off observations as one (for the report; the simulator gets each)."""
    samples = sum(o.handoff_samples for o in observed)
    return Handoffs(
        races=sum(o.races for o in observed),
        missed=sum(o.missed for o in observed),
        unexplained=sum(o.unexplained for o in observed),
        handoff_s=sum(o.handoff_s * o.handoff_samples for o in observed) / samples if samples else 0.0,
        handoff_samples=samples,
    )


def compare(
    runs: Sequence[tuple[Case, RealRun]], config: FidelityConfig, calibration: Calibration
) -> CaseResult:
    """Compare one case's repeats, pooled, with the simulator given each repeat's environment."""
    if not runs:
        raise ValueError("compare needs at least one run of the case")
    case = runs[0][0]
    inputs: list[SimInput] = []
    intended_inputs: list[SimInput] = []
    observed: list[Handoffs] = []
    for rep_case, run in runs:
        arrivals = sim_arrivals(run, rep_case, config.classes)
        obs = observe_handoffs(list(run.spans.values()), config.batching)
        missed_p, handoff_s = case_environment(obs, calibration)
        observed.append(obs)
        inputs.append(SimInput(arrivals, calibration.cost(handoff_s), missed_p))
        intended_inputs.append(SimInput(arrivals, calibration.cost(handoff_s), 0.0))
    real = real_figures(runs)
    sim, sim_each = run_sim(inputs, config.batching, config.sim_runs, config.seed)
    intended, _ = run_sim(intended_inputs, config.batching, 1, config.seed)
    errors = {key: rel_error(real.get(key), sim.get(key)) for key in real if key != "rejected"}
    handoff_mean = float(np.mean([i.cost.a_s for i in inputs])) - calibration.a_fit_s
    cost = calibration.cost(handoff_mean)
    capacity = config.batching.max_batch_size / cost.batch_time(config.batching.max_batch_size)
    seen = [
        (len(i.arrivals) - 1) / i.arrivals[-1].time_s
        for i in inputs
        if len(i.arrivals) > 1 and i.arrivals[-1].time_s > 0
    ]
    seen_rps = float(np.mean(seen)) if seen else 0.0
    clients = [c for _case, run in runs for c in run.client.values()]
    client_ok = [lat for lat, _late, ok in clients if ok]
    lateness = [late for _lat, late, _ok in clients]
    overhead = [
        lat - run.spans[rid].latency_s
        for _case, run in runs
        for rid, (lat, _late, ok) in run.client.items()
        if ok and rid in run.spans
    ]
    trace_batches = [b for _case, run in runs for b in batches_of(run.spans.values())]
    repeats = []
    for (rep_case, run), item, obs, sim_one in zip(runs, inputs, observed, sim_each, strict=True):
        real_one = real_figures([(rep_case, run)])
        repeats.append(
            {
                "real_latency_p95_ms": real_one["latency_p95_ms"],
                "sim_latency_p95_ms": sim_one["latency_p95_ms"],
                "real_mean_batch": real_one["mean_batch"],
                "sim_mean_batch": sim_one["mean_batch"],
                "missed": obs.missed,
                "races": obs.races,
                "sim_missed_wakeup_p": item.missed_p,
                "sim_handoff_ms": (item.cost.a_s - calibration.a_fit_s) * 1e3,
                "loadavg_before": [round(x, 2) for x in run.load_before],
                "loadavg_after": [round(x, 2) for x in run.load_after],
            }
        )
    notes: dict[str, Any] = {
        "repeats": repeats,
        "seen_rps": round(seen_rps, 2),
        "capacity_rps": round(capacity, 1),
        "missing_traces": sum(len(c.schedule) - len(run.spans) for c, run in runs),
        "trace_mean_batch": (
            round(sum(b.rows for b in trace_batches) / len(trace_batches), 3) if trace_batches else None
        ),
        "real_batches": len(trace_batches),
        "client_latency_p50_ms": _ms(_q(client_ok, 0.5)),
        "client_latency_p95_ms": _ms(_q(client_ok, 0.95)),
        "client_latency_p99_ms": _ms(_q(client_ok, 0.99)),
        "client_errors": sum(1 for _lat, _late, ok in clients if not ok),
        "client_overhead_median_ms": _ms(_q(overhead, 0.5)),
        "lateness_p99_ms": _ms(_q(lateness, 0.99)),
        "lateness_max_ms": _ms(max(lateness)) if lateness else None,
    }
    merged = _merge(observed)
    return CaseResult(
        case=case.name,
        offered_rps=case.offered_rps,
        requests=sum(len(i.arrivals) for i in inputs),
        saturated=max(case.offered_rps, seen_rps) >= capacity,
        real=real,
        sim=sim,
        errors=errors,
        handoffs=merged,
        missed_p=float(np.mean([i.missed_p for i in inputs])),
        handoff_s=handoff_mean,
        sim_intended=intended,
        notes=notes,
    )


def build_cases(config: FidelityConfig) -> list[Case]:
    cases = [
        poisson_case(rate, max(config.duration_s, config.min_requests / rate), config.mix, config.seed)
        for rate in config.rates
    ]
    if config.trace is not None:
        cases.append(
            trace_case(config.trace, config.trace_window, config.trace_rate, config.mix, config.seed)
        )
    return cases


def run_fidelity(config: FidelityConfig, workdir: Path | None = None, progress: Any = None) -> FidelityReport:
    """Calibrate once, then run every case on the real server and in the simulator."""
    started = time.perf_counter()
    own = workdir is None
    root = Path(tempfile.mkdtemp(prefix="phoenix-fidelity-")) if workdir is None else Path(workdir)
    say = progress or (lambda _msg: None)
    try:
        with RealServer(config, root) as real:
            warm = Case("warmup", 0.0, tuple((0.05 * i, "standard") for i in range(8)))
            real.run(warm)
            say("calibrating on the real server ...")
            calib_case = calibration_case(config)
            calibration = calibrate(list(real.run(calib_case).spans.values()), config.batching)
            say(
                f"execute = {calibration.a_fit_s * 1e3:.2f} ms + {calibration.b_fit_s * 1e3:.3f} ms x rows "
                f"(rms {calibration.residual_ms:.2f} ms over {calibration.batches} batches)"
            )
            # Round-robin over the cases, so each case's repeats meet different moments of
            # the machine's contention rather than one stretch of it.
            cases = build_cases(config)
            runs: dict[str, list[tuple[Case, RealRun]]] = {case.name: [] for case in cases}
            for repeat in range(max(1, config.repeats)):
                for case in cases:
                    again = case.again(repeat)
                    tag = f" (repeat {repeat + 1}/{config.repeats})" if config.repeats > 1 else ""
                    say(f"{case.name}{tag}: {len(case.schedule)} requests ...")
                    runs[case.name].append((again, real.run(again)))
            results = [compare(runs[case.name], config, calibration) for case in cases]
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)
    machine = {
        "cpus": os.cpu_count(),
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "python": ".".join(str(x) for x in sys.version_info[:3]),
        "triton": "2.51 (nvidia-pytriton wheel, CPU)",
    }
    return FidelityReport(config, calibration, results, machine, time.perf_counter() - started)


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------
_ROWS: tuple[tuple[str, str], ...] = (
    ("mean_batch", "mean batch size"),
    ("queue_mean_ms", "queue mean, ms"),
    ("queue_p95_ms", "queue p95, ms"),
    ("latency_mean_ms", "latency mean, ms"),
    ("latency_p50_ms", "latency p50, ms"),
    ("latency_p95_ms", "latency p95, ms"),
    ("latency_p99_ms", "latency p99, ms"),
)


def _rows(result: CaseResult) -> list[tuple[str, str, str, str]]:
    """(figure, Triton, simulator, relative error) cells of one case."""
    keys = list(_ROWS) + [
        (key, f"{key.removesuffix(_CLASS_P95)} p95, ms") for key in result.real if key.endswith(_CLASS_P95)
    ]
    out = [
        (label, _fmt(result.real.get(key)), _fmt(result.sim.get(key)), _pct(result.errors.get(key)))
        for key, label in keys
    ]
    key = "latency_p95_ms"
    real = result.real.get(key)
    intended = result.sim_intended.get(key)
    out.append(("  same, no missed wake-ups", _fmt(real), _fmt(intended), _pct(rel_error(real, intended))))
    repeats = result.notes.get("repeats", [])
    if len(repeats) > 1:
        out.append(
            (
                f"  same, each of {len(repeats)} repeats",
                _spread([r["real_latency_p95_ms"] for r in repeats]),
                _spread([r["sim_latency_p95_ms"] for r in repeats]),
                _spread_pct([rel_error(r["real_latency_p95_ms"], r["sim_latency_p95_ms"]) for r in repeats]),
            )
        )
    out.append(("rejected", _fmt(result.real.get("rejected"), 0), _fmt(result.sim.get("rejected"), 1), "—"))
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1%}"


def _spread(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{min(known):.0f}–{max(known):.0f}" if known else "—"


def _spread_pct(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{min(known):+.0%} … {max(known):+.0%}" if known else "—"


def _case_title(result: CaseResult) -> str:
    sat = " (saturating)" if result.saturated else ""
    verdict = "" if result.saturated else (" — ok" if result.passed else " — FAIL")
    obs = result.handoffs
    repeats = len(result.notes.get("repeats", []))
    pooled = f" ({repeats} repeats pooled)" if repeats > 1 else ""
    return (
        f"{result.case}{sat}: {result.requests} req{pooled} at {result.notes['seen_rps']:.0f}/s; "
        f"missed wake-ups {obs.missed}/{obs.races}, hand-off {result.handoff_s * 1e3:.2f} ms{verdict}"
    )


def render_table(report: FidelityReport) -> Any:
    from rich.table import Table

    cal = report.calibration
    table = Table(
        title=(
            f"Simulator vs Triton 2.51 — execute {cal.a_fit_s * 1e3:.2f} ms + "
            f"{cal.b_fit_s * 1e3:.3f} ms x rows (measured), server clock"
        )
    )
    table.add_column("case / figure")
    for col in ("Triton", "simulator", "rel. error"):
        table.add_column(col, justify="right")
    for i, result in enumerate(report.results):
        if i:
            table.add_section()
        table.add_row(f"[bold]{_case_title(result)}[/bold]", "", "", "")
        for label, real, sim, err in _rows(result):
            table.add_row(f"  {label}", real, sim, err)
    return table


def to_markdown(report: FidelityReport) -> str:
    lines = ["| case | figure | Triton | simulator | rel. error |", "| --- | --- | ---: | ---: | ---: |"]
    for result in report.results:
        title = _case_title(result)
        for j, (label, real, sim, err) in enumerate(_rows(result)):
            lines.append(f"| {title if j == 0 else ''} | {label} | {real} | {sim} | {err} |")
    return "\n".join(lines) + "\n"


def _parse_floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in value.split(",") if x.strip())
    except ValueError as exc:
        raise click.BadParameter("use comma-separated numbers, e.g. 20,60,120") from exc


@click.command("fidelity")
@click.option(
    "--rates",
    default=",".join(f"{r:g}" for r in DEFAULT_RATES),
    show_default=True,
    help="Poisson rates, req/s.",
)
@click.option("--duration", type=float, default=20.0, show_default=True, help="Seconds per Poisson rate.")
@click.option(
    "--min-requests",
    type=int,
    default=1200,
    show_default=True,
    help="Lengthen a low rate's run to at least this many requests.",
)
@click.option(
    "--trace",
    "trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV trace to slice (default: the shipped Azure LLM 2023 conversation trace).",
)
@click.option("--no-trace", is_flag=True, help="Poisson cases only.")
@click.option(
    "--trace-window", default="1200,1320", show_default=True, help="Slice START,END, trace seconds."
)
@click.option(
    "--trace-rate", type=float, default=100.0, show_default=True, help="Mean rate of the slice, req/s."
)
@click.option("--step-base-ms", type=float, default=20.0, show_default=True, help="Emulated execute cost a.")
@click.option(
    "--step-per-row-ms", type=float, default=2.0, show_default=True, help="Emulated cost b per row."
)
@click.option("--pairs", type=int, default=40, show_default=True, help="Calibration pairs (hand-off).")
@click.option("--bursts", type=int, default=16, show_default=True, help="Calibration bursts (cost fit).")
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Send each case's stream this many times (round-robin) and compare the pooled figures.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--protocol", type=click.Choice(["http", "grpc"]), default="http", show_default=True)
@output_options(json_help="Write JSON here.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the model repository, server log and traces here (default: a temporary folder).",
)
@click.option("--check", is_flag=True, help="Exit 1 when a rate below saturation misses the 10 % bound.")
def fidelity(
    rates: str,
    duration: float,
    min_requests: int,
    trace: Path | None,
    no_trace: bool,
    trace_window: str,
    trace_rate: float,
    step_base_ms: float,
    step_per_row_ms: float,
    pairs: int,
    bursts: int,
    repeats: int,
    seed: int,
    protocol: str,
    json_path: Path | None,
    markdown_path: Path | None,
    workdir: Path | None,
    check: bool,
) -> None:
    """Hold the simulator's batcher to a real tritonserver: same config, cost and arrivals."""
    from phoenix_operator.sim.cli import default_trace, report_console, write_outputs

    console = report_console(120)
    window = _parse_floats(trace_window)
    if len(window) != 2:
        raise click.BadParameter("use START,END", param_hint="--trace-window")
    path = None if no_trace else (trace or default_trace())
    config = FidelityConfig(
        step_base_ms=step_base_ms,
        step_per_row_ms=step_per_row_ms,
        rates=_parse_floats(rates),
        duration_s=duration,
        min_requests=min_requests,
        trace=path,
        trace_window=(window[0], window[1]),
        trace_rate=trace_rate,
        seed=seed,
        calibration_pairs=pairs,
        calibration_bursts=bursts,
        repeats=repeats,
        protocol="grpc" if protocol == "grpc" else "http",
    )
    report = run_fidelity(config, workdir, progress=console.print)
    console.print(render_table(report))
    cal = report.calibration
    console.print(
        f"calibration: execute {cal.a_fit_s * 1e3:.2f} ms + {cal.b_fit_s * 1e3:.3f} ms x rows "
        f"(nominal {step_base_ms:g} + {step_per_row_ms:g}; rms {cal.residual_ms:.2f} ms over {cal.batches} "
        f"batches); the simulator adds each case's measured hand-off to a and draws its measured "
        f"missed-wake-up share; {report.machine['cpus']} CPUs, load {report.machine['loadavg_end']}; "
        f"{report.elapsed_s:.0f} s"
    )
    if path is not None:
        console.print(
            "Trace: Azure LLM inference trace 2023 (conversation), CC-BY 4.0 — Patel et al., "
            '"Splitwise", ISCA 2024; Azure Public Dataset.'
        )
    write_outputs(console, json_path, report.to_json, markdown_path, lambda: to_markdown(report))
    verdict = "within" if report.passed else "OUTSIDE"
    console.print(
        f"mean batch size and p95 latency {verdict} ±{TOLERANCE:.0%} at every rate below saturation"
    )
    if check and not report.passed:
        raise SystemExit(1)


__all__ = [
    "CLASSES",
    "DEFAULT_BATCHING",
    "Calibration",
    "Case",
    "CaseResult",
    "FidelityConfig",
    "FidelityReport",
    "Span",
    "calibrate",
    "fidelity",
    "observe_handoffs",
    "parse_trace",
    "poisson_case",
    "run_fidelity",
    "trace_case",
]
