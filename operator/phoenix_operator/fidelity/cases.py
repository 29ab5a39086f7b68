"""The arrivals a case sends: Poisson at a rate, or a slice of a real trace."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    """One open-loop arrival stream, sent as-is to the server."""

    name: str
    offered_rps: float
    #: (seconds from the case start, priority class), sorted by time.
    schedule: tuple[tuple[float, str], ...]
    #: Which sending of the same stream this is (``FidelityConfig.repeats``).
    repeat: int = 0

    def request_id(self, index: int) -> str:
        return f"{self.name}#{index}" if self.repeat == 0 else f"{self.name}/{self.repeat}#{index}"

    def again(self, repeat: int) -> Case:
        """The same stream under fresh request ids."""
        return Case(self.name, self.offered_rps, self.schedule, repeat)


def _classes_for(n: int, mix: Mapping[str, float], seed: int) -> list[str]:
    names = list(mix)
    weights = np.array([mix[c] for c in names], dtype=float)
    rng = np.random.default_rng([seed, 0xF1DE])
    return [names[i] for i in rng.choice(len(names), size=n, p=weights / weights.sum())]


def poisson_case(rate: float, duration_s: float, mix: Mapping[str, float], seed: int) -> Case:
    """Poisson arrivals at ``rate`` for ``duration_s`` with classes drawn from ``mix``."""
    rng = np.random.default_rng([seed, int(rate * 1000)])
    times = np.cumsum(rng.exponential(1.0 / rate, int(rate * duration_s * 1.5) + 20))
    times = times[times < duration_s]
    labels = _classes_for(len(times), mix, seed + int(rate * 1000))
    return Case(f"poisson-{rate:g}", rate, tuple(zip(times.tolist(), labels, strict=True)))


def trace_case(
    path: Path, window: tuple[float, float], rate: float, mix: Mapping[str, float], seed: int
) -> Case:
    """A slice of a CSV trace, time-compressed so its mean rate is ``rate`` (burstiness kept)."""
    from phoenix_operator.sim.workloads import read_trace

    t, _prompt, _output = read_trace(path)
    start, end = window
    times = t[(t >= start) & (t < end)] - start
    if len(times) < 2:
        raise ValueError(f"trace window {window} of {path} holds fewer than 2 requests")
    multiplier = rate * (end - start) / len(times)
    scaled = times / multiplier
    labels = _classes_for(len(scaled), mix, seed)
    name = f"{path.stem}[{start:g}-{end:g}]x{multiplier:.1f}"
    offered = len(scaled) / ((end - start) / multiplier)
    return Case(name, offered, tuple(zip(scaled.tolist(), labels, strict=True)))
