"""The one percentile every reported figure uses: empirical, no interpolation, inf-safe."""

from __future__ import annotations

import math

import pytest

from phoenix_operator.stats import percentile, quantile


def test_a_percentile_is_a_value_that_happened() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    # Linear interpolation would say 2.5; a latency nobody saw is not reported.
    assert quantile(values, 0.5) == 2.0
    assert percentile(values, 95) == 4.0
    assert percentile(values, 0) == 1.0


def test_an_unserved_request_keeps_the_tail_infinite() -> None:
    values = [0.1] * 90 + [math.inf] * 10
    assert percentile(values, 95) == math.inf
    assert percentile(values, 50) == pytest.approx(0.1)


def test_no_values_is_nan_not_zero() -> None:
    assert math.isnan(percentile([], 95))
