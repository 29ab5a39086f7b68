"""One request's input (:class:`Arrival`) and its simulated life (:class:`RequestRecord`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Priority-class names and the Triton priority value each one is sent with (1 = served first).
DEFAULT_CLASSES: dict[str, int] = {"urgent": 1, "standard": 2, "bulk": 3}

#: Tokens per prefix block id (``Arrival.prefix_blocks``): the Mooncake trace hashes 512-token blocks.
PREFIX_BLOCK_TOKENS = 512


@dataclass(frozen=True, slots=True)
class Arrival:
    """A request as a client sends it: when, with which priority, how many tokens."""

    time_s: float
    #: Triton request priority (0 = the model's default level).
    priority: int = 0
    prompt_tokens: int = 1
    output_tokens: int = 1
    #: Priority-class name for reporting (``urgent``...); ``None`` = derived from ``priority``.
    klass: str | None = None
    #: Per-request timeout (only honoured with ``allow_timeout_override``), µs; 0 = none.
    timeout_us: int = 0
    #: Ids of the prompt's consecutive ``PREFIX_BLOCK_TOKENS``-token blocks (equal ids = equal
    #: content, as the Mooncake trace's ``hash_ids``); empty = no prefix information.
    prefix_blocks: tuple[int, ...] = ()


class RequestRecord:
    """Mutable per-request state while simulating, and the record returned afterwards.

    Times are seconds of simulated time. ``status`` is ``ok``, ``rejected`` (queue full, no
    ready replica, or too long for the KV cache), ``timeout`` (queue-policy REJECT),
    ``abandoned`` (the client gave up waiting for the first token and had no retry left) or
    ``unserved`` (still waiting when the simulation stopped). ``arrival_s`` stays the client's
    first send across retries, so TTFT is what the user waited.
    """

    __slots__ = (
        "arrival_s",
        "attempt",
        "batch_id",
        "batch_size",
        "compute_s",
        "deadline_s",
        "dispatch_s",
        "done_s",
        "enqueue_s",
        "first_token_s",
        "generated",
        "id",
        "klass",
        "kv_blocks",
        "kv_epoch",
        "kv_offset",
        "kv_tokens",
        "level",
        "output_tokens",
        "preemptions",
        "prefill_done",
        "prefill_target",
        "prefix_blocks",
        "prefix_hit_tokens",
        "priority",
        "prompt_tokens",
        "reject_reason",
        "replica",
        "shared_blocks",
        "status",
        "timeout_us",
        "v_finish",
    )

    def __init__(self, rid: int, arrival: Arrival, klass: str) -> None:
        self.id = rid
        self.arrival_s = arrival.time_s
        self.priority = arrival.priority
        self.klass = klass
        self.prompt_tokens = arrival.prompt_tokens
        self.output_tokens = arrival.output_tokens
        self.timeout_us = arrival.timeout_us
        self.level = 0
        self.replica = -1
        self.enqueue_s = arrival.time_s
        self.deadline_s = 0.0
        self.dispatch_s: float | None = None
        self.first_token_s: float | None = None
        self.done_s: float | None = None
        self.compute_s = 0.0
        self.batch_id = -1
        self.batch_size = 0
        self.status = "unserved"
        self.reject_reason = ""
        self.kv_tokens = 0
        self.v_finish = 0.0
        self.prefix_blocks = arrival.prefix_blocks
        #: Client attempts so far (1 = the first send).
        self.attempt = 1
        self.preemptions = 0
        #: Engine state: output tokens produced, prompt(+generated) tokens to prefill and done,
        #: private KV blocks while prefilling, prefix-cache entries pinned, decode bookkeeping.
        self.generated = 0
        self.prefill_target = 0
        self.prefill_done = 0
        self.prefix_hit_tokens = 0
        self.kv_blocks = 0
        self.shared_blocks: list[int] = []
        self.kv_offset = 0.0
        self.kv_epoch = 0

    @property
    def queue_s(self) -> float | None:
        """Time in Triton's queue: enqueue until the batch starts executing."""
        return None if self.dispatch_s is None else self.dispatch_s - self.enqueue_s

    @property
    def ttft_s(self) -> float:
        """Time to first token (end-to-end latency for a non-streaming model); inf if never."""
        return math.inf if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def latency_s(self) -> float:
        """Arrival to last token; inf if never completed."""
        return math.inf if self.done_s is None else self.done_s - self.arrival_s

    def __repr__(self) -> str:
        return (
            f"RequestRecord(id={self.id}, t={self.arrival_s:.4f}, level={self.level}, "
            f"status={self.status}, ttft={self.ttft_s:.4f}, batch={self.batch_size})"
        )
