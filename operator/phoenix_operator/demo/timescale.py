"""Simulated seconds vs wall seconds: the one place the demo's time scaling is decided.

The twin runs ``speedup`` times faster than the wall clock while the operator, Kubernetes, kwok and
Prometheus run on it, so every duration the outside world waits on is the simulated one divided by
the speed-up. What scales, what does not and why: docs/demo.md#time-scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The CRD's minimum ``autoscaling.intervalSeconds``.
MIN_INTERVAL_S = 5
#: Triton's summary quantiles slide over about a minute.
TRITON_SUMMARY_WINDOW_S = 60.0


@dataclass(frozen=True)
class TimeScale:
    """``speedup`` simulated seconds pass per wall second."""

    speedup: float = 1.0

    def __post_init__(self) -> None:
        if not (self.speedup > 0 and math.isfinite(self.speedup)):
            raise ValueError(f"speedup must be a positive number, got {self.speedup}")

    def to_wall(self, sim_s: float) -> float:
        return sim_s / self.speedup

    def to_sim(self, wall_s: float) -> float:
        return wall_s * self.speedup

    def wall_int(self, sim_s: float, minimum: int = 0) -> int:
        """A simulated duration as whole wall seconds (for integer spec fields), at least ``minimum``."""
        return max(minimum, round(sim_s / self.speedup))

    def interval_s(self, sim_interval_s: float) -> int:
        """``autoscaling.intervalSeconds`` for a control period of ``sim_interval_s`` simulated seconds."""
        return self.wall_int(sim_interval_s, MIN_INTERVAL_S)

    def kwok_delay(self, sim_s: float) -> str:
        """kwok's ``pod-ready.stage.kwok.x-k8s.io/delay`` value (a Go duration) for a warm-up."""
        return f"{max(0, round(1000 * sim_s / self.speedup))}ms"

    @property
    def summary_window_wall_s(self) -> float:
        """The twin's summary window in wall seconds (its exporter prunes by the wall clock)."""
        return TRITON_SUMMARY_WINDOW_S / self.speedup

    def describe(self) -> str:
        return f"x{self.speedup:g} (1 wall second = {self.speedup:g} simulated seconds)"
