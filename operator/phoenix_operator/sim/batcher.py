"""Triton's dynamic batcher, re-implemented as a pure data structure (time is passed in).

Follows ``DynamicBatchScheduler::GetDynamicBatch`` and ``PriorityQueue`` of
triton-inference-server/core so the simulator batches as a real server would; when a batch is
formed is the replica's business (:mod:`phoenix_operator.sim.replica`).
Details: docs/simulator.md#tritons-dynamic-batcher.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

from phoenix_operator.sim.config import BatcherConfig, QueuePolicy
from phoenix_operator.sim.request import RequestRecord

#: Float slack for "the delay has expired" (simulated clocks are exact; FP sums are not).
_EPS = 1e-9


class _Level:
    __slots__ = ("delayed", "level", "policy", "unexpired")

    def __init__(self, level: int, policy: QueuePolicy) -> None:
        self.level = level
        self.policy = policy
        self.unexpired: deque[RequestRecord] = deque()
        self.delayed: deque[RequestRecord] = deque()

    @property
    def size(self) -> int:
        return len(self.unexpired) + len(self.delayed)


@dataclass(slots=True)
class Formation:
    """Outcome of one batch-formation pass."""

    #: Requests to execute now (appended to the current payload); empty = nothing to send.
    taken: list[RequestRecord] = field(default_factory=list)
    #: Requests that timed out under a REJECT policy during the scan.
    rejected: list[RequestRecord] = field(default_factory=list)
    #: Nothing sent: re-run no later than this (delay expiry or closest timeout).
    wait_until: float | None = None
    #: The payload cannot grow further (Triton's ``payload_saturated_``).
    saturated: bool = False
    #: Queue length at which an arrival should wake the batcher early (``next_preferred_batch_size_``).
    next_preferred: int = 0


class DynamicBatcher:
    """Per-replica queue and batch formation of Triton's dynamic batcher."""

    def __init__(self, config: BatcherConfig) -> None:
        self._levels: dict[int, _Level] = {}
        self._order: list[_Level] = []
        self.size = 0
        self.configure(config)

    @property
    def config(self) -> BatcherConfig:
        return self._config

    def configure(self, config: BatcherConfig) -> None:
        """Apply a new configuration; queued requests stay queued (in their old levels)."""
        self._config = config
        self._preferred = frozenset(config.effective_preferred)
        self._preferred_sorted = config.effective_preferred
        self._max_preferred = max(self._preferred_sorted)
        self._delay_s = config.max_queue_delay_us * 1e-6
        for lvl in self._order:
            lvl.policy = config.policy_for(lvl.level)

    def _level(self, level: int) -> _Level:
        lvl = self._levels.get(level)
        if lvl is None:
            lvl = _Level(level, self._config.policy_for(level))
            self._levels[level] = lvl
            keys = [x.level for x in self._order]
            self._order.insert(bisect.bisect(keys, level), lvl)
        return lvl

    def waiting_by_level(self) -> dict[int, int]:
        return {lvl.level: lvl.size for lvl in self._order if lvl.size}

    def enqueue(self, rec: RequestRecord, now: float, apply_policy: bool = True) -> bool:
        """Queue a request; False if its level's ``max_queue_size`` is reached (rejected).

        ``apply_policy=False`` queues by priority level only (no size limit, no timeout): an LLM
        engine's own waiting queue, which a decoupled backend fills straight from Triton.
        """
        level = self._config.level_for(rec.priority)
        lvl = self._level(level)
        policy = lvl.policy
        if apply_policy and policy.max_queue_size and lvl.size >= policy.max_queue_size:
            return False
        rec.level = level
        rec.enqueue_s = now
        timeout_us = policy.timeout_for(rec.timeout_us) if apply_policy else 0
        rec.deadline_s = now + timeout_us * 1e-6 if timeout_us else 0.0
        lvl.unexpired.append(rec)
        self.size += 1
        return True

    def push_front(self, rec: RequestRecord) -> None:
        """Put a request back at the head of its level (a pre-empted sequence resumes first)."""
        self._level(rec.level).unexpired.appendleft(rec)
        self.size += 1

    def pop_head(self) -> RequestRecord | None:
        """Remove and return :meth:`head`."""
        for lvl in self._order:
            for q in (lvl.unexpired, lvl.delayed):
                if q:
                    self.size -= 1
                    return q.popleft()
        return None

    def remove(self, rec: RequestRecord) -> bool:
        """Take a queued request out (its client gave up); False if it is not queued here."""
        lvl = self._levels.get(rec.level)
        if lvl is None:
            return False
        for q in (lvl.unexpired, lvl.delayed):
            try:
                q.remove(rec)
            except ValueError:
                continue
            self.size -= 1
            return True
        return False

    def expire(self, now: float) -> list[RequestRecord]:
        """Apply timeouts to the whole queue (used when a replica is torn down, not while batching)."""
        rejected: list[RequestRecord] = []
        for lvl in self._order:
            keep: deque[RequestRecord] = deque()
            for rec in lvl.unexpired:
                if rec.deadline_s and now >= rec.deadline_s:
                    if lvl.policy.timeout_action == "DELAY":
                        lvl.delayed.append(rec)
                    else:
                        rejected.append(rec)
                else:
                    keep.append(rec)
            lvl.unexpired = keep
        self.size -= len(rejected)
        return rejected

    def drain_all(self) -> list[RequestRecord]:
        """Remove and return every queued request (in service order)."""
        out: list[RequestRecord] = []
        for lvl in self._order:
            out.extend(lvl.unexpired)
            out.extend(lvl.delayed)
            lvl.unexpired.clear()
            lvl.delayed.clear()
        self.size = 0
        return out

    def head(self) -> RequestRecord | None:
        """The request the next batch would start with (ignoring timeouts not yet applied)."""
        for lvl in self._order:
            if lvl.unexpired:
                return lvl.unexpired[0]
            if lvl.delayed:
                return lvl.delayed[0]
        return None

    def oldest_enqueue_s(self) -> float | None:
        """When the longest-waiting queued request was enqueued (any level)."""
        firsts = [q[0].enqueue_s for lvl in self._order for q in (lvl.unexpired, lvl.delayed) if q]
        return min(firsts) if firsts else None

    def form(
        self,
        now: float,
        base: int = 0,
        row_limit: int | None = None,
        kv_budget: int | None = None,
        token_budget: int | None = None,
    ) -> Formation:
        """One ``GetDynamicBatch`` pass.

        ``base`` is the size of the payload already formed and still growable (Triton's
        prefetch path). ``row_limit``, ``kv_budget`` (sum of ``kv_tokens``) and
        ``token_budget`` (sum of ``prompt_tokens``) are the LLM engine's admission limits; they
        end the scan like ``max_batch_size`` does. A first request that does not fit the KV
        budget blocks the queue head (FCFS admission): nothing is taken, no wait is set.
        """
        max_bs = (
            self._config.max_batch_size if row_limit is None else min(self._config.max_batch_size, row_limit)
        )
        max_pref = self._max_preferred
        preferred = self._preferred
        out = Formation()
        rejected = out.rejected
        pending: list[RequestRecord] = []
        best = 0
        send_now = False
        saturated = False
        kv_used = 0
        tok_used = 0
        oldest = math.inf
        closest = math.inf
        stop = False
        for lvl in self._order:
            for phase in (0, 1):
                src = lvl.unexpired if phase == 0 else lvl.delayed
                i = 0
                while i < len(src):
                    rec = src[i]
                    if phase == 0 and rec.deadline_s and now >= rec.deadline_s:
                        del src[i]
                        if lvl.policy.timeout_action == "DELAY":
                            lvl.delayed.append(rec)
                        else:
                            rejected.append(rec)
                            self.size -= 1
                        continue
                    count = base + len(pending)
                    if count == 0:
                        if kv_budget is not None and rec.kv_tokens > kv_budget:
                            stop = True
                            break
                    else:
                        if count + 1 > max_pref and best == 0:
                            best = len(pending)
                            saturated = True
                        if (
                            count + 1 > max_bs
                            or (kv_budget is not None and kv_used + rec.kv_tokens > kv_budget)
                            or (token_budget is not None and tok_used + rec.prompt_tokens > token_budget)
                        ):
                            send_now = True
                            stop = True
                            break
                    pending.append(rec)
                    kv_used += rec.kv_tokens
                    tok_used += rec.prompt_tokens
                    if rec.enqueue_s < oldest:
                        oldest = rec.enqueue_s
                    if phase == 0 and rec.deadline_s and rec.deadline_s < closest:
                        closest = rec.deadline_s
                    if base + len(pending) in preferred:
                        best = len(pending)
                    i += 1
                if stop:
                    break
            if stop:
                break

        delay = self._delay_s
        exceeded = delay > 0 and bool(pending) and now - oldest >= delay - _EPS
        take = 0
        if best and not exceeded:
            if delay == 0:
                saturated = True
            take = best
        elif not pending:
            out.saturated = saturated
            return out
        elif send_now or base + len(pending) >= max_pref:
            saturated = True
            take = len(pending)
        elif exceeded or delay == 0:
            take = len(pending)
        else:
            size = base + len(pending)
            idx = bisect.bisect_right(self._preferred_sorted, size)
            nxt = (
                self._preferred_sorted[idx]
                if idx < len(self._preferred_sorted)
                else self._preferred_sorted[0]
            )
            out.next_preferred = max(nxt - base, 0)
            if not saturated and base != 0 and base not in preferred:
                take = len(pending)
            else:
                out.wait_until = min(oldest + delay, closest)
                out.saturated = saturated
                return out

        out.saturated = saturated
        out.taken = pending[:take]
        remaining = take
        for lvl in self._order:
            while remaining and lvl.unexpired:
                lvl.unexpired.popleft()
                remaining -= 1
            while remaining and lvl.delayed:
                lvl.delayed.popleft()
                remaining -= 1
            if not remaining:
                break
        self.size -= take
        return out
