"""``phoenix bench``: every fleet policy on the same peak-hour workload, side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click

from phoenix_operator.lazycli import LazyGroup
from phoenix_operator.sim.bench import (
    BENCH_WARMUP,
    BenchReport,
    WarmupSettings,
    make_context,
    run_replicated,
    to_markdown,
)
from phoenix_operator.sim.controllers import DEFAULT_POLICIES, REGISTRY, TUNING, BenchContext
from phoenix_operator.sim.fleet import LB_POLICIES, STARTUP_DISTRIBUTIONS, FleetSettings
from phoenix_operator.sim.options import (
    QUICK_REPLICATIONS,
    REPLICATIONS,
    WorkloadOptions,
    build_workload,
    describe_replications,
    describe_workload,
    options_from,
    workload_options,
)
from phoenix_operator.sim.profile import DEFAULT_PROFILE, load_profile
from phoenix_operator.sim.report import (
    output_options,
    render_table,
    report_console,
    write_outputs,
    write_plots,
)
from phoenix_operator.sim.scrape import ScrapeSettings
from phoenix_operator.sim.sweep import SWEEPS, SweepPoint, sweep_json, sweep_table, write_sweep_plot
from phoenix_operator.sim.workloads import Workload

#: ``phoenix bench NAME``: benchmarks of single components (the bare command is the fleet benchmark).
BENCH_COMMANDS: dict[str, str] = {
    "classifier": "phoenix_operator.ml.bench:bench_classifier",
    "gateway": "phoenix_operator.gateway.bench:bench_gateway",
    "operator": "phoenix_operator.cluster.benchops:bench_operator",
}


@dataclass(frozen=True)
class BenchArgs:
    """What ``phoenix bench``'s options ask for, handed to its sub-commands."""

    opts: WorkloadOptions
    names: tuple[str, ...]
    slo_ttft_s: float
    profile_name: str
    lb: str
    price: float | None
    max_replicas: int | None
    scrape: ScrapeSettings | None
    warmup: WarmupSettings
    replications: int
    out_dir: Path
    plots: bool
    #: Mean pod start-up time, s (None: the profile's).
    startup_s: float | None = None


def run_bench_args(args: BenchArgs) -> tuple[BenchReport, bool]:
    """The replicated benchmark the arguments describe; also whether knobs were tuned on a split."""
    opts, profile = args.opts, load_profile(args.profile_name)
    classes = dict(profile.classes)
    # Knobs are tuned on alternate blocks of the trace slice, the race is scored on the others.
    split = opts.kind != "trace" or opts.scenario in ("peak-hour", "day")

    def context(workload: Workload, seed: int) -> BenchContext:
        return make_context(
            workload,
            profile,
            args.slo_ttft_s,
            seed,
            opts.quick,
            args.lb,
            args.max_replicas,
            startup_s=args.startup_s,
            scrape=args.scrape,
            warmup=args.warmup,
            keep_records=args.plots,
        )

    def context_for(r: int) -> tuple[BenchContext, float]:
        wl = build_workload(opts, classes, r, "test" if split else None)
        return context(wl, opts.seed + r), float((wl.shape or {}).get("phase", 0.0))

    train = None
    if split and any(n in TUNING for n in args.names):
        train = context(build_workload(opts, classes, 0, "train"), opts.seed)
    return run_replicated(context_for, args.replications, list(args.names), args.price, train), split


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
@click.option(
    "--lb",
    type=click.Choice(list(LB_POLICIES)),
    default="least-pending",
    show_default=True,
    help="Load balancing over ready pods (least-pending: an L7 gateway; round-robin: kube-proxy).",
)
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

    Options given before a sub-command apply to it: ``phoenix bench --quick sweep multiplier
    4,6,8,10`` runs the quick benchmark at each peak multiplier. ``phoenix bench classifier``,
    ``gateway`` and ``operator`` benchmark single components.
    """
    opts = options_from(workload)
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
    args = BenchArgs(
        opts=opts,
        names=tuple(names),
        slo_ttft_s=slo_ttft,
        profile_name=profile_name,
        lb=lb,
        price=price,
        max_replicas=max_replicas,
        scrape=scrape,
        warmup=warmup,
        replications=replications or (QUICK_REPLICATIONS if opts.quick else REPLICATIONS),
        out_dir=out_dir,
        plots=not no_plots,
    )
    if ctx_click.invoked_subcommand is not None:
        ctx_click.obj = args
        return
    console = report_console(150)
    started = time.perf_counter()
    report, split = run_bench_args(args)
    ctx = report.context
    console.print(render_table(report))
    console.print(describe_workload(ctx) + ".", markup=False)
    console.print(
        f"static-avg = {ctx.static_avg} replicas (the measured window's average load), static-peak = "
        f"{ctx.static_peak} (its busiest minute at {ctx.profile.planning_utilization:.0%}), max "
        f"{ctx.settings.max_replicas}; pod start-up {ctx.settings.startup_s:g} s; LB {lb}; profile "
        f"{ctx.profile.name}. Scaling and batching count changes over the whole run.",
        markup=False,
    )
    for run in report.runs:
        if run.note:
            console.print(f"* {run.name}: {run.note}")
    console.print(describe_replications(report, split), markup=False)
    if report.missing:
        console.print(f"not registered (skipped): {', '.join(report.missing)}")
    if args.plots and report.runs:
        for path in write_plots(report, out_dir):
            console.print(f"wrote {path}")
    write_outputs(console, json_path, report.to_json, markdown_path, lambda: to_markdown(report))
    console.print(f"bench took {time.perf_counter() - started:.1f} s")


@bench.command("sweep")
@click.argument("parameter", type=click.Choice(sorted(SWEEPS)))
@click.argument("values")
@output_options(json_help="Write every point's figures as JSON here.")
@click.pass_obj
def sweep(
    args: BenchArgs, parameter: str, values: str, json_path: Path | None, markdown_path: Path | None
) -> None:
    """Run the benchmark once per value of PARAMETER (comma-separated VALUES), same seeds for all.

    multiplier: the peak multiplier; ramp: seconds of the rise to the peak (peak-hour); startup:
    the pods' mean start-up time, s (the policies are told it off by --startup-error as usual).
    """
    try:
        points = [float(v) for v in values.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(
            "use numbers separated by commas, e.g. 4,6,8,10", param_hint="VALUES"
        ) from exc
    if not points:
        raise click.BadParameter("give at least one value", param_hint="VALUES")
    if parameter == "ramp" and args.opts.scenario != "peak-hour":
        raise click.BadParameter("ramp applies to --scenario peak-hour only", param_hint="PARAMETER")
    console = report_console(150)
    started = time.perf_counter()
    results: list[SweepPoint] = []
    for value in points:
        try:
            point_args = _with(args, parameter, value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="VALUES") from exc
        report, _ = run_bench_args(point_args)
        results.append(SweepPoint(value, report))
        console.print(f"{parameter} = {value:g} done ({time.perf_counter() - started:.0f} s)")
    console.print(sweep_table(parameter, results))
    if args.plots:
        console.print(f"wrote {write_sweep_plot(parameter, results, args.out_dir)}")
    write_outputs(
        console,
        json_path,
        lambda: sweep_json(parameter, results),
        markdown_path,
        lambda: sweep_table(parameter, results, markdown=True),
    )
    console.print(f"sweep took {time.perf_counter() - started:.1f} s")


def _with(args: BenchArgs, parameter: str, value: float) -> BenchArgs:
    """The benchmark arguments with one parameter set (ValueError when it is out of range)."""
    if (value <= 0 and parameter != "ramp") or value < 0:
        raise ValueError(f"{parameter} must be positive, got {value:g}")
    if parameter == "multiplier":
        return replace(args, opts=replace(args.opts, multiplier=value))
    if parameter == "ramp":
        return replace(args, opts=replace(args.opts, ramp_s=value))
    return replace(args, startup_s=value)
