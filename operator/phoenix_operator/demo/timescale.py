"""Simulated seconds vs wall seconds: the one place the demo's time scaling is decided.

The digital twin runs the benchmark's simulator ``speedup`` times faster than the wall clock, so
everything that happens *inside* the twin — arrivals, queueing, prefill and decode, Triton's
queue delays and timeouts, TTFT — is in simulated seconds. Everything *outside* it — the
operator's loop, Kubernetes, kwok, Prometheus — runs on the wall clock. To keep the closed loop
faithful, every duration the outside world waits on is the simulated duration divided by the
speed-up:

* a new Triton pod turns Ready after ``startup_s / speedup`` wall seconds (kwok's pod-ready
  delay annotation), and the spec's ``autoscaling.replicaStartupSeconds`` says the same;
* ``autoscaling.scaleDownStabilizationSeconds`` is the spec's value divided by the speed-up;
* the control interval is the spec's divided by the speed-up, but never below the 5 s the CRD
  allows;
* the twin's Triton summaries (TTFT p95) slide over Triton's ~60 s of *simulated* time.

What does not scale (documented in docs/demo.md): the operator's Prometheus window has a floor of
30 wall seconds, and the policy's own smoothing (60 s) and trend (240 s) constants are wall
seconds, so at a speed-up of ``s`` the operator looks at ``s`` times more simulated history than
it would in production — a higher speed-up makes it slower to react, never faster. Rates in
Prometheus (``rate(nv_inference_request_success[...])``) are per wall second, i.e. ``speedup``
times the simulated request rate; the policy learns a replica's capacity in the same unit, so
its sizing is unaffected.
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
