"""The execute cost and the hand-offs, measured from the server's own trace."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from phoenix_operator.fidelity.cases import Case
from phoenix_operator.fidelity.config import MISSED_THRESHOLD_S, FidelityConfig
from phoenix_operator.fidelity.trace import Batch, Span, batches_of
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.cost import BlockingBatchCost


@dataclass(frozen=True)
class Handoffs:
    """How the real batcher handed the instance over from one batch to the next, in one run.

    Both figures depend on the machine's CPU contention (docs/fidelity.md), so they are measured
    per run on the server's own clock, never fitted to the comparison's outputs.
    """

    #: Completions with requests waiting where a missed wake-up would show: no arrival came
    #: before the next batch was due.
    races: int = 0
    #: ... of which the batcher slept through: the next batch started at an arrival or a poll.
    missed: int = 0
    #: Late starts that are neither: nothing in the simulator explains them (they would point
    #: at a semantic difference), so they are counted, not fed to it.
    unexplained: int = 0
    #: Mean gap from an execution's end to the next start when the next batch was ready.
    handoff_s: float = 0.0
    handoff_samples: int = 0

    @property
    def missed_p(self) -> float:
        return self.missed / self.races if self.races else 0.0


#: A late start this close after an arrival was woken by that arrival (``Enqueue`` notifies).
_ARRIVAL_WAKE_NS = 2_000_000
#: A late start this long after the completion is the batcher's 500 ms slot poll.
_POLL_NS = 400_000_000


def observe_handoffs(spans: Sequence[Span], batching: BatcherConfig) -> Handoffs:
    """Classify every completion with requests waiting as won, missed or unexplained.

    The next batch is due at the completion if the queue holds a preferred size (or the delay
    is 0), else when its oldest request's delay expires. A start later than that by more than
    :data:`MISSED_THRESHOLD_S`, at an arrival or a poll, is a missed wake-up. Completions after
    which an arrival came before the batch was due are skipped: a miss would not show there,
    and the choice depends on arrival times only, so the share is unbiased. One instance only.
    """
    if batching.instance_count != 1:
        return Handoffs()
    executed = sorted((s for s in spans if s.executed), key=lambda s: s.queue_start_ns)
    batches = batches_of(executed)
    arrivals = np.sort(np.array([s.queue_start_ns for s in spans], dtype=np.int64))
    queued = np.array([s.queue_start_ns for s in executed], dtype=np.int64)
    started = np.array([s.compute_start_ns or 0 for s in executed], dtype=np.int64)
    delay_ns = batching.max_queue_delay_us * 1000
    min_pref = min(batching.effective_preferred)
    threshold = int(MISSED_THRESHOLD_S * 1e9)
    gaps: list[float] = []
    races = missed = unexplained = 0
    for prev, nxt in itertools.pairwise(batches):
        te = prev.end_ns
        waiting = queued[(queued < te) & (started > te)]
        if not len(waiting):
            continue
        due = te
        if delay_ns and len(waiting) < min_pref:
            due = max(te, int(waiting.min()) + delay_ns)
        i = int(np.searchsorted(arrivals, te, side="right"))
        if i < len(arrivals) and arrivals[i] <= due + threshold:
            continue
        races += 1
        late = nxt.start_ns - due
        if late <= threshold:
            if due == te:
                gaps.append(max(late, 0) / 1e9)
            continue
        j = int(np.searchsorted(arrivals, nxt.start_ns, side="right")) - 1
        if (j >= 0 and nxt.start_ns - arrivals[j] <= _ARRIVAL_WAKE_NS) or nxt.start_ns - te >= _POLL_NS:
            missed += 1
        else:
            unexplained += 1
    return Handoffs(races, missed, unexplained, float(np.mean(gaps)) if gaps else 0.0, len(gaps))


@dataclass(frozen=True)
class Calibration:
    """The execute cost, measured once per run before the cases and used for every one of them."""

    #: Least-squares fit of the server's compute time per batch: ``a_fit + b_fit × rows``.
    a_fit_s: float
    b_fit_s: float
    batches: int
    residual_ms: float
    #: The calibration phase's own hand-offs (fallback for a case with too few samples).
    handoffs: Handoffs = field(default_factory=Handoffs)

    def cost(self, handoff_s: float) -> BlockingBatchCost:
        """The simulator's cost: the hand-off holds the instance too, so it adds to ``a``."""
        return BlockingBatchCost(self.a_fit_s + handoff_s, self.b_fit_s)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def fit_cost(batches: Sequence[Batch]) -> tuple[float, float, float]:
    """(a, b, rms residual in ms) of ``duration = a + b × rows``.

    Fitted to the mean duration of each batch size, every size weighing the same: the
    calibration yields many single-request batches and few full ones, and ``b`` matters most for
    the full ones.
    """
    by_rows: dict[int, list[float]] = defaultdict(list)
    for batch in batches:
        by_rows[batch.rows].append((batch.end_ns - batch.start_ns) / 1e9)
    if len(by_rows) < 2:
        raise ValueError("calibration needs batches of at least two sizes")
    sizes = np.array(sorted(by_rows), dtype=float)
    means = np.array([float(np.mean(by_rows[int(n)])) for n in sizes])
    b_s, a_s = np.polyfit(sizes, means, 1)
    rows = np.array([b.rows for b in batches], dtype=float)
    dur = np.array([(b.end_ns - b.start_ns) / 1e9 for b in batches])
    resid = dur - (a_s + b_s * rows)
    return float(a_s), float(max(b_s, 0.0)), float(np.sqrt(np.mean(resid**2)) * 1e3)


def calibration_case(config: FidelityConfig) -> Case:
    """Pairs (A, then X while A executes) for the wake-up race, then bursts for the cost fit."""
    batching = config.batching
    a_s = config.step_base_ms / 1e3
    b_s = config.step_per_row_ms / 1e3
    delay = batching.max_queue_delay_us * 1e-6
    offset = delay + 0.5 * (a_s + b_s)
    period = max(0.08, 3.0 * (delay + a_s + b_s))
    schedule: list[tuple[float, str]] = []
    t = 0.0
    for _ in range(config.calibration_pairs):
        schedule += [(t, "standard"), (t + offset, "standard")]
        t += period
    # A burst first sends a preferred size, then everything left (up to max_batch_size) once the
    # delay has passed: these sizes give batches across 1..max_batch_size.
    top = batching.max_batch_size
    sizes = [top + 4, top // 2 + 2, 3, top + 2, top // 4 + 2, 2 * top, top - 2, 6]
    burst_period = max(0.15, 3.0 * (a_s + b_s * batching.max_batch_size))
    for i in range(config.calibration_bursts):
        schedule += [(t, "standard")] * sizes[i % len(sizes)]
        t += burst_period
    return Case("calibration", 0.0, tuple(schedule))


def calibrate(spans: Sequence[Span], batching: BatcherConfig) -> Calibration:
    batches = batches_of(spans)
    a_fit, b_fit, resid = fit_cost(batches)
    return Calibration(a_fit, b_fit, len(batches), resid, observe_handoffs(spans, batching))
