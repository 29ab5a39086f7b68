"""The same arrivals through the simulator, and the figures of both sides compared."""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_operator.fidelity.calibration import (
    Calibration,
    Handoffs,
    calibrate,
    calibration_case,
    observe_handoffs,
)
from phoenix_operator.fidelity.cases import Case, poisson_case, trace_case
from phoenix_operator.fidelity.config import TOLERANCE, FidelityConfig
from phoenix_operator.fidelity.harness import RealRun, RealServer
from phoenix_operator.fidelity.trace import batches_of
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.cost import BlockingBatchCost
from phoenix_operator.sim.fleet import simulate
from phoenix_operator.sim.request import Arrival as SimArrival
from phoenix_operator.sim.request import RequestRecord as SimRecord
from phoenix_operator.stats import quantile, quantile_interval

#: Key suffix of the per-priority-class p95 latency figures.
_CLASS_P95 = "_latency_p95_ms"


def _q(values: Sequence[float], q: float) -> float | None:
    return quantile(values, q) if len(values) else None


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


def beyond_interval(value: float | None, low: float | None, high: float | None) -> float | None:
    """How far ``value`` lies outside ``[low, high]``, relative to the nearer end (0 inside)."""
    if value is None or low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return None
    if value > high:
        return (value - high) / high
    if value < low:
        return (value - low) / low
    return 0.0


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
    pooled_latency = [s.latency_s for _case, run in runs for s in run.spans.values() if s.executed]
    p95_low, p95_high = quantile_interval(pooled_latency, 0.95)
    notes: dict[str, Any] = {
        "repeats": repeats,
        # Where Triton's pooled p95 lies with 95 % confidence: how far apart its own figure could
        # be from the simulator's by sampling alone, before any modelling error.
        "real_latency_p95_interval_ms": [_ms(p95_low), _ms(p95_high)],
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
