"""Run several fleet policies on the same workloads and collect comparable figures.

Every policy sees the same arrivals, cost model, start-up delay, load balancer and batching start
point. Starting fleets, the measured window, replications and tuning: docs/benchmark.md ("The
scenario: a peak hour arrives", "The policies", "Replications, confidence intervals ...").
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from phoenix_operator.sim.controllers import (
    DEFAULT_POLICIES,
    REGISTRY,
    REGISTRY_STATIC,
    TUNING,
    BenchContext,
    StaticController,
    bound_gpu_seconds,
    replica_capacity_rps,
    replica_load,
    size_for,
)
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.fleet import FleetResult, FleetSettings, run_fleet
from phoenix_operator.sim.metrics import json_number, summarize
from phoenix_operator.sim.profile import Profile
from phoenix_operator.sim.scrape import ScrapeSettings
from phoenix_operator.sim.workloads import Workload

#: The metric pipeline of ``phoenix bench`` and ``phoenix plan``: Prometheus' defaults.
DEFAULT_SCRAPE = ScrapeSettings()


@dataclass(frozen=True)
class WarmupSettings:
    """How long a new pod takes to serve, and how wrong the policies' idea of it is.

    Each pod's start-up time is drawn from ``distribution`` (``fixed``, ``uniform`` within
    ± ``spread``, ``lognormal`` with sigma ``spread``) around the profile's; the policies are
    told the profile's value times ``1 + e``, ``e`` drawn uniformly in ± ``told_error`` once per
    seed (a user's ``replicaStartupSeconds`` is a guess, and not the same guess every time).
    """

    distribution: str = "fixed"
    spread: float = 0.0
    told_error: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.told_error < 1.0:
            raise ValueError("told_error must be in [0, 1)")

    def told(self, startup_s: float, seed: int) -> float | None:
        """The start-up time the policies are told (None = the true mean, ``startup_s``)."""
        if self.told_error == 0:
            return None
        error = np.random.default_rng([seed, 0x7E11]).uniform(-self.told_error, self.told_error)
        return float(startup_s * (1.0 + error))


#: ``phoenix bench``'s warm-up: lognormal start-up times (sigma 0.2) around the profile's, the
#: policies told it within ±30 %.
BENCH_WARMUP = WarmupSettings("lognormal", 0.2, 0.3)


@dataclass
class PolicyRun:
    name: str
    result: FleetResult
    figures: dict[str, Any]
    wall_s: float
    note: str = ""


#: What "meets the SLO" means for static-best and for choosing tuned knobs: the oracle's goal,
#: over the measured window (99 % of requests, 99.9 % of urgent ones within the TTFT target).
SLO_GOAL = 0.99
URGENT_SLO_GOAL = 0.999


def meets_slo(figures: dict[str, Any]) -> bool:
    urgent = figures["urgent_slo_attainment"]
    return bool(figures["slo_attainment"] >= SLO_GOAL and (math.isnan(urgent) or urgent >= URGENT_SLO_GOAL))


@dataclass
class BenchReport:
    #: The first replication's context (it describes the workload; its runs are plotted).
    context: BenchContext
    price_per_gpu_hour_usd: float
    #: The first replication's runs.
    runs: list[PolicyRun] = field(default_factory=list)
    #: Requested policies that are not registered.
    missing: list[str] = field(default_factory=list)
    #: Policy -> its figures in each replication (empty for a single run).
    replicated: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: Work-conservation lower bound on GPU-hours, per replication.
    bound_gpu_hours: list[float] = field(default_factory=list)
    #: Policy -> knobs chosen on the training workload, and every candidate's training figures.
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each replication's trace phase offset (share of the trace slice it starts in).
    phases: list[float] = field(default_factory=list)

    @property
    def replications(self) -> int:
        return max(1, len(self.bound_gpu_hours))

    def figures(self) -> list[tuple[str, dict[str, Any]]]:
        """(policy, figures) in report order: means with ``<figure>_ci95`` when replicated."""
        if not self.replicated:
            return [(run.name, run.figures) for run in self.runs]
        return [(name, aggregate(rows)) for name, rows in self.replicated.items()]

    def to_json(self) -> dict[str, Any]:
        ctx = self.context
        workload = ctx.workload.summary()
        workload.update(
            {
                "profile": ctx.profile.name,
                "startup_s": ctx.settings.startup_s,
                "load_balancer": ctx.settings.lb,
                "static_avg_replicas": ctx.static_avg,
                "static_peak_replicas": ctx.static_peak,
                "autoscaler_start_replicas": ctx.settings.initial_replicas,
                "max_replicas": ctx.settings.max_replicas,
                "replica_capacity_rps": round(ctx.replica_capacity_rps, 3),
                "price_per_gpu_hour_usd": self.price_per_gpu_hour_usd,
                "quick": ctx.quick,
            }
        )
        if self.bound_gpu_hours:
            bound = aggregate([{"bound_gpu_hours": b} for b in self.bound_gpu_hours])
            workload.update(
                {
                    "replications": len(self.bound_gpu_hours),
                    **_jsonable(bound),
                    "replication_phases": [round(float(x), 4) for x in self.phases],
                }
            )
        policies = [{"name": name, **_jsonable(figures)} for name, figures in self.figures()]
        data: dict[str, Any] = {"workload": workload, "slo_ttft_s": ctx.slo_ttft_s, "policies": policies}
        if self.tuning:
            data["tuning"] = _jsonable(self.tuning)
        return data


def _jsonable(figures: dict[str, Any]) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if isinstance(value, float):
            return json_number(value)
        if isinstance(value, dict):
            return _jsonable(value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    return {key: convert(value) for key, value in figures.items()}


def mean_ci95(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
    """Mean and two-sided 95 % confidence interval (Student's t, n - 1 degrees of freedom).

    One value gives no interval (NaN bounds); an infinite value (a run that left requests
    unserved has an infinite TTFT percentile) makes the mean and interval infinite.
    """
    from scipy import stats

    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, (math.nan, math.nan)
    mean = float(x.mean())
    if x.size < 2 or not np.isfinite(x).all():
        return mean, (math.nan, math.nan) if x.size < 2 else (mean, mean)
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, (mean - half, mean + half)


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Replications' figures -> each number's mean plus ``<name>_ci95`` [low, high]."""
    out: dict[str, Any] = {}
    for key, first in rows[0].items():
        if isinstance(first, bool) or not isinstance(first, (int, float, dict)):
            out[key] = first
        elif isinstance(first, dict):
            out[key] = aggregate([row[key] for row in rows])
        else:
            mean, (low, high) = mean_ci95([float(row[key]) for row in rows])
            out[key] = mean
            out[f"{key}_ci95"] = [low, high]
    return out


def half_interval(figures: dict[str, Any], key: str, scale: float = 1.0) -> float:
    """Half the 95 % interval of a figure, 0 when it has none (one replication, or infinite)."""
    ci = figures.get(f"{key}_ci95")
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return 0.0
    return scale * (ci[1] - ci[0]) / 2


def ci_text(figures: dict[str, Any], key: str, scale: float = 1.0, digits: int = 2) -> str:
    """`` ±h`` (half the 95 % interval) when the figures carry one, else empty."""
    ci = figures.get(f"{key}_ci95")
    if not ci or any(v is None or not math.isfinite(v) for v in ci):
        return ""
    return f" ±{scale * (ci[1] - ci[0]) / 2:.{digits}f}"


def table_rows(report: BenchReport) -> list[list[str]]:
    """The table's cells, one row per policy (means, ± half the 95 % CI when replicated)."""
    rows = []
    for name, f in report.figures():
        rows.append(
            [
                name,
                pct(f["slo_attainment"]) + ci_text(f, "slo_attainment", 100),
                pct(f["urgent_slo_attainment"]) + ci_text(f, "urgent_slo_attainment", 100),
                fmt_seconds(f["ttft_p50_s"]),
                fmt_seconds(f["ttft_p95_s"]) + ci_text(f, "ttft_p95_s"),
                fmt_seconds(f["ttft_p99_s"]),
                f"{f['gpu_hours']:.3f}" + ci_text(f, "gpu_hours", digits=3),
                f"{f['cost_usd']:.2f}",
                f"{f['mean_replicas']:.2f}",
                f"{f['scaling_actions']:.1f}" if report.replicated else str(f["scaling_actions"]),
                f"{f['batching_changes']:.1f}" if report.replicated else str(f["batching_changes"]),
            ]
        )
    return rows


TABLE_HEAD = (
    "policy",
    "SLO att.",
    "urgent att.",
    "TTFT p50 s",
    "p95 s",
    "p99 s",
    "GPU-h",
    "cost $",
    "mean repl.",
    "scaling",
    "batching",
)


def to_markdown(report: BenchReport) -> str:
    """The benchmark table as Markdown (for docs and pull requests)."""
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + " --- |" * len(TABLE_HEAD)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    if report.bound_gpu_hours:
        mean, (low, high) = mean_ci95(report.bound_gpu_hours)
        lines.append("")
        lines.append(
            f"Work-conservation lower bound: {mean:.3f} GPU-h (95 % CI {low:.3f}-{high:.3f}); "
            f"{report.replications} replications, mean ± half the 95 % CI."
        )
        search = oracle_search_text(report)
        if search:
            lines.append(search[0].upper() + search[1:] + ".")
    return "\n".join(lines) + "\n"


def oracle_search_text(report: BenchReport) -> str:
    """How far the oracle was searched and how far it stays above the lower bound ("" without
    an oracle): its remaining gap, stated with every run."""
    oracle = next((f for name, f in report.figures() if "search" in f), None)
    if oracle is None:
        return ""
    search = oracle["search"]
    n = report.replications
    text = (
        f"the oracle converged in {round(search['converged'] * n)} of {n} replication(s) "
        f"({search['simulations']:.0f} simulations on average)"
    )
    if report.bound_gpu_hours:
        bound = float(np.mean(report.bound_gpu_hours))
        text += f", {oracle['gpu_hours'] / bound:.2f}x the lower bound"
    return text


def pct(value: float) -> str:
    """A fraction as a percentage for tables."""
    return "-" if math.isnan(value) else f"{100 * value:.2f}%"


def make_context(
    workload: Workload,
    profile: Profile,
    slo_ttft_s: float = 3.0,
    seed: int = 0,
    quick: bool = False,
    lb: str = "least-pending",
    max_replicas: int | None = None,
    startup_s: float | None = None,
    cost: LLMEngineCost | BlockingBatchCost | None = None,
    tuned: dict[str, dict[str, Any]] | None = None,
    scrape: ScrapeSettings | None = DEFAULT_SCRAPE,
    warmup: WarmupSettings | None = None,
    keep_records: bool = True,
) -> BenchContext:
    """Size the static fleets and the autoscalers' bounds for this workload.

    Controllers read metrics through ``scrape`` (Prometheus as production runs it; None = exact
    figures). ``warmup`` draws each pod's start-up time around the profile's and tells the
    policies a ``replicaStartupSeconds`` that is off by up to its ``told_error``.
    """
    cost = cost or LLMEngineCost(profile)
    mbs = profile.batching.max_batch_size
    capacity = replica_capacity_rps(workload, cost, mbs)
    mean_load, peak_load = replica_load(workload, cost, mbs, span=workload.measured)
    # Today's fleet: just enough capacity for the measured window's average load. The peak
    # fleet: its busiest minute at the planning utilisation (headroom), as a capacity planner
    # would size it.
    static_avg = size_for(mean_load)
    static_peak = max(static_avg, size_for(peak_load, profile.planning_utilization))
    # Autoscalers start with the fleet the workload's first minutes need at the planning
    # utilisation (the peak-hour scenario's normal load), or at static-avg for a cold start.
    start = static_avg
    if workload.start_window_s is not None:
        start = size_for(
            replica_load(workload, cost, mbs, span=workload.start_window_s)[1], profile.planning_utilization
        )
    true_startup = profile.startup_s if startup_s is None else startup_s
    warm = warmup or WarmupSettings()
    settings = FleetSettings(
        initial_replicas=start,
        min_replicas=1,
        max_replicas=max_replicas or max(2 * static_peak, static_peak + 2),
        startup_s=true_startup,
        startup_distribution=warm.distribution,
        startup_spread=warm.spread,
        told_startup_s=warm.told(true_startup, seed),
        scrape=scrape,
        lb=lb,
        batching_apply_s=profile.batching_apply_s,
        batching_pause_s=profile.batching_pause_s,
        seed=seed,
    )
    return BenchContext(
        workload=workload,
        profile=profile,
        cost=cost,
        slo_ttft_s=slo_ttft_s,
        settings=settings,
        static_avg=static_avg,
        static_peak=static_peak,
        replica_capacity_rps=capacity,
        seed=seed,
        quick=quick,
        tuned=dict(tuned or {}),
        keep_records=keep_records,
    )


def run_policy(ctx: BenchContext, name: str, price_per_gpu_hour_usd: float) -> PolicyRun:
    """Create the policy from the registry and simulate the workload under it."""
    started = time.perf_counter()
    return run_controller(ctx, REGISTRY[name](ctx), name, price_per_gpu_hour_usd, started)


def run_controller(
    ctx: BenchContext,
    controller: Any,
    name: str,
    price_per_gpu_hour_usd: float,
    started: float | None = None,
) -> PolicyRun:
    """Simulate the workload under a controller; figures over the measured window."""
    started = time.perf_counter() if started is None else started
    # A policy that sizes its own start (static fleets, the oracle, Phoenix from its spec) says so.
    initial = ctx.settings.initial_replicas
    if isinstance(getattr(controller, "initial_replicas", None), int):
        initial = int(controller.initial_replicas)
    settings = replace(
        ctx.settings,
        initial_replicas=initial,
        max_replicas=max(ctx.settings.max_replicas, initial),
    )
    result = run_fleet(
        ctx.workload.arrivals,
        ctx.cost,
        ctx.profile.batching,
        settings,
        controller,
        ctx.slo_ttft_s,
        dict(ctx.profile.classes),
        horizon_s=ctx.workload.duration_s,
    )
    whole = (0.0, max(result.horizon_s, 1e-9))
    figures = measure(result, ctx.slo_ttft_s, price_per_gpu_hour_usd, ctx.workload.measured)
    figures.update(
        {
            "scaling_actions": result.scaling_actions,
            "batching_changes": result.batching_changes,
            "peak_replicas": max((row[3] for row in result.timeline), default=0),
            # Share of admitted prompt tokens the engines' prefix caches served (whole run).
            "prefix_hit_rate": math.nan if result.prefix_hit_rate is None else result.prefix_hit_rate,
        }
    )
    if ctx.workload.measured != whole:
        figures["whole_run"] = measure(result, ctx.slo_ttft_s, price_per_gpu_hour_usd, whole)
    if isinstance(getattr(controller, "converged", None), bool):
        # A searched schedule says how hard it was searched (share converged, once replicated).
        figures["search"] = {
            "simulations": int(controller.iterations_run),
            "converged": float(controller.converged),
        }
    wall = time.perf_counter() - started
    figures["wall_s"] = wall
    if not ctx.keep_records:
        result = replace(result, records=[])
    note = ""
    if getattr(controller, "feasible", True) is False:
        note = "no schedule met the SLO over the measured window within the search budget"
    return PolicyRun(name=name, result=result, figures=figures, wall_s=wall, note=note)


def measure(
    result: FleetResult, slo_ttft_s: float, price_per_gpu_hour_usd: float, window: tuple[float, float]
) -> dict[str, Any]:
    """Figures over one window: requests *arriving* in it, GPU time billed in it."""
    lo, hi = window
    last = hi >= result.horizon_s
    records = [r for r in result.records if lo <= r.arrival_s and (r.arrival_s < hi or last)]
    figures = summarize(records, slo_ttft_s)
    gpu_seconds = result.gpu_seconds(lo, hi)
    figures.update(
        {
            "window_s": [lo, hi],
            "gpu_hours": gpu_seconds / 3600.0,
            "cost_usd": gpu_seconds / 3600.0 * price_per_gpu_hour_usd,
            "mean_replicas": gpu_seconds / max(hi - lo, 1e-9),
        }
    )
    return figures


def run_bench(
    ctx: BenchContext,
    policies: Sequence[str] = DEFAULT_POLICIES,
    price_per_gpu_hour_usd: float | None = None,
) -> BenchReport:
    price = ctx.profile.price_per_gpu_hour_usd if price_per_gpu_hour_usd is None else price_per_gpu_hour_usd
    report = BenchReport(context=ctx, price_per_gpu_hour_usd=price)
    # Deterministic runs are shared, not repeated: fixed fleets of one size, and phoenix-tuned
    # when tuning kept the defaults (it is then the same controller as phoenix).
    statics: dict[int, PolicyRun] = {}
    for name in policies:
        if name not in REGISTRY:
            report.missing.append(name)
            continue
        size = _static_size(ctx, name, statics, price)
        done = {run.name: run for run in report.runs}
        if size is not None:
            run = _static_run(ctx, size, statics, price)
            report.runs.append(replace(run, name=name))
        elif name == "phoenix-tuned" and "phoenix" in done and ctx.knobs(name) == _defaults(name):
            report.runs.append(replace(done["phoenix"], name=name))
        else:
            report.runs.append(run_policy(ctx, name, price))
    return report


def _defaults(name: str) -> dict[str, Any]:
    return {k: v[0] for k, v in TUNING.get(name, {}).items()}


def _static_run(ctx: BenchContext, size: int, cache: dict[int, PolicyRun], price: float) -> PolicyRun:
    if size not in cache:
        cache[size] = run_controller(ctx, StaticController(f"static-{size}", size), f"static-{size}", price)
    return cache[size]


def _static_size(ctx: BenchContext, name: str, cache: dict[int, PolicyRun], price: float) -> int | None:
    if REGISTRY.get(name) is not REGISTRY_STATIC.get(name):
        return None  # replaced in the registry: not the benchmark's own fixed fleet
    if name == "static-avg":
        return ctx.static_avg
    if name == "static-peak":
        return ctx.static_peak
    if name == "static-best":
        return smallest_static_fleet(ctx, cache, price)
    return None


def fmt_seconds(value: float) -> str:
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.2f}"


def smallest_static_fleet(
    ctx: BenchContext, cache: dict[int, PolicyRun] | None = None, price_per_gpu_hour_usd: float = 0.0
) -> int:
    """The smallest fixed fleet that meets the SLO over the measured window (a hindsight
    search, like the oracle's): from static-avg, up while it fails, down while it passes.
    ``cache`` keeps every fleet size's run."""
    runs = {} if cache is None else cache

    def passes(size: int) -> bool:
        return meets_slo(_static_run(ctx, size, runs, price_per_gpu_hour_usd).figures)

    size = ctx.static_avg
    limit = max(ctx.settings.max_replicas, ctx.static_peak) * 2
    if passes(size):
        while size > 1 and passes(size - 1):
            size -= 1
        return size
    while size < limit and not passes(size + 1):
        size += 1
    return min(size + 1, limit)


def tune(
    train: BenchContext, policies: Sequence[str], price_per_gpu_hour_usd: float = 0.0
) -> dict[str, dict[str, Any]]:
    """Choose each tunable policy's knobs on the training workload.

    Every candidate in :data:`TUNING` (at most two knobs, at most four runs per policy, the same
    budget for every policy) is simulated on ``train``; the cheapest that meets the SLO wins,
    else the one with the highest attainment. Returns policy -> ``{"chosen": knobs,
    "candidates": [{knobs, slo_attainment, urgent_slo_attainment, gpu_hours, meets_slo}]}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in policies:
        grid = TUNING.get(name)
        if not grid:
            continue
        keys = list(grid)
        candidates = []
        for values in itertools.product(*(grid[k] for k in keys)):
            knobs = dict(zip(keys, values, strict=True))
            ctx = replace(train, tuned={**train.tuned, name: knobs})
            f = run_policy(ctx, name, price_per_gpu_hour_usd).figures
            candidates.append(
                {
                    "knobs": knobs,
                    "slo_attainment": f["slo_attainment"],
                    "urgent_slo_attainment": f["urgent_slo_attainment"],
                    "gpu_hours": f["gpu_hours"],
                    "meets_slo": meets_slo(f),
                }
            )
        feasible = [c for c in candidates if c["meets_slo"]]
        best = (
            min(feasible, key=lambda c: c["gpu_hours"])
            if feasible
            else max(candidates, key=lambda c: (c["slo_attainment"], -c["gpu_hours"]))
        )
        out[name] = {"chosen": best["knobs"], "candidates": candidates}
    return out


def run_replicated(
    context_for: Callable[[int], tuple[BenchContext, float]],
    replications: int,
    policies: Sequence[str] = DEFAULT_POLICIES,
    price_per_gpu_hour_usd: float | None = None,
    train: BenchContext | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Every policy on ``replications`` workloads (``context_for(r)`` -> (context, phase));
    tuned knobs chosen first on ``train`` (skipped when None)."""
    if replications < 1:
        raise ValueError("replications must be >= 1")
    tuning = tune(train, policies, 0.0) if train is not None else {}
    chosen = {name: t["chosen"] for name, t in tuning.items()}
    report: BenchReport | None = None
    for r in range(replications):
        ctx, phase = context_for(r)
        ctx = replace(ctx, tuned={**ctx.tuned, **chosen})
        single = run_bench(ctx, policies, price_per_gpu_hour_usd)
        if report is None:
            report = single
            report.tuning = tuning
            report.replicated = {run.name: [] for run in single.runs}
        for run in single.runs:
            report.replicated[run.name].append(run.figures)
        lo, hi = ctx.workload.measured
        bound = bound_gpu_seconds(
            ctx.workload, ctx.cost, ctx.profile.batching.max_batch_size, (lo, hi), ctx.settings.min_replicas
        )
        report.bound_gpu_hours.append(bound / 3600.0)
        report.phases.append(phase)
        if progress is not None:
            progress(f"replication {r + 1}/{replications} done")
    assert report is not None
    return report
