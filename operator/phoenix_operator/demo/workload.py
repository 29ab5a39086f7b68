"""The demo's peak: ``phoenix bench``'s peak-hour scenario, fitted to the demo's duration.

The benchmark's ``PeakShape`` time-warp; only the proportions are the demo's. Proportions and the
trace's attribution (Azure LLM inference trace 2023, CC-BY 4.0): docs/demo.md, "The peak".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from phoenix_operator.demo.timescale import TimeScale
from phoenix_operator.sim.workloads import DEFAULT_MIX, PeakShape, Workload, peak_workload

#: Shares of the run: normal load (at least), then the rise; the peak is held for the rest.
LEAD_IN_SHARE = 0.05
RAMP_SHARE = 0.35
#: Wall seconds the lead-in leaves the operator, besides its pods' warm-up: to start, to see its
#: Triton pods Ready and to have a full Prometheus window (30 s) of normal load before the rise.
SETUP_WALL_S = 20.0
#: The lead-in never takes more of the run than this.
MAX_LEAD_IN_SHARE = 0.4
#: Normal load: the trace at 2.5x its rate, ~13 requests/s, which the spec's two replicas serve
#: at about 70 % of what they can.
DEFAULT_BASE = 2.5
#: The peak: 6x, ~33 requests/s, more than twice what the spec's two replicas can serve.
DEFAULT_PEAK = 6.0


def lead_in(timescale: TimeScale, startup_s: float, duration_s: float) -> float:
    """Simulated seconds of normal load before the rise.

    The demo starts the twin's clock before the operator, so the operator comes up, its first two
    Triton pods warm up (``startup_s``) and Prometheus fills its window while the load is normal
    — the peak must not arrive before the operator could have seen the fleet at all.
    """
    setup = timescale.to_sim(SETUP_WALL_S) + startup_s
    return min(max(LEAD_IN_SHARE * duration_s, setup), MAX_LEAD_IN_SHARE * duration_s)


def demo_shape(
    duration_s: float,
    peak: float = DEFAULT_PEAK,
    base: float = DEFAULT_BASE,
    lead_in_s: float | None = None,
) -> PeakShape:
    """The peak-hour shape over ``duration_s`` simulated seconds (lead-in, rise, peak held)."""
    if duration_s <= 0:
        raise ValueError("duration must be positive")
    lead = LEAD_IN_SHARE * duration_s if lead_in_s is None else lead_in_s
    ramp = RAMP_SHARE * duration_s
    return PeakShape(
        peak=peak, base=min(base, peak), lead_in_s=lead, ramp_s=ramp, hold_s=duration_s - lead - ramp
    )


def phase(shape: PeakShape, t: float) -> str:
    """``normal``, ``rising`` or ``peak`` at simulated time ``t``."""
    if t < shape.lead_in_s:
        return "normal"
    if t < shape.lead_in_s + shape.ramp_s:
        return "rising"
    return "peak"


def demo_workload(
    path: str | Path, shape: PeakShape, seed: int = 0, classes: Mapping[str, int] | None = None
) -> Workload:
    """The trace through ``shape`` with the deployment's priority classes.

    The benchmark's mix (10 % urgent, 60 % standard, 30 % bulk) when the deployment has those
    classes, otherwise equal shares of its own.
    """
    mix = None
    if classes and not set(DEFAULT_MIX) <= set(classes):
        mix = dict.fromkeys(classes, 1.0 / len(classes))
    return peak_workload(path, shape, seed=seed, mix=mix, classes=classes)
