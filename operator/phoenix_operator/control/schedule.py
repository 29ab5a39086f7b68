"""When the next control-loop step starts (pure).

Steps are planned on a fixed grid from the loop's first start, on the monotonic clock: the
interval is measured from one planned start to the next, not from the end of a step, so the
time a step takes (Prometheus queries, a Triton reload) does not push every later step back.
A step that overruns its slot skips the slots it missed instead of running them back to back.
"""

from __future__ import annotations

import math


def next_start(planned: float, interval_s: float, now: float) -> float:
    """The first slot ``planned + k * interval_s`` (k ≥ 1) that is not earlier than ``now``.

    ``planned`` is when the step that just ran was due (not when it began or ended); an
    interval changed by a spec edit applies from that slot on.
    """
    if not interval_s > 0 or math.isinf(interval_s):
        raise ValueError(f"interval must be a positive number of seconds, got {interval_s}")
    slots = max(1, math.ceil((now - planned) / interval_s))
    return planned + slots * interval_s


def missed_slots(planned: float, interval_s: float, following: float) -> int:
    """How many slots lie strictly between ``planned`` and ``following`` (0 when on time)."""
    return max(0, round((following - planned) / interval_s) - 1)
