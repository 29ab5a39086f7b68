"""The demo's results: one :class:`FleetResult` per run, the benchmark's figures, table and plots.

A run becomes the same ``FleetResult`` ``phoenix bench`` produces, so its ``measure``, table and
plots report it unchanged. Runs are saved as ``<out>/runs/<mode>.json`` for comparison.
See docs/demo.md ("What a run prints and measures").
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_operator.sim.bench import BenchReport, PolicyRun, measure
from phoenix_operator.sim.controllers import BenchContext
from phoenix_operator.sim.fleet import FleetResult
from phoenix_operator.sim.metrics import attainment, json_number
from phoenix_operator.sim.request import Arrival, RequestRecord
from phoenix_operator.sim.workloads import Workload
from phoenix_operator.stats import quantile

CONTROLLED = "phoenix-operator"
STATIC = "no-operator"
#: Width of the windows "TTFT p95 met in X of Y windows" counts (simulated seconds).
WINDOW_S = 30.0


@dataclass
class DemoRun:
    """Everything one demo run produced, in simulated seconds."""

    mode: str
    label: str
    result: FleetResult
    speedup: float
    #: Control-loop decisions as status reported them (controlled runs).
    decisions: list[dict[str, Any]] = field(default_factory=list)
    #: Extra figures measured outside the twin (wall times, twin lag, replica changes followed).
    extra: dict[str, Any] = field(default_factory=dict)


def timeline_from(
    rows: Iterable[tuple[float, int, int, int]], t0_wall: float, speedup: float, end_s: float
) -> list[tuple[float, int, int, int]]:
    """Wall-clock cluster polls -> a fleet timeline in simulated seconds, changes only, within [0, end]."""
    out: list[tuple[float, int, int, int]] = []
    for at, desired, ready, provisioned in rows:
        t = max(0.0, (at - t0_wall) * speedup)
        if t > end_s:
            break
        row = (t, desired, ready, provisioned)
        if out and out[-1][1:] == row[1:]:
            continue
        if out and out[-1][0] == t:
            out[-1] = row
        else:
            out.append(row)
    return out


def spans_from(
    pods: Iterable[tuple[float, float | None, float | None]], t0_wall: float, speedup: float
) -> list[tuple[float, float | None, float | None]]:
    """Pod lives (wall clock) -> (created, ready, gone) in simulated seconds; pods gone before 0 dropped."""

    def sim(t: float | None) -> float | None:
        return None if t is None else max(0.0, (t - t0_wall) * speedup)

    out: list[tuple[float, float | None, float | None]] = []
    for created, ready, gone in pods:
        if gone is not None and gone <= t0_wall:
            continue
        out.append((sim(created) or 0.0, sim(ready), sim(gone)))
    return out


def scaling_actions(timeline: Sequence[tuple[float, int, int, int]]) -> int:
    return sum(1 for a, b in itertools.pairwise(timeline) if a[1] != b[1])


def windows_met(
    records: Sequence[RequestRecord], target_s: float, span: tuple[float, float], window_s: float = WINDOW_S
) -> tuple[int, int]:
    """(windows whose arrivals' TTFT p95 met ``target_s``, windows with arrivals): consecutive
    ``window_s`` windows from the start of ``span``, a shorter last one merged into the one before."""
    lo, hi = span
    n = max(1, int((hi - lo) // window_s)) if hi > lo else 0
    groups: list[list[float]] = [[] for _ in range(n)]
    for r in records:
        if lo <= r.arrival_s < hi and n:
            groups[min(int((r.arrival_s - lo) // window_s), n - 1)].append(r.ttft_s)
    counted = [_p95(g) for g in groups if g]
    return sum(1 for v in counted if v <= target_s), len(counted)


def figures(
    run: DemoRun,
    workload: Workload,
    slo_ttft_s: float,
    class_targets: Mapping[str, float],
    price_per_gpu_hour_usd: float,
) -> dict[str, Any]:
    """The benchmark's figures over the peak held, plus the demo's own."""
    result = run.result
    span = workload.measured
    out = measure(result, slo_ttft_s, price_per_gpu_hour_usd, span)
    out["scaling_actions"] = result.scaling_actions
    out["batching_changes"] = result.batching_changes
    out["peak_replicas"] = max((row[3] for row in result.timeline), default=0)
    out["whole_run"] = measure(result, slo_ttft_s, price_per_gpu_hour_usd, (0.0, result.horizon_s))
    met, total = windows_met(result.records, slo_ttft_s, span)
    out["peak_windows_met"] = met
    out["peak_windows"] = total
    out["peak_windows_met_share"] = met / total if total else math.nan
    shape = workload.shape or {}
    if shape.get("kind") == "peak-hour":
        rise = (float(shape["lead_in_s"]), span[0])
        out["rise_windows_met"], out["rise_windows"] = windows_met(result.records, slo_ttft_s, rise)
    peak = [r for r in result.records if span[0] <= r.arrival_s < span[1]]
    out["class_attainment"] = {name: attainment(peak, target, name) for name, target in class_targets.items()}
    out["class_ttft_p95_s"] = {
        name: _p95([r.ttft_s for r in peak if r.klass == name]) for name in class_targets
    }
    out.update(run.extra)
    actions: dict[str, int] = {}
    for d in run.decisions:
        actions[str(d.get("action"))] = actions.get(str(d.get("action")), 0) + 1
    out["decisions"] = len(run.decisions)
    out["decisions_applied"] = sum(1 for d in run.decisions if d.get("applied"))
    out["decision_actions"] = actions
    return out


def _p95(values: Sequence[float]) -> float:
    return quantile(values, 0.95)


def jsonable(value: Any) -> Any:
    """Figures -> JSON (NaN and infinities as null, numpy scalars as numbers)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        return json_number(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


# ----------------------------------------------------------------------------- saved runs


def workload_key(workload: Workload) -> dict[str, Any]:
    """What makes two runs comparable: the same requests at the same simulated times."""
    s = workload.summary()
    return {k: s.get(k) for k in ("name", "requests", "duration_s", "multiplier", "seed", "shape")}


def save_run(out_dir: Path, run: DemoRun, workload: Workload, figures_: Mapping[str, Any]) -> Path:
    """``<out>/runs/<mode>.json``: figures, decisions and the series the plots need."""
    result = run.result
    records = result.records
    data = {
        "mode": run.mode,
        "label": run.label,
        "speedup": run.speedup,
        "workload": workload_key(workload),
        "figures": jsonable(dict(figures_)),
        "decisions": jsonable(run.decisions),
        "extra": jsonable(run.extra),
        "result": {
            "timeline": [list(row) for row in result.timeline],
            "replica_spans": [list(span) for span in result.replica_spans],
            "scaling_actions": result.scaling_actions,
            "batching_changes": result.batching_changes,
            "horizon_s": result.horizon_s,
            "end_s": result.end_s,
            "batches": result.batches,
        },
        "records": {
            "arrival_s": [round(r.arrival_s, 4) for r in records],
            "first_token_s": [
                None if r.first_token_s is None else round(r.first_token_s, 4) for r in records
            ],
            "dispatch_s": [None if r.dispatch_s is None else round(r.dispatch_s, 4) for r in records],
            "klass": [r.klass for r in records],
            "status": [r.status for r in records],
            "batch_id": [r.batch_id for r in records],
            "batch_size": [r.batch_size for r in records],
        },
    }
    path = out_dir / "runs" / f"{run.mode}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    return path


def load_run(path: Path, workload: Workload) -> DemoRun | None:
    """A saved run of the same workload (None if missing, unreadable or another workload); its
    figures are recomputed from the records, exactly as for a fresh run."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if data.get("workload") != json.loads(json.dumps(workload_key(workload))):
        return None
    try:
        rec = data["records"]
        records = []
        for i, arrival in enumerate(rec["arrival_s"]):
            r = RequestRecord(i, Arrival(float(arrival), klass=rec["klass"][i]), rec["klass"][i])
            r.first_token_s = rec["first_token_s"][i]
            r.dispatch_s = rec["dispatch_s"][i]
            r.status = rec["status"][i]
            r.batch_id = rec["batch_id"][i]
            r.batch_size = rec["batch_size"][i]
            records.append(r)
        res = data["result"]
        result = FleetResult(
            records=records,
            timeline=[tuple(row) for row in res["timeline"]],
            replica_spans=[tuple(span) for span in res["replica_spans"]],
            scaling_actions=int(res["scaling_actions"]),
            batching_changes=int(res["batching_changes"]),
            horizon_s=float(res["horizon_s"]),
            end_s=float(res["end_s"]),
            batches=int(res.get("batches", 0)),
        )
        run = DemoRun(
            mode=str(data["mode"]),
            label=str(data["label"]),
            result=result,
            speedup=float(data["speedup"]),
            decisions=list(data.get("decisions") or []),
            extra=dict(data.get("extra") or {}),
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    return run


def bench_report(
    context: BenchContext, price_per_gpu_hour_usd: float, runs: Sequence[tuple[DemoRun, Mapping[str, Any]]]
) -> BenchReport:
    """The runs as ``phoenix bench``'s report, for its table and plots."""
    report = BenchReport(context=context, price_per_gpu_hour_usd=price_per_gpu_hour_usd)
    for run, figs in runs:
        report.runs.append(PolicyRun(name=run.label, result=run.result, figures=dict(figs), wall_s=0.0))
    return report
