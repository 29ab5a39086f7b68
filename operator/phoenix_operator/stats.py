"""One way to compute a percentile, used by every figure Phoenix reports.

The empirical quantile without interpolation (numpy's ``inverted_cdf``): the value of a request
that actually happened, never a blend of two, and an unserved request (``inf``) stays ``inf``
instead of turning the figure into ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def quantile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The ``q`` quantile (0 ≤ q ≤ 1) of ``values``; ``nan`` when there are none."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan
    return float(np.quantile(arr, q, method="inverted_cdf"))


def percentile(values: Sequence[float] | np.ndarray, p: float) -> float:
    """The ``p`` percentile (0 ≤ p ≤ 100) of ``values``; ``nan`` when there are none."""
    return quantile(values, p / 100.0)


def quantile_interval(
    values: Sequence[float] | np.ndarray, q: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Distribution-free confidence interval of the ``q`` quantile, from order statistics.

    A tail percentile of a few hundred requests rests on a handful of them: at 600 requests the
    95th percentile is somewhere between the 560th and the 581st, and on a shared machine those can
    be tens of percent apart. ``(nan, nan)`` when there are too few values to bound it.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    from scipy.stats import quantile_test

    interval = quantile_test(arr, p=q).confidence_interval(confidence)
    return float(interval.low), float(interval.high)
