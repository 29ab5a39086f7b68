"""The fidelity table and its Markdown form."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from phoenix_operator.fidelity.comparison import (
    _CLASS_P95,
    CaseResult,
    FidelityReport,
    beyond_interval,
    rel_error,
)

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
    interval = result.notes.get("real_latency_p95_interval_ms")
    if interval and all(v is not None and math.isfinite(v) for v in interval):
        low, high = interval
        sim_p95 = result.sim.get(key)
        out.append(
            (
                "  Triton's p95, 95 % interval",
                f"{low:.0f}–{high:.0f}",
                _fmt(sim_p95),
                _pct(beyond_interval(sim_p95, low, high)),
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
