"""``phoenix bench``: every fleet policy on the same peak-hour workload, side by side."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from phoenix_operator.data import azure_trace
from phoenix_operator.lazycli import LazyGroup
from phoenix_operator.sim.bench import (
    BENCH_WARMUP,
    TABLE_HEAD,
    BenchReport,
    WarmupSettings,
    make_context,
    run_replicated,
    table_rows,
    to_markdown,
)
from phoenix_operator.sim.controllers import DEFAULT_POLICIES, REGISTRY, TUNING, BenchContext
from phoenix_operator.sim.fleet import LB_POLICIES, STARTUP_DISTRIBUTIONS, FleetSettings
from phoenix_operator.sim.metrics import step_series, ttft_p95_series
from phoenix_operator.sim.profile import DEFAULT_PROFILE, load_profile
from phoenix_operator.sim.scrape import ScrapeSettings
from phoenix_operator.sim.workloads import (
    TRACE_FORMATS,
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
#: multiplier from the first second, autoscalers starting at static-avg (the older benchmark).
SCENARIOS = ("peak-hour", "cold-peak")
#: Peak-hour shape (lead-in, rise, hold in simulated seconds): full run and ``--quick``.
PEAK_TIMES = (300.0, 1800.0, 1800.0)
QUICK_PEAK_TIMES = (60.0, 600.0, 300.0)
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

    def peak_shape(self) -> PeakShape:
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
        if opts.scenario == "peak-hour":
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
            "cold-peak: the trace at the peak multiplier from t=0, autoscalers starting at static-avg.",
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
    from phoenix_operator.sim.bench import mean_ci95

    parts = [
        f"{report.replications} replication(s) (trace phase offsets and priority draws); each figure is "
        "the mean, ± half its 95 % confidence interval (Student's t)"
    ]
    if report.bound_gpu_hours:
        mean, (low, high) = mean_ci95(report.bound_gpu_hours)
        span = f" (95 % CI {low:.3f}-{high:.3f})" if math.isfinite(low) else ""
        parts.append(f"work-conservation lower bound {mean:.3f} GPU-h{span}")
    if split:
        parts.append("scored on the held-out blocks of the trace slice (odd 5-minute blocks)")
    if report.tuning:
        chosen = "; ".join(
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in t["chosen"].items())
            for name, t in report.tuning.items()
        )
        parts.append(f"knobs tuned on the training blocks (even): {chosen}")
    return ". ".join(parts) + "."


def render_table(report: BenchReport) -> Any:
    from rich.table import Table

    ctx = report.context
    wl = ctx.workload
    lo, hi = wl.measured
    where = "" if (lo, hi) == (0.0, wl.duration_s) else f"; figures over {lo:.0f}-{hi:.0f} s"
    title = (
        f"{wl.name} x{wl.multiplier:g}: {len(wl.arrivals)} requests over {wl.duration_s:.0f} s "
        f"({wl.mean_rate:.1f} req/s), TTFT target {ctx.slo_ttft_s:g} s{where}"
    )
    table = Table(title=title)
    for col in TABLE_HEAD:
        table.add_column(col, justify="left" if col == "policy" else "right")
    notes = {run.name for run in report.runs if run.note}
    for row in table_rows(report):
        table.add_row(row[0] + (" *" if row[0] in notes else ""), *row[1:])
    return table


def write_plots(report: BenchReport, out: Path) -> list[Path]:
    """TTFT p95 over time and replicas over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    ctx = report.context
    end = ctx.workload.duration_s
    bin_s = max(5.0, end / 60.0)
    paths = []
    lo, hi = ctx.workload.measured
    shade = (lo, hi) != (0.0, end)

    fig, ax = plt.subplots(figsize=(10, 5))
    if shade:
        ax.axvspan(lo, hi, color="grey", alpha=0.12, label="measured window")
    series = [(run, *ttft_p95_series(run.result.records, bin_s, end)) for run in report.runs]
    # A bin where over 5 % of requests never got a first token has p95 = inf: drawn as a marker
    # along the top instead of a gap, so an overloaded run does not look like one without data.
    top = 2.0 * max([x for _, _, v in series for x in v if math.isfinite(x)] + [ctx.slo_ttft_s])
    for i, (run, t, v) in enumerate(series):
        finite = [x if math.isfinite(x) else float("nan") for x in v]
        (line,) = ax.plot(t, finite, label=run.name, linewidth=1.4)
        never = [c for c, x in zip(t, v, strict=True) if math.isinf(x)]
        if never:
            y = [top * 1.25**i] * len(never)
            label = f"{run.name}: over 5 % unserved"
            ax.plot(never, y, "^", color=line.get_color(), markersize=4, label=label)
    ax.axhline(
        ctx.slo_ttft_s, color="black", linestyle="--", linewidth=1, label=f"target {ctx.slo_ttft_s:g} s"
    )
    ax.set_yscale("log")
    ax.set_xlabel("time, s (requests binned by arrival)")
    ax.set_ylabel(f"TTFT p95 per {bin_s:.0f} s, s")
    ax.set_title(f"TTFT p95 over time — {ctx.workload.name} x{ctx.workload.multiplier:g}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    path = out / "ttft_p95.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    fig, ax = plt.subplots(figsize=(10, 5))
    if shade:
        ax.axvspan(lo, hi, color="grey", alpha=0.12, label="measured window")
    for run in report.runs:
        t, v = step_series(run.result.timeline, 3)
        ax.step([*t, end], [*v, v[-1]], where="post", label=run.name, linewidth=1.4)
    ax.set_xlim(0, end)
    ax.set_xlabel("time, s")
    ax.set_ylabel("replicas holding a GPU (ready + starting + draining)")
    ax.set_title(f"Replicas over time — {ctx.workload.name} x{ctx.workload.multiplier:g}")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    path = out / "replicas.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


F = TypeVar("F", bound=Callable[..., Any])


def output_options(json_help: str) -> Callable[[F], F]:
    """``--json PATH`` and ``--markdown PATH``, shared by bench, plan and fidelity."""

    def apply(command: F) -> F:
        command = click.option(
            "--markdown",
            "markdown_path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Write the table as Markdown here.",
        )(command)
        return click.option(
            "--json",
            "json_path",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help=json_help,
        )(command)

    return apply


def report_console(width: int) -> Any:
    """A rich console; without a terminal (CI, pipes) a fixed width so tables do not wrap."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=width)


def write_outputs(
    console: Any,
    json_path: Path | None,
    data: Callable[[], dict[str, Any]],
    markdown_path: Path | None,
    markdown: Callable[[], str],
) -> None:
    """Write the ``--json`` and ``--markdown`` files a command was asked for, and say so."""
    for path, render in ((json_path, lambda: json.dumps(data(), indent=2) + "\n"), (markdown_path, markdown)):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(), encoding="utf-8")
            console.print(f"wrote {path}")


#: ``phoenix bench NAME``: benchmarks of single components (the bare command is the fleet benchmark).
BENCH_COMMANDS: dict[str, str] = {
    "classifier": "phoenix_operator.ml.bench:bench_classifier",
    "gateway": "phoenix_operator.gateway.bench:bench_gateway",
    "operator": "phoenix_operator.cluster.benchops:bench_operator",
}


@click.group(
    "bench", cls=LazyGroup, lazy_commands=BENCH_COMMANDS, invoke_without_command=True, no_args_is_help=False
)
@workload_options
@click.option(
    "--policies", default=",".join(DEFAULT_POLICIES), show_default=True, help="Comma-separated policy names."
)
@click.option("--slo-ttft", type=float, default=3.0, show_default=True, help="TTFT target, seconds.")
@click.option(
    "--profile",
    "profile_name",
    default=DEFAULT_PROFILE,
    show_default=True,
    help="Packaged profile name or path to a profile YAML.",
)
@click.option("--lb", type=click.Choice(list(LB_POLICIES)), default="round-robin", show_default=True)
@click.option("--price", type=float, default=None, help="USD per GPU-hour (default: the profile's).")
@click.option(
    "--max-replicas", type=int, default=None, help="Autoscalers' maxReplicas (default 2 x static-peak)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/bench"),
    show_default=True,
    help="Directory for the PNG plots.",
)
@output_options(json_help="Write the figures as JSON here.")
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@click.option(
    "--scrape-interval", type=float, default=15.0, show_default=True, help="Prometheus scrape interval, s."
)
@click.option(
    "--rate-window",
    type=float,
    default=60.0,
    show_default=True,
    help="rate() and histogram_quantile window every controller reads over, s.",
)
@click.option(
    "--exporter-lag", type=float, default=2.0, show_default=True, help="Exporter lag behind a scrape, s."
)
@click.option(
    "--exact-metrics", is_flag=True, help="Controllers read exact figures instead of scraped metrics."
)
@click.option(
    "--startup-distribution",
    type=click.Choice(STARTUP_DISTRIBUTIONS),
    default=BENCH_WARMUP.distribution,
    show_default=True,
    help="How each new pod's start-up time is drawn around the profile's.",
)
@click.option(
    "--startup-spread",
    type=float,
    default=BENCH_WARMUP.spread,
    show_default=True,
    help="Spread of the start-up draw (lognormal sigma, or uniform half-width as a fraction).",
)
@click.option(
    "--startup-error",
    type=float,
    default=BENCH_WARMUP.told_error,
    show_default=True,
    help="Policies are told replicaStartupSeconds off by a draw within this fraction (per replication).",
)
@click.option(
    "--replications",
    type=click.IntRange(1, 100),
    default=None,
    help=f"Independent replications (trace phase offsets and priority draws): default {REPLICATIONS}, "
    f"{QUICK_REPLICATIONS} with --quick. Figures are means with 95 % confidence intervals.",
)
@click.pass_context
def bench(
    ctx_click: click.Context,
    policies: str,
    slo_ttft: float,
    profile_name: str,
    lb: str,
    price: float | None,
    max_replicas: int | None,
    out_dir: Path,
    json_path: Path | None,
    markdown_path: Path | None,
    no_plots: bool,
    replications: int | None,
    scrape_interval: float,
    rate_window: float,
    exporter_lag: float,
    exact_metrics: bool,
    startup_distribution: str,
    startup_spread: float,
    startup_error: float,
    **workload: Any,
) -> None:
    """Run the fleet policies on a peak-hour workload and compare SLO attainment and GPU cost.

    ``phoenix bench classifier`` and ``phoenix bench gateway`` benchmark single components.
    """
    if ctx_click.invoked_subcommand is not None:
        return
    console = report_console(150)
    started = time.perf_counter()
    opts = options_from(workload)
    profile = load_profile(profile_name)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [n for n in names if n not in REGISTRY and n not in DEFAULT_POLICIES]
    if unknown:
        raise click.BadParameter(
            f"unknown policies {unknown}; known: {sorted(REGISTRY)}", param_hint="--policies"
        )
    try:
        scrape = None if exact_metrics else ScrapeSettings(scrape_interval, exporter_lag, rate_window)
        warmup = WarmupSettings(startup_distribution, startup_spread, startup_error)
        FleetSettings(startup_distribution=startup_distribution, startup_spread=startup_spread)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    classes = dict(profile.classes)
    count = replications or (QUICK_REPLICATIONS if opts.quick else REPLICATIONS)
    # Knobs are tuned on alternate blocks of the trace slice, the race is scored on the others.
    split = opts.kind != "trace" or opts.scenario == "peak-hour"

    def context_for(r: int) -> tuple[BenchContext, float]:
        wl = build_workload(opts, classes, r, "test" if split else None)
        ctx = make_context(
            wl, profile, slo_ttft, opts.seed + r, opts.quick, lb, max_replicas, scrape=scrape, warmup=warmup
        )
        return ctx, float((wl.shape or {}).get("phase", 0.0))

    train = None
    if split and any(n in TUNING for n in names):
        train_wl = build_workload(opts, classes, 0, "train")
        train = make_context(
            train_wl, profile, slo_ttft, opts.seed, opts.quick, lb, max_replicas, scrape=scrape, warmup=warmup
        )
    report = run_replicated(context_for, count, names, price, train)
    ctx = report.context
    console.print(render_table(report))
    console.print(describe_workload(ctx) + ".", markup=False)
    console.print(
        f"static-avg = {ctx.static_avg} replicas (the measured window's average load), static-peak = "
        f"{ctx.static_peak} (its busiest minute at {profile.planning_utilization:.0%}), max "
        f"{ctx.settings.max_replicas}; pod start-up {ctx.settings.startup_s:g} s; LB {lb}; profile "
        f"{profile.name}. Scaling and batching count changes over the whole run.",
        markup=False,
    )
    for run in report.runs:
        if run.note:
            console.print(f"* {run.name}: {run.note}")
    console.print(describe_replications(report, split), markup=False)
    if report.missing:
        console.print(f"not registered (skipped): {', '.join(report.missing)}")
    if not no_plots and report.runs:
        for path in write_plots(report, out_dir):
            console.print(f"wrote {path}")
    write_outputs(console, json_path, report.to_json, markdown_path, lambda: to_markdown(report))
    console.print(f"bench took {time.perf_counter() - started:.1f} s")
