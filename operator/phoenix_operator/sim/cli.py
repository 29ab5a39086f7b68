"""``phoenix bench``: every fleet policy on the same peak-hour workload, side by side."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import click

from phoenix_operator.sim.bench import BenchReport, fmt_seconds, make_context, pct, run_bench, to_markdown
from phoenix_operator.sim.controllers import DEFAULT_POLICIES, REGISTRY
from phoenix_operator.sim.fleet import LB_POLICIES
from phoenix_operator.sim.metrics import step_series, ttft_p95_series
from phoenix_operator.sim.profile import DEFAULT_PROFILE, load_profile
from phoenix_operator.sim.workloads import Workload, burst_workload, diurnal_workload, trace_workload

#: Peak multiplier at which the average-sized fleet (4 H100s) shows a TTFT p95 of ~8 s on the
#: Azure conversation trace, as users report at their peak (docs/benchmark.md).
DEFAULT_MULTIPLIER = 6.55
#: ``--quick`` replays this half hour of the trace (trace seconds): the request-count hump, at
#: about the same load per static-avg replica as the full hour.
QUICK_WINDOW = (900.0, 2700.0)
TRACE_RELATIVE = Path("..") / "shared" / "traces" / "azure-llm-2023-conv.csv"


def default_trace() -> Path | None:
    """``../shared/traces/...`` next to the repository (or the working directory), if present."""
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo):
        candidate = (base / TRACE_RELATIVE).resolve()
        if candidate.is_file():
            return candidate
    return None


def _parse_window(value: str | None) -> tuple[float, float] | None:
    if not value:
        return None
    try:
        start, end = (float(x) for x in value.split(","))
    except ValueError as exc:
        raise click.BadParameter("use START,END in trace seconds, e.g. 600,2400") from exc
    return start, end


def build_workload(
    kind: str,
    trace: Path | None,
    multiplier: float,
    window: tuple[float, float] | None,
    quick: bool,
    seed: int,
    classes: dict[str, int],
) -> Workload:
    if kind == "trace":
        path = trace or default_trace()
        if path is None:
            raise click.UsageError(
                f"no trace found at {TRACE_RELATIVE} (relative to the repository); pass --trace PATH "
                "or use --workload diurnal|burst"
            )
        if window is None and quick:
            window = QUICK_WINDOW
        return trace_workload(path, multiplier=multiplier, window=window, seed=seed, classes=classes)
    duration = 300.0 if quick else 1800.0
    if kind == "diurnal":
        return diurnal_workload(duration, mean_rate=5.5 * multiplier, seed=seed, classes=classes)
    return burst_workload(duration, base_rate=5.5 * multiplier, seed=seed, classes=classes)


def render_table(report: BenchReport) -> Any:
    from rich.table import Table

    ctx = report.context
    wl = ctx.workload
    title = (
        f"{wl.name} x{wl.multiplier:g}: {len(wl.arrivals)} requests over {wl.duration_s:.0f} s "
        f"({wl.mean_rate:.1f} req/s), TTFT target {ctx.slo_ttft_s:g} s"
    )
    table = Table(title=title)
    for col in (
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
    ):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for run in report.runs:
        f = run.figures
        table.add_row(
            run.name + (" *" if run.note else ""),
            pct(f["slo_attainment"]),
            pct(f["urgent_slo_attainment"]),
            fmt_seconds(f["ttft_p50_s"]),
            fmt_seconds(f["ttft_p95_s"]),
            fmt_seconds(f["ttft_p99_s"]),
            f"{f['gpu_hours']:.3f}",
            f"{f['cost_usd']:.2f}",
            f"{f['mean_replicas']:.2f}",
            str(f["scaling_actions"]),
            str(f["batching_changes"]),
        )
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

    fig, ax = plt.subplots(figsize=(10, 5))
    for run in report.runs:
        t, v = ttft_p95_series(run.result.records, bin_s, end)
        finite = [x if math.isfinite(x) else float("nan") for x in v]
        ax.plot(t, finite, label=run.name, linewidth=1.4)
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


@click.command("bench")
@click.option(
    "--trace",
    "trace",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV with TIMESTAMP, ContextTokens, GeneratedTokens "
    "(default: ../shared/traces/azure-llm-2023-conv.csv).",
)
@click.option(
    "--workload", "kind", type=click.Choice(["trace", "diurnal", "burst"]), default="trace", show_default=True
)
@click.option(
    "--multiplier",
    type=float,
    default=DEFAULT_MULTIPLIER,
    show_default=True,
    help="Time compression: the trace plays this many times faster.",
)
@click.option("--window", default=None, help="Trace slice START,END in trace seconds (before compression).")
@click.option(
    "--quick",
    is_flag=True,
    help="Half an hour of the trace (900-2700 s) and a smaller oracle search (< 60 s).",
)
@click.option(
    "--policies", default=",".join(DEFAULT_POLICIES), show_default=True, help="Comma-separated policy names."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Priority mix and synthetic traffic seed."
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
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the figures as JSON here.",
)
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the table as Markdown here.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def bench(
    trace: Path | None,
    kind: str,
    multiplier: float,
    window: str | None,
    quick: bool,
    policies: str,
    seed: int,
    slo_ttft: float,
    profile_name: str,
    lb: str,
    price: float | None,
    max_replicas: int | None,
    out_dir: Path,
    json_path: Path | None,
    markdown_path: Path | None,
    no_plots: bool,
) -> None:
    """Run the fleet policies on a peak-hour workload and compare SLO attainment and GPU cost."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    started = time.perf_counter()
    profile = load_profile(profile_name)
    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [n for n in names if n not in REGISTRY and n not in DEFAULT_POLICIES]
    if unknown:
        raise click.BadParameter(
            f"unknown policies {unknown}; known: {sorted(REGISTRY)}", param_hint="--policies"
        )
    workload = build_workload(
        kind, trace, multiplier, _parse_window(window), quick, seed, dict(profile.classes)
    )
    ctx = make_context(workload, profile, slo_ttft, seed, quick, lb, max_replicas)
    report = run_bench(ctx, names, price)
    console.print(render_table(report))
    console.print(
        f"static-avg = {ctx.static_avg} replicas (average load), static-peak = {ctx.static_peak} "
        f"(busiest minute at {profile.planning_utilization:.0%}), autoscalers start at {ctx.static_avg}, "
        f"max {ctx.settings.max_replicas}; pod start-up {ctx.settings.startup_s:g} s; LB {lb}; "
        f"profile {profile.name}."
    )
    for run in report.runs:
        if run.note:
            console.print(f"* {run.name}: {run.note}")
    if report.missing:
        console.print(f"not registered (skipped): {', '.join(report.missing)}")
    if not no_plots and report.runs:
        for path in write_plots(report, out_dir):
            console.print(f"wrote {path}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_path}")
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(to_markdown(report), encoding="utf-8")
        console.print(f"wrote {markdown_path}")
    console.print(f"bench took {time.perf_counter() - started:.1f} s")
