"""Workload options shared by ``phoenix bench``, ``phoenix plan`` and the demo: one way to
name a workload on the command line and build it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np

from phoenix_operator.data import azure_trace
from phoenix_operator.sim.bench import (
    BenchReport,
)
from phoenix_operator.sim.controllers import BenchContext
from phoenix_operator.sim.workloads import (
    TRACE_FORMATS,
    DayShape,
    PeakShape,
    Workload,
    burst_workload,
    diurnal_workload,
    peak_workload,
    trace_workload,
)

#: Peak multiplier at which the average-sized fleet (4 H100s) shows a TTFT p95 of several
#: seconds over the peak on the Azure conversation trace, as users report (docs/benchmark.md).
DEFAULT_MULTIPLIER = 6.55
#: Scenarios for ``--workload trace``: the default replays a peak hour arriving (normal load, a
#: smooth rise, the peak held and measured); ``cold-peak`` replays the trace at the peak
#: multiplier from the first second, autoscalers starting at static-avg (the older benchmark);
#: ``day`` replays a whole day on a diurnal envelope (night trough 15 % of the peak), measured whole.
SCENARIOS = ("peak-hour", "cold-peak", "day")
#: Peak-hour shape (lead-in, rise, hold in simulated seconds): full run and ``--quick``.
PEAK_TIMES = (300.0, 1800.0, 1800.0)
QUICK_PEAK_TIMES = (60.0, 600.0, 300.0)
#: The day scenario's length: 24 hours; ``--quick`` compresses the daily cycle into 6 hours
#: (the trace's minute-scale bursts are the same, the envelope four times steeper).
DAY_S = 86_400.0
QUICK_DAY_S = 21_600.0
#: Night trough of the day scenario, as a share of the peak (support traffic's daily cycle).
DAY_TROUGH = 0.15
#: Replications of ``phoenix bench``: full run and ``--quick``.
REPLICATIONS = 10
QUICK_REPLICATIONS = 3
#: ``--quick --scenario cold-peak`` replays this half hour of the trace (trace seconds): the
#: request-count hump, at about the same load per static-avg replica as the full hour.
QUICK_WINDOW = (900.0, 2700.0)


def default_trace() -> Path:
    """The Azure conversation trace that ships as package data (attribution in its README)."""
    return azure_trace()


def _parse_window(value: str | None) -> tuple[float, float] | None:
    if not value:
        return None
    try:
        start, end = (float(x) for x in value.split(","))
    except ValueError as exc:
        raise click.BadParameter("use START,END in trace seconds, e.g. 600,2400") from exc
    return start, end


@dataclass(frozen=True)
class WorkloadOptions:
    """How ``phoenix bench`` and ``phoenix plan`` build their workload (the shared options)."""

    kind: str = "trace"
    scenario: str = "peak-hour"
    trace: Path | None = None
    multiplier: float = DEFAULT_MULTIPLIER
    window: tuple[float, float] | None = None
    quick: bool = False
    seed: int = 0
    base_multiplier: float = 1.0
    lead_in_s: float | None = None
    ramp_s: float | None = None
    hold_s: float | None = None
    trace_format: str = "auto"

    def peak_shape(self) -> PeakShape | DayShape:
        if self.scenario == "day":
            return DayShape(
                peak=self.multiplier, trough=DAY_TROUGH, day_s=QUICK_DAY_S if self.quick else DAY_S
            )
        lead, ramp, hold = QUICK_PEAK_TIMES if self.quick else PEAK_TIMES
        return PeakShape(
            peak=self.multiplier,
            base=self.base_multiplier,
            lead_in_s=lead if self.lead_in_s is None else self.lead_in_s,
            ramp_s=ramp if self.ramp_s is None else self.ramp_s,
            hold_s=hold if self.hold_s is None else self.hold_s,
        )


#: Alternate 5-minute blocks of the trace slice: tuning runs on ``train``, replications are
#: scored on ``test``.
PARTS = ("train", "test")
PART_BLOCK_S = 300.0


def replication_phase(seed: int, replication: int) -> float:
    """Replication ``r``'s trace phase offset: an independent uniform draw (0 for r = 0)."""
    if replication == 0:
        return 0.0
    return float(np.random.default_rng([seed, replication, 0xFA5E]).uniform(0.0, 1.0))


def build_workload(
    opts: WorkloadOptions, classes: dict[str, int], replication: int = 0, part: str | None = None
) -> Workload:
    """The workload the options describe, with the profile's (or a spec's) priority classes.

    ``replication`` r > 0 replays the trace from an independent phase offset and draws the
    priority classes (and synthetic traffic) with seed + r; ``part`` replays only the training
    or the held-out blocks of the trace slice (alternate 5-minute blocks).
    """
    if part is not None and part not in PARTS:
        raise click.BadParameter(f"part must be one of {PARTS}")
    seed = opts.seed + replication
    if opts.kind == "trace":
        path = opts.trace or default_trace()
        window = opts.window
        if opts.scenario in ("peak-hour", "day"):
            try:
                return peak_workload(
                    path,
                    opts.peak_shape(),
                    window=window,
                    seed=seed,
                    classes=classes,
                    fmt=opts.trace_format,
                    phase=replication_phase(opts.seed, replication),
                    part=part,
                    block_s=PART_BLOCK_S,
                )
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from exc
        if window is None and opts.quick:
            window = QUICK_WINDOW
        return trace_workload(
            path, multiplier=opts.multiplier, window=window, seed=seed, classes=classes, fmt=opts.trace_format
        )
    duration = 300.0 if opts.quick else 1800.0
    # Synthetic traffic starts sized for its first minute, like the peak-hour scenario.
    start = (0.0, 60.0)
    if part == "train":
        seed += 10_000
    if opts.kind == "diurnal":
        wl = diurnal_workload(duration, mean_rate=5.5 * opts.multiplier, seed=seed, classes=classes)
    else:
        wl = burst_workload(duration, base_rate=5.5 * opts.multiplier, seed=seed, classes=classes)
    return replace(wl, multiplier=opts.multiplier, start_window_s=start)


def workload_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The workload options ``phoenix bench`` and ``phoenix plan`` share (one definition)."""
    options = [
        click.option(
            "--trace",
            "trace",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            default=None,
            help="CSV with TIMESTAMP, ContextTokens, GeneratedTokens, or Mooncake JSONL with timestamp (ms), "
            "input_length, output_length (default: the Azure LLM 2023 conversation trace shipped "
            "with the package).",
        ),
        click.option(
            "--trace-format",
            type=click.Choice(TRACE_FORMATS),
            default="auto",
            show_default=True,
            help="auto: .jsonl/.json is Mooncake, anything else the Azure CSV.",
        ),
        click.option(
            "--workload",
            "kind",
            type=click.Choice(["trace", "diurnal", "burst"]),
            default="trace",
            show_default=True,
        ),
        click.option(
            "--scenario",
            type=click.Choice(SCENARIOS),
            default="peak-hour",
            show_default=True,
            help="peak-hour: normal load, a smooth rise to the peak, the peak held and measured; "
            "cold-peak: the trace at the peak multiplier from t=0, autoscalers starting at static-avg; "
            "day: 24 hours (--quick: 6) of the trace on a diurnal envelope, night at 15 % of the peak, "
            "measured whole.",
        ),
        click.option(
            "--multiplier",
            type=float,
            default=DEFAULT_MULTIPLIER,
            show_default=True,
            help="Peak time compression: at the peak the trace plays this many times faster.",
        ),
        click.option(
            "--base-multiplier",
            type=float,
            default=1.0,
            show_default=True,
            help="peak-hour: the multiplier of the normal load before the rise.",
        ),
        click.option(
            "--lead-in",
            "lead_in_s",
            type=float,
            default=None,
            help="peak-hour: seconds of normal load (300; quick 120).",
        ),
        click.option(
            "--ramp",
            "ramp_s",
            type=float,
            default=None,
            help="peak-hour: seconds of the rise (1800; quick 900).",
        ),
        click.option(
            "--hold",
            "hold_s",
            type=float,
            default=None,
            help="peak-hour: seconds the peak is held and measured (1800; quick 600).",
        ),
        click.option(
            "--window",
            default=None,
            help="Trace slice START,END in trace seconds (before compression); peak-hour loops it.",
        ),
        click.option(
            "--quick", is_flag=True, help="A shorter run, fewer replications, a smaller oracle search."
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Priority mix and synthetic traffic seed."
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def options_from(kwargs: dict[str, Any]) -> WorkloadOptions:
    """Pop the shared workload options out of a command's keyword arguments."""
    return WorkloadOptions(
        kind=kwargs.pop("kind"),
        scenario=kwargs.pop("scenario"),
        trace=kwargs.pop("trace"),
        multiplier=kwargs.pop("multiplier"),
        window=_parse_window(kwargs.pop("window")),
        quick=kwargs.pop("quick"),
        seed=kwargs.pop("seed"),
        base_multiplier=kwargs.pop("base_multiplier"),
        lead_in_s=kwargs.pop("lead_in_s"),
        ramp_s=kwargs.pop("ramp_s"),
        hold_s=kwargs.pop("hold_s"),
        trace_format=kwargs.pop("trace_format"),
    )


def describe_workload(ctx: BenchContext) -> str:
    """One line saying what was simulated and what the table measures."""
    wl = ctx.workload
    lo, hi = wl.measured
    shape = wl.shape or {}
    if shape.get("kind") == "day":
        night, peak = shape["peak_multiplier"] * shape["trough"], shape["peak_multiplier"]
        return (
            f"a day of {shape['day_s'] / 3600:g} h: the trace on a diurnal envelope from x{night:g} at "
            f"night to x{peak:g} at the peak (trace played {shape['trace_loops']:g} times); "
            "table measured over the whole day; "
            f"autoscalers start at {ctx.settings.initial_replicas}"
        )
    if shape.get("kind") == "peak-hour":
        return (
            f"peak hour: {shape['lead_in_s']:g} s at x{shape['base_multiplier']:g}, a {shape['ramp_s']:g} s "
            f"rise to x{shape['peak_multiplier']:g}, the peak held {shape['hold_s']:g} s (trace played "
            f"{shape['trace_loops']:g} times); table measured over the peak, {lo:g}-{hi:g} s; "
            f"autoscalers start at {ctx.settings.initial_replicas}"
        )
    return (
        f"{wl.name} x{wl.multiplier:g} from t=0; table measured over the whole run; autoscalers start at "
        f"{ctx.settings.initial_replicas}"
    )


def describe_replications(report: BenchReport, split: bool) -> str:
    """How the figures were replicated, how knobs were tuned, and the GPU-hour lower bound."""
    from phoenix_operator.sim.bench import mean_ci95, oracle_search_text

    parts = [
        f"{report.replications} replication(s) (trace phase offsets and priority draws); each figure is "
        "the mean, ± half its 95 % confidence interval (Student's t)"
    ]
    if report.bound_gpu_hours:
        mean, (low, high) = mean_ci95(report.bound_gpu_hours)
        span = f" (95 % CI {low:.3f}-{high:.3f})" if math.isfinite(low) else ""
        parts.append(f"work-conservation lower bound {mean:.3f} GPU-h{span}")
    search = oracle_search_text(report)
    if search:
        parts.append(search)
    if split:
        parts.append("scored on the held-out blocks of the trace slice (odd 5-minute blocks)")
    if report.tuning:
        chosen = "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in t["chosen"].items())
            for name, t in report.tuning.items()
        )
        parts.append(f"knobs tuned on the training blocks (even): {chosen}")
    return ". ".join(parts) + "."
