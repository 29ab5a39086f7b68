"""Sensitivity sweeps: the replicated benchmark at each value of one parameter.

One peak multiplier, one ramp and one warm-up time is a single point; a reviewer asks whether a
ranking holds 4-10x, for a steep or a slow rise, for pods that start in one minute or in five.
The figures at each point are the benchmark's own (means and 95 % intervals over replications).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phoenix_operator.sim.bench import BenchReport, ci_text, half_interval, mean_ci95, meets_slo, pct

#: Sweepable parameters and what each value means.
SWEEPS: dict[str, str] = {
    "multiplier": "peak multiplier (x the trace's rate)",
    "ramp": "rise to the peak, s",
    "startup": "mean pod start-up, s",
}


@dataclass
class SweepPoint:
    value: float
    report: BenchReport

    def bound_gpu_hours(self) -> float:
        return mean_ci95(self.report.bound_gpu_hours)[0]


SWEEP_HEAD = ("value", "policy", "SLO met", "urgent met", "GPU-h", "x bound", "goal")


def sweep_rows(points: list[SweepPoint]) -> list[list[str]]:
    rows = []
    for point in points:
        bound = point.bound_gpu_hours()
        for name, fig in point.report.figures():
            gpu = fig["gpu_hours"]
            rows.append(
                [
                    f"{point.value:g}",
                    name,
                    pct(fig["slo_attainment"]) + ci_text(fig, "slo_attainment", 100.0),
                    pct(fig["urgent_slo_attainment"]),
                    f"{gpu:.3f}" + ci_text(fig, "gpu_hours", digits=3),
                    f"{gpu / bound:.2f}" if bound > 0 and math.isfinite(gpu) else "-",
                    "meets" if meets_slo(fig) else "misses",
                ]
            )
    return rows


def sweep_table(parameter: str, points: list[SweepPoint], markdown: bool = False) -> Any:
    """The figures at every point: a rich table, or Markdown for ``--markdown``."""
    head = (f"{parameter}", *SWEEP_HEAD[1:])
    rows = sweep_rows(points)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    from rich.table import Table

    reps = points[0].report.replications if points else 0
    table = Table(title=f"Sweep over the {SWEEPS[parameter]}: {reps} replication(s) per point, ±95 % CI")
    for col in head:
        table.add_column(col, justify="left" if col == "policy" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def sweep_json(parameter: str, points: list[SweepPoint]) -> dict[str, Any]:
    return {
        "parameter": parameter,
        "meaning": SWEEPS[parameter],
        "values": [p.value for p in points],
        "points": [{"value": p.value, **p.report.to_json()} for p in points],
    }


def write_sweep_plot(parameter: str, points: list[SweepPoint], out: Path) -> Path:
    """GPU-hours (over the bound) and SLO attainment against the parameter, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, (cost_ax, slo_ax) = plt.subplots(1, 2, figsize=(12, 5))
    names = [name for name, _ in points[0].report.figures()] if points else []
    x = [p.value for p in points]
    for name in names:
        figs = [dict(p.report.figures())[name] for p in points]
        for ax, key, scale in ((cost_ax, "gpu_hours", 1.0), (slo_ax, "slo_attainment", 100.0)):
            y = [scale * f[key] for f in figs]
            half = [half_interval(f, key, scale) for f in figs]
            top = 100.0 if key == "slo_attainment" else math.inf  # an attainment stays within 0-100 %
            err = [
                [min(h, v) for h, v in zip(half, y, strict=True)],
                [min(h, top - v) for h, v in zip(half, y, strict=True)],
            ]
            ax.errorbar(x, y, yerr=err, label=name, marker="o", markersize=3, capsize=2, linewidth=1.2)
    cost_ax.plot(x, [p.bound_gpu_hours() for p in points], "k--", linewidth=1, label="lower bound")
    cost_ax.set_ylabel("GPU-hours over the measured window")
    slo_ax.set_ylabel("requests within the TTFT target, %")
    slo_ax.axhline(99.0, color="black", linestyle=":", linewidth=1, label="99 % goal")
    for ax in (cost_ax, slo_ax):
        ax.set_xlabel(SWEEPS[parameter])
        ax.grid(True, alpha=0.3)
    cost_ax.legend(fontsize=7)
    fig.suptitle(f"Sensitivity to the {SWEEPS[parameter]} (means, 95 % CI)")
    fig.tight_layout()
    path = out / f"sweep_{parameter}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
