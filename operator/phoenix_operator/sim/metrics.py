"""Figures from simulated request records: SLO attainment, TTFT percentiles, time series.

A request that was rejected, timed out or never served counts as an SLO miss and enters the
percentiles as ``inf`` (percentiles use the empirical quantile without interpolation, so a p99
of ``inf`` means more than 1 % of requests never got a first token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from phoenix_operator.sim.request import RequestRecord
from phoenix_operator.stats import quantile

URGENT = "urgent"


def _q(values: np.ndarray, q: float) -> float:
    return quantile(values, q)


def ttft_array(records: Sequence[RequestRecord]) -> np.ndarray:
    return np.fromiter((r.ttft_s for r in records), dtype=float, count=len(records))


def attainment(records: Sequence[RequestRecord], slo_ttft_s: float, klass: str | None = None) -> float:
    """Share of requests (optionally of one class) whose TTFT met the target."""
    sel = records if klass is None else [r for r in records if r.klass == klass]
    if not sel:
        return math.nan
    ttft = ttft_array(sel)
    return float(np.count_nonzero(ttft <= slo_ttft_s) / ttft.size)


def summarize(records: Sequence[RequestRecord], slo_ttft_s: float) -> dict[str, Any]:
    """Request-level figures of one run."""
    ttft = ttft_array(records)
    served = [r for r in records if r.first_token_s is not None]
    queue = [r.queue_s for r in served if r.queue_s is not None]
    batches = {r.batch_id: r.batch_size for r in records if r.batch_id >= 0}
    return {
        "requests": len(records),
        "slo_attainment": attainment(records, slo_ttft_s),
        "urgent_slo_attainment": attainment(records, slo_ttft_s, URGENT),
        "ttft_p50_s": _q(ttft, 0.50),
        "ttft_p95_s": _q(ttft, 0.95),
        "ttft_p99_s": _q(ttft, 0.99),
        "urgent_ttft_p95_s": _q(ttft_array([r for r in records if r.klass == URGENT]), 0.95),
        "rejected": sum(1 for r in records if r.status in ("rejected", "timeout")),
        "unserved": sum(1 for r in records if r.status == "unserved"),
        "mean_queue_s": float(np.mean(queue)) if queue else math.nan,
        "mean_batch_size": float(np.mean(list(batches.values()))) if batches else math.nan,
    }


def window_attainment(
    records: Sequence[RequestRecord],
    slo_ttft_s: float,
    window_s: float,
    n_windows: int,
    klass: str | None = None,
) -> np.ndarray:
    """Attainment of the requests *arriving* in each window (NaN where none arrived)."""
    sel = records if klass is None else [r for r in records if r.klass == klass]
    if not sel:
        return np.full(n_windows, np.nan)
    t = np.fromiter((r.arrival_s for r in sel), dtype=float, count=len(sel))
    ok = ttft_array(sel) <= slo_ttft_s
    idx = np.minimum((t // window_s).astype(int), n_windows - 1)
    total = np.bincount(idx, minlength=n_windows).astype(float)
    good = np.bincount(idx, weights=ok.astype(float), minlength=n_windows)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, good / np.maximum(total, 1), np.nan)


def ttft_p95_series(
    records: Sequence[RequestRecord], bin_s: float, end_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres, TTFT p95 of the requests arriving in each bin); NaN for empty bins."""
    n_bins = max(1, math.ceil(end_s / bin_s))
    groups: list[list[float]] = [[] for _ in range(n_bins)]
    for r in records:
        i = min(int(r.arrival_s // bin_s), n_bins - 1)
        groups[i].append(r.ttft_s)
    centres = (np.arange(n_bins) + 0.5) * bin_s
    values = np.array([_q(np.asarray(g), 0.95) if g else math.nan for g in groups])
    return centres, values


def step_series(
    timeline: Sequence[tuple[float, int, int, int]], column: int
) -> tuple[np.ndarray, np.ndarray]:
    """Times and one column (1 desired, 2 ready, 3 provisioned) of a fleet timeline, for step plots."""
    t = np.array([row[0] for row in timeline], dtype=float)
    v = np.array([row[column] for row in timeline], dtype=float)
    return t, v


def json_number(value: float) -> float | None:
    """JSON has no inf/NaN: map them to null."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return float(value)
