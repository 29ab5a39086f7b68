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
