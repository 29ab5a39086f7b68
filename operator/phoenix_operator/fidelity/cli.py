"""``phoenix fidelity``: run the cases on a real server and the simulator, and report."""

from __future__ import annotations

from pathlib import Path

import click

from phoenix_operator.fidelity.calibration import Calibration, calibrate, observe_handoffs
from phoenix_operator.fidelity.cases import Case, poisson_case, trace_case
from phoenix_operator.fidelity.comparison import CaseResult, FidelityReport, run_fidelity
from phoenix_operator.fidelity.config import (
    CLASSES,
    DEFAULT_BATCHING,
    DEFAULT_RATES,
    TOLERANCE,
    FidelityConfig,
)
from phoenix_operator.fidelity.report import render_table, to_markdown
from phoenix_operator.fidelity.trace import Span, parse_trace
from phoenix_operator.sim.report import output_options


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
    from phoenix_operator.sim.options import default_trace
    from phoenix_operator.sim.report import report_console, write_outputs

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
