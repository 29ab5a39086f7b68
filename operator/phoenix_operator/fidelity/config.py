"""What a fidelity run compares and the bounds it is held to."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from phoenix_operator.sim.config import BatcherConfig, QueuePolicy

#: Acceptance bound of the fidelity check (mean batch size and p95 latency, every rate below saturation).
TOLERANCE = 0.10

#: Priority classes of the harness and the Triton priority each is sent with.
CLASSES: dict[str, int] = {"urgent": 1, "standard": 2}
MIX: dict[str, float] = {"urgent": 0.2, "standard": 0.8}

#: The batching block under test: preferred sizes, a queue delay, two priority levels, and a
#: queue policy with a timeout (standard requests are rejected after 200 ms in the queue; urgent
#: ones never time out).
DEFAULT_BATCHING = BatcherConfig(
    max_batch_size=16,
    preferred_batch_sizes=(4, 8),
    max_queue_delay_us=5000,
    priority_levels=2,
    default_priority_level=2,
    default_queue_policy=QueuePolicy(timeout_action="REJECT", default_timeout_us=200_000),
    priority_queue_policy={1: QueuePolicy(timeout_action="REJECT", default_timeout_us=0)},
)


DEFAULT_RATES: tuple[float, ...] = (20.0, 60.0, 120.0, 180.0, 240.0, 320.0)

#: A batch starting this much later than it could have (at an arrival or a poll) was missed.
MISSED_THRESHOLD_S = 0.003

#: Trace ``log_frequency`` values toggled to flush the traces of a case (never reached).
_FLUSH_FREQUENCIES = ("1000000", "1000001")


@dataclass(frozen=True)
class FidelityConfig:
    """What one harness run compares."""

    batching: BatcherConfig = DEFAULT_BATCHING
    #: The emulated model's nominal execute cost ``a + b × rows`` (its ``step_*_ms`` parameters).
    step_base_ms: float = 20.0
    step_per_row_ms: float = 2.0
    rates: tuple[float, ...] = DEFAULT_RATES
    duration_s: float = 20.0
    #: A Poisson case lasts long enough for this many requests: a low rate's p95 rests on a
    #: few missed wake-ups followed by long silences, so it needs more requests to settle.
    min_requests: int = 1200
    #: Azure LLM conversation trace (CC-BY 4.0) to slice; None = Poisson cases only.
    trace: Path | None = None
    #: Trace seconds (before compression) of the slice, and the mean rate it is compressed to.
    trace_window: tuple[float, float] = (1200.0, 1320.0)
    trace_rate: float = 100.0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(MIX))
    classes: Mapping[str, int] = field(default_factory=lambda: dict(CLASSES))
    seed: int = 0
    #: Calibration: (A, X-during-A) pairs for the wake-up race, bursts for the cost fit.
    calibration_pairs: int = 40
    calibration_bursts: int = 16
    #: Simulator runs per case (pooled) when the missed-wake-up draw makes it random.
    sim_runs: int = 10
    #: Times each case's arrival stream is sent, round-robin over the cases. Near saturation one
    #: stream's p95 rests on a few backlog episodes whose cost follows the machine's contention at
    #: that moment; the figures compared pool every repeat (each repeat gets its own measured
    #: hand-off and missed-wake-up share in the simulator).
    repeats: int = 1
    protocol: Literal["http", "grpc"] = "http"
