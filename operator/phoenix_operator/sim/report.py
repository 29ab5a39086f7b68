"""Reports shared by the simulator's commands: the table, the plots and the JSON/Markdown files."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from phoenix_operator.sim.bench import (
    TABLE_HEAD,
    BenchReport,
    half_interval,
    table_rows,
)
from phoenix_operator.sim.metrics import step_series, ttft_p95_series


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
    """TTFT p95 over time and replicas over time, one line per policy; GPU-hours against SLO
    attainment, one point per policy with its 95 % intervals."""
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

    fig, ax = plt.subplots(figsize=(8, 6))
    for name, figures in report.figures():
        gpu, met = figures["gpu_hours"], 100.0 * figures["slo_attainment"]
        xerr = half_interval(figures, "gpu_hours", 1.0)
        half = half_interval(figures, "slo_attainment", 100.0)
        yerr = [[min(half, met)], [min(half, 100.0 - met)]]  # an attainment stays within 0-100 %
        ax.errorbar([gpu], [met], xerr=[xerr], yerr=yerr, fmt="o", capsize=3, label=name)
        ax.annotate(name, (gpu, met), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if report.bound_gpu_hours:
        bound = sum(report.bound_gpu_hours) / len(report.bound_gpu_hours)
        ax.axvline(bound, color="black", linestyle="--", linewidth=1, label="GPU-hour lower bound")
    ax.axhline(99.0, color="black", linestyle=":", linewidth=1, label="99 % goal")
    ax.set_xlabel(f"GPU-hours over {lo:.0f}-{hi:.0f} s")
    ax.set_ylabel("requests within the TTFT target, %")
    ax.set_title(f"Cost against attainment — {ctx.workload.name} x{ctx.workload.multiplier:g} (95 % CI)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    path = out / "cost_vs_attainment.png"
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
