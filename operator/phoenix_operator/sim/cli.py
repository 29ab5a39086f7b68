"""``phoenix bench``: every fleet policy on the same peak-hour workload, side by side."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from phoenix_operator.lazycli import LazyGroup
from phoenix_operator.sim.bench import (
    BENCH_WARMUP,
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
    split = opts.kind != "trace" or opts.scenario in ("peak-hour", "day")

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
