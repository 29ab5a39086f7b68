"""The metric pipeline every simulated controller reads through: Prometheus as production runs it.

Production controllers never see a request's latency, only what Prometheus scraped, so neither do
simulated ones: scrapes with exporter lag, ``rate()`` and ``histogram_quantile`` on production's
bucket edges and windows. Pure (numpy only). Details: docs/simulator.md#the-metric-pipeline.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: vLLM's ``vllm:time_to_first_token_seconds`` buckets (``local/triton_metrics.py`` exports them).
VLLM_TTFT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
#: vLLM's ``vllm:time_per_output_token_seconds`` buckets.
VLLM_TPOT_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
#: The gateway's ``phoenix_request_ttft_seconds`` buckets (``gateway/metrics.py``), per class.
GATEWAY_TTFT_BUCKETS: tuple[float, ...] = (
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
)


@dataclass(frozen=True)
class ScrapeSettings:
    """How Prometheus samples the fleet and how the queries aggregate the samples."""

    #: Prometheus ``scrape_interval``.
    interval_s: float = 15.0
    #: Exporter lag: a sample stamped ``s`` describes the exporter's state at ``s - lag_s``.
    lag_s: float = 2.0
    #: ``rate()`` / ``histogram_quantile`` window; a controller deciding less often reads over
    #: its own period when that is longer (Dynamo's planner over its 180 s adjustment interval).
    rate_window_s: float = 60.0
    ttft_buckets: tuple[float, ...] = VLLM_TTFT_BUCKETS
    tpot_buckets: tuple[float, ...] = VLLM_TPOT_BUCKETS
    class_ttft_buckets: tuple[float, ...] = GATEWAY_TTFT_BUCKETS

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.rate_window_s <= 0 or self.lag_s < 0:
            raise ValueError("need interval_s > 0, rate_window_s > 0 and lag_s >= 0")
        for edges in (self.ttft_buckets, self.tpot_buckets, self.class_ttft_buckets):
            if not edges or any(b <= a for a, b in itertools.pairwise(edges)):
                raise ValueError("bucket edges must be non-empty and strictly increasing")


# --------------------------------------------------------------------------------------------
# PromQL functions
# --------------------------------------------------------------------------------------------


def histogram_quantile(
    q: float, upper_bounds: Sequence[float], cumulative: Sequence[float] | np.ndarray
) -> float:
    """Prometheus' ``histogram_quantile`` on one histogram.

    ``upper_bounds`` are the finite ``le`` edges; ``cumulative`` the (rated) cumulative counts,
    one per edge plus the ``+Inf`` bucket last. The quantile is interpolated linearly inside its
    bucket (the first bucket starts at 0); one in the ``+Inf`` bucket is the largest finite edge.
    NaN when the histogram holds no observation.
    """
    if len(cumulative) != len(upper_bounds) + 1:
        raise ValueError("need one cumulative count per finite edge plus the +Inf bucket")
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    total = float(cumulative[-1])
    if not total > 0:
        return math.nan
    rank = q * total
    # First bucket whose cumulative count reaches the rank (Prometheus' sort.Search).
    b = int(np.searchsorted(np.asarray(cumulative, dtype=float), rank, side="left"))
    if b >= len(upper_bounds):
        return float(upper_bounds[-1])
    if b == 0 and upper_bounds[0] <= 0:
        return float(upper_bounds[0])
    start = 0.0 if b == 0 else float(upper_bounds[b - 1])
    end = float(upper_bounds[b])
    below = 0.0 if b == 0 else float(cumulative[b - 1])
    count = float(cumulative[b]) - below
    if count <= 0:
        return end
    return start + (end - start) * (rank - below) / count


def extrapolated_rate(
    times: np.ndarray, values: np.ndarray, range_start: float, range_end: float
) -> np.ndarray | float | None:
    """Prometheus' ``rate()`` of a counter over the samples in (range_start, range_end].

    ``values`` is one value per sample, or a row of values (bucket counters) per sample. The
    increase between the first and last sample is extrapolated towards the window's edges by at
    most half the mean sample spacing (not at all past where the counter would reach zero) and
    divided by the window. ``None`` with fewer than two samples (Prometheus returns nothing).
    """
    n = len(times)
    if n < 2:
        return None
    first_t, last_t = float(times[0]), float(times[-1])
    sampled = last_t - first_t
    if sampled <= 0:
        return None
    first = np.asarray(values[0], dtype=float)
    delta = np.asarray(values[-1], dtype=float) - first
    avg_step = sampled / (n - 1)
    threshold = avg_step * 1.1
    to_start = first_t - range_start
    to_end = range_end - last_t
    if to_start >= threshold:
        to_start = avg_step / 2
    if to_end >= threshold:
        to_end = avg_step / 2
    # A counter starts at zero: do not extrapolate to before that point.
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = (delta > 0) & (first >= 0)
        to_zero = np.where(rising, sampled * first / np.where(delta > 0, delta, 1.0), np.inf)
    start = np.minimum(to_start, to_zero)
    factor = (sampled + start + to_end) / sampled
    rate = delta * factor / (range_end - range_start)
    return float(rate) if rate.ndim == 0 else rate


# --------------------------------------------------------------------------------------------
# The scraped fleet
# --------------------------------------------------------------------------------------------


class EventLogs(Protocol):
    """The fleet's raw event logs, appended in time order (what its exporters count)."""

    arr_t: list[float]
    err_t: list[float]
    ft_t: list[float]
    ft_v: list[float]
    ft_c: list[str]
    ft_p: list[int]
    fin_t: list[float]
    fin_o: list[int]
    fin_tpot: list[float]
    dq_t: list[float]
    dq_queue: list[float]
    dq_compute: list[float]
    b_t: list[float]
    b_rows: list[int]


#: Scalar counters the scraper keeps, in the order of a sample row.
COUNTERS = (
    "arrivals",
    "failures",
    "successes",
    "first_tokens",
    "prompt_tokens",
    "generation_tokens",
    "dispatched",
    "queue_seconds",
    "compute_seconds",
    "batches",
    "batch_rows",
    "busy_seconds",
)


@dataclass(frozen=True)
class GaugeSample:
    """Gauges of one scrape: per ready pod, and the fleet's waiting requests."""

    waiting: tuple[int, ...]
    running: tuple[int, ...]
    saturation: tuple[float, ...]
    pending: float
    utilization: float | None


def _buckets(edges: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """Non-cumulative counts per bucket (``le`` edge, then ``+Inf``) of some observations."""
    idx = np.searchsorted(np.asarray(edges), np.asarray(values, dtype=float), side="left")
    return np.bincount(idx, minlength=len(edges) + 1).astype(float)


@dataclass
class FleetScraper:
    """Prometheus' view of one fleet: samples taken at scrape times, queried with PromQL's rules.

    :meth:`scrape` is called by the fleet's scrape timer at ``s - lag_s`` for a sample stamped
    ``s``; it folds the events logged since the previous scrape into cumulative counters (so a
    whole run costs one pass over the logs) and records the gauges it is given.
    """

    settings: ScrapeSettings
    times: list[float] = field(default_factory=list)
    counters: list[np.ndarray] = field(default_factory=list)
    ttft: list[np.ndarray] = field(default_factory=list)
    tpot: list[np.ndarray] = field(default_factory=list)
    class_ttft: dict[str, list[np.ndarray]] = field(default_factory=dict)
    gauges: list[GaugeSample] = field(default_factory=list)
    _cursor: dict[str, int] = field(default_factory=dict)
    _totals: np.ndarray = field(default_factory=lambda: np.zeros(len(COUNTERS)))
    _ttft: np.ndarray | None = None
    _tpot: np.ndarray | None = None
    _class: dict[str, np.ndarray] = field(default_factory=dict)

    def _take(self, name: str, upto: int) -> slice:
        start = self._cursor.get(name, 0)
        self._cursor[name] = upto
        return slice(start, upto)

    def scrape(self, stamp: float, logs: EventLogs, busy_seconds: float, gauges: GaugeSample) -> None:
        """Record the sample stamped ``stamp`` from the logs as they stand now (``stamp - lag``)."""
        s = self.settings
        if self._ttft is None:
            self._ttft = np.zeros(len(s.ttft_buckets) + 1)
            self._tpot = np.zeros(len(s.tpot_buckets) + 1)
        assert self._tpot is not None
        tot = self._totals
        tot[0] = len(logs.arr_t)
        tot[1] = len(logs.err_t)
        tot[3] = len(logs.ft_t)
        tot[6] = len(logs.dq_t)
        tot[9] = len(logs.b_t)
        tot[11] = busy_seconds
        ft = self._take("ft", len(logs.ft_t))
        if ft.stop > ft.start:
            values = logs.ft_v[ft]
            tot[4] += float(sum(logs.ft_p[ft]))
            self._ttft += _buckets(s.ttft_buckets, values)
            classes = logs.ft_c[ft]
            for klass in set(classes):
                mine = [v for v, c in zip(values, classes, strict=True) if c == klass]
                counts = self._class.setdefault(klass, np.zeros(len(s.class_ttft_buckets) + 1))
                counts += _buckets(s.class_ttft_buckets, mine)
        fin = self._take("fin", len(logs.fin_t))
        if fin.stop > fin.start:
            tot[2] = len(logs.fin_t)
            tot[5] += float(sum(logs.fin_o[fin]))
            self._tpot += _buckets(s.tpot_buckets, logs.fin_tpot[fin])
        dq = self._take("dq", len(logs.dq_t))
        if dq.stop > dq.start:
            tot[7] += float(sum(logs.dq_queue[dq]))
            tot[8] += float(sum(logs.dq_compute[dq]))
        b = self._take("b", len(logs.b_t))
        if b.stop > b.start:
            tot[10] += float(sum(logs.b_rows[b]))
        self.times.append(stamp)
        self.counters.append(tot.copy())
        self.ttft.append(self._ttft.copy())
        self.tpot.append(self._tpot.copy())
        for klass, counts in self._class.items():
            series = self.class_ttft.setdefault(klass, [])
            # A class first seen now had zero counts at every earlier scrape.
            series.extend(np.zeros_like(counts) for _ in range(len(self.times) - 1 - len(series)))
            series.append(counts.copy())
        self.gauges.append(gauges)

    # -- queries -------------------------------------------------------------------------------
    def _window(self, now: float, window_s: float) -> slice:
        """Samples with a stamp in (now - window_s, now]."""
        return slice(bisect_right(self.times, now - window_s), bisect_right(self.times, now))

    def rate(self, counter: str, now: float, window_s: float) -> float | None:
        """``rate(counter[window])`` at ``now``; None without two samples in the window."""
        w = self._window(now, window_s)
        if w.stop - w.start < 2:
            return None
        col = COUNTERS.index(counter)
        values = np.array([row[col] for row in self.counters[w]])
        r = extrapolated_rate(np.asarray(self.times[w]), values, now - window_s, now)
        return None if r is None else float(r)

    def quantile(
        self, q: float, histogram: str, now: float, window_s: float, klass: str | None = None
    ) -> float | None:
        """``histogram_quantile(q, sum by (le) (rate(<histogram>_bucket[window])))`` at ``now``;
        None without data (no two samples, or no observation in the window)."""
        s = self.settings
        if histogram == "ttft":
            edges, series = s.ttft_buckets, self.ttft
        elif histogram == "tpot":
            edges, series = s.tpot_buckets, self.tpot
        elif histogram == "class_ttft" and klass is not None:
            edges, series = s.class_ttft_buckets, self.class_ttft.get(klass, [])
        else:
            raise ValueError(f"unknown histogram {histogram!r}")
        w = self._window(now, window_s)
        if w.stop - w.start < 2 or len(series) < w.stop:
            return None
        rows = np.cumsum(np.array(series[w]), axis=1)
        rates = extrapolated_rate(np.asarray(self.times[w]), rows, now - window_s, now)
        if rates is None or isinstance(rates, float):
            return None
        value = histogram_quantile(q, edges, rates)
        return None if math.isnan(value) else value

    def classes(self) -> list[str]:
        return sorted(self.class_ttft)

    def last_gauges(self, now: float) -> GaugeSample | None:
        """The newest gauge sample stamped at or before ``now``."""
        i = bisect_right(self.times, now)
        return self.gauges[i - 1] if i else None

    def avg_utilization(self, now: float, window_s: float) -> float | None:
        """``avg_over_time(gpu_utilization[window])``."""
        w = self._window(now, window_s)
        values = [g.utilization for g in self.gauges[w] if g.utilization is not None]
        return float(np.mean(values)) if values else None
