"""One Triton pod: its dynamic batcher, its model instance(s) and what executes on them.

Events are plain simpy timeouts with callbacks (no generator processes): a request costs a
handful of events whatever its output length, which keeps an hour of peak traffic to seconds.

Batch hand-off follows Triton's rate limiter:

* without priority levels or queue policy, Triton *prefetches*: the batcher may form a payload
  while every instance is busy (at most 2 × instances queued) and keeps growing the newest
  queued payload until it is saturated (``RateLimiter::PayloadSlotAvailable``);
* otherwise a batch is formed only when an instance is waiting for work. Triton's batcher then
  polls for a free instance (``WaitForPayloadSlotAvailable``, 500 ms timeout) and is woken by the
  end of an execution (``Payload::Execute`` calls the batcher's callback) — *before* the instance
  thread re-registers as waiting (``RateLimiter::DequeuePayload``). When the batcher checks first,
  it misses the free instance and sleeps until the next arrival or the poll timeout.
  :class:`BlockingReplica` draws that miss with ``FleetSettings.missed_wakeup_p`` (0 by
  default); docs/fidelity.md has the measurements and the source lines.

:class:`BlockingReplica` runs ``a + b × rows`` batches on ``instance_count`` instances.
:class:`LLMReplica` runs prefill batches on the engine and decodes admitted sequences in a
fluid way: between events every active sequence advances at ``1 / step_time`` tokens per second,
and only the next completion is scheduled.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import simpy

from phoenix_operator.sim.batcher import DynamicBatcher
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.request import RequestRecord

if TYPE_CHECKING:
    from phoenix_operator.sim.fleet import Fleet

STARTING = "starting"
READY = "ready"
DRAINING = "draining"
GONE = "gone"


def call_at(env: simpy.Environment, delay: float, fn: Callable[[], None]) -> None:
    """Run ``fn`` after ``delay`` simulated seconds."""
    env.timeout(max(delay, 0.0)).callbacks.append(lambda _event: fn())


class _Payload:
    __slots__ = ("enqueued", "entries", "executing", "saturated")

    def __init__(self) -> None:
        self.entries: list[RequestRecord] = []
        self.saturated = False
        self.executing = False
        self.enqueued = False


class Replica:
    """Shared part: lifecycle, batcher loop, busy-time accounting."""

    prefetch_capable = True

    def __init__(self, rid: int, env: simpy.Environment, fleet: Fleet, config: BatcherConfig) -> None:
        self.id = rid
        self.env = env
        self.fleet = fleet
        self.batcher = DynamicBatcher(config)
        self.state = STARTING
        self.created_s = env.now
        self.ready_s: float | None = None
        self.gone_s: float | None = None
        self.batches = 0
        self.rows = 0
        self._payload: _Payload | None = None
        self._payloads: deque[_Payload] = deque()
        self._next_pref = 0
        self._timer_at: float | None = None
        self._paused_until = 0.0
        self._prefetch = self.prefetch_capable and config.supports_prefetching
        # Busy-time log at transitions: times, cumulative busy seconds, busy-after flag.
        self._busy = False
        self._bt: list[float] = [env.now]
        self._bc: list[float] = [0.0]
        self._bs: list[bool] = [False]

    # -- lifecycle -----------------------------------------------------------------------------
    def become_ready(self) -> None:
        self.state = READY
        self.ready_s = self.env.now

    def start_draining(self) -> None:
        self.state = DRAINING
        self._check_drained()

    def reconfigure(self, config: BatcherConfig, pause_s: float = 0.0) -> None:
        """Live config change (Triton ``load`` with a config override)."""
        self.batcher.configure(config)
        self._prefetch = self.prefetch_capable and config.supports_prefetching
        self._on_reconfigure(config)
        if pause_s > 0:
            self._paused_until = self.env.now + pause_s
            call_at(self.env, pause_s, self.run_batcher)
        else:
            self.run_batcher()

    def _on_reconfigure(self, config: BatcherConfig) -> None:
        """Subclass hook (instance count)."""

    def in_flight(self) -> int:
        """Requests taken from the queue and not finished."""
        raise NotImplementedError

    def outstanding(self) -> int:
        """Queued + in flight: what a least-pending load balancer compares."""
        return self.batcher.size + self.in_flight()

    def saturation(self) -> float:
        """0..1 load signal a saturation-based autoscaler reads (KV use or busy instances)."""
        raise NotImplementedError

    def idle(self) -> bool:
        return self.batcher.size == 0 and self.in_flight() == 0 and not self._payloads

    def _check_drained(self) -> None:
        if self.state == DRAINING and self.idle():
            self.state = GONE
            self.gone_s = self.env.now
            self.fleet.replica_gone(self)

    # -- busy accounting (what DCGM's GPU utilisation reports) ---------------------------------
    def _set_busy(self, busy: bool) -> None:
        if busy == self._busy:
            return
        now = self.env.now
        cum = self._bc[-1] + (now - self._bt[-1] if self._busy else 0.0)
        self._bt.append(now)
        self._bc.append(cum)
        self._bs.append(busy)
        self._busy = busy

    def busy_seconds(self, t: float) -> float:
        """Cumulative busy seconds up to time ``t``."""
        i = bisect_right(self._bt, t) - 1
        if i < 0:
            return 0.0
        return self._bc[i] + (t - self._bt[i] if self._bs[i] else 0.0)

    # -- arrivals and batch formation ----------------------------------------------------------
    def enqueue(self, rec: RequestRecord) -> None:
        now = self.env.now
        rec.replica = self.id
        if not self.batcher.enqueue(rec, now):
            self.fleet.reject(rec, "queue full")
            return
        cur = self._payload
        if self._slot_available() and (
            cur is None or cur.saturated or cur.executing or self.batcher.size >= self._next_pref
        ):
            self.run_batcher()

    def _slot_available(self) -> bool:
        raise NotImplementedError

    def _budgets(self) -> tuple[int | None, int | None, int | None]:
        """(row_limit, kv_budget, token_budget) for the next formation."""
        return None, None, None

    def _start(self, payload: _Payload) -> None:
        raise NotImplementedError

    def _feed(self) -> None:
        raise NotImplementedError

    def run_batcher(self) -> None:
        """The ``BatcherThread`` loop body, run whenever something may have changed."""
        if self.env.now >= self._paused_until:
            self._batcher_pass()
        self._check_drained()

    def _batcher_pass(self) -> None:
        now = self.env.now
        while True:
            cur = self._payload
            if cur is None or cur.saturated or cur.executing:
                cur = self._payload = _Payload()
                self._next_pref = 0
            if self.batcher.size == 0 or not self._slot_available():
                return
            row_limit, kv_budget, token_budget = self._budgets()
            if row_limit is not None and row_limit <= 0:
                return
            f = self.batcher.form(now, len(cur.entries), row_limit, kv_budget, token_budget)
            for rec in f.rejected:
                self.fleet.reject(rec, "timeout")
            if f.saturated:
                cur.saturated = True
            if f.taken:
                cur.entries.extend(f.taken)
                if not cur.enqueued:
                    cur.enqueued = True
                    self._payloads.append(cur)
                self._feed()
                continue
            if f.wait_until is not None:
                self._next_pref = f.next_preferred
                self._arm(f.wait_until)
            if f.rejected or (f.saturated and cur.entries):
                continue
            return

    def _arm(self, at: float) -> None:
        if self._timer_at is not None and self._timer_at <= at:
            return
        self._timer_at = at

        def fire() -> None:
            if self._timer_at == at:
                self._timer_at = None
                self.run_batcher()

        call_at(self.env, at - self.env.now, fire)

    def _record_dispatch(self, payload: _Payload, compute_s: float) -> None:
        now = self.env.now
        self.batches += 1
        size = len(payload.entries)
        self.rows += size
        bid = self.fleet.next_batch_id()
        for rec in payload.entries:
            rec.dispatch_s = now
            rec.compute_s = compute_s
            rec.batch_id = bid
            rec.batch_size = size
        self.fleet.dispatched(payload.entries, size, compute_s)


class BlockingReplica(Replica):
    """Triton model with ``instance_count`` instances whose ``execute()`` blocks for a + b × rows."""

    def __init__(
        self, rid: int, env: simpy.Environment, fleet: Fleet, config: BatcherConfig, cost: BlockingBatchCost
    ) -> None:
        super().__init__(rid, env, fleet, config)
        self.cost = cost
        self._instances = config.instance_count
        self._executing = 0
        self._executing_rows = 0
        settings = fleet.settings
        self._missed_p = settings.missed_wakeup_p
        self._poll_s = settings.batcher_poll_s
        # Own stream: runs with missed_wakeup_p == 0 draw nothing and stay bit-identical.
        self._wake_rng = np.random.default_rng([settings.seed, 0x3A11, rid])
        #: Last dispatch, and whether requests were left queued then (the batcher's waits count
        #: from there; see :meth:`_sleep_until_poll`).
        self._dispatch_at = env.now
        self._queued_at_dispatch = False
        self.missed_wakeups = 0

    def _on_reconfigure(self, config: BatcherConfig) -> None:
        self._instances = config.instance_count
        self._feed()

    def in_flight(self) -> int:
        return self._executing_rows + sum(len(p.entries) for p in self._payloads)

    def saturation(self) -> float:
        return min(1.0, self._executing / self._instances)

    def _slot_available(self) -> bool:
        if self._prefetch:
            return len(self._payloads) < 2 * self._instances
        return self._executing < self._instances and not self._payloads

    def _feed(self) -> None:
        while self._executing < self._instances and self._payloads:
            payload = self._payloads.popleft()
            payload.executing = True
            self._start(payload)

    def _start(self, payload: _Payload) -> None:
        rows = len(payload.entries)
        dur = self.cost.batch_time(rows)
        if not self._prefetch:
            # Dispatching ends the batcher's previous wait (a pending delay timer included).
            self._timer_at = None
            self._dispatch_at = self.env.now
            self._queued_at_dispatch = self.batcher.size > 0
        self._executing += 1
        self._executing_rows += rows
        self._record_dispatch(payload, dur)
        self._set_busy(True)
        call_at(self.env, dur, lambda: self._done(payload))

    def _done(self, payload: _Payload) -> None:
        now = self.env.now
        self._executing -= 1
        self._executing_rows -= len(payload.entries)
        for rec in payload.entries:
            rec.first_token_s = now
            rec.done_s = now
            self.fleet.first_token(rec)
            self.fleet.finished(rec)
        if self._executing == 0:
            self._set_busy(False)
        self._feed()
        if self._wakeup_missed():
            self._sleep_until_poll()
            self._check_drained()
        else:
            self.run_batcher()

    def _wakeup_missed(self) -> bool:
        """Whether the batcher loses the race with the instance thread this time.

        Only matters without prefetch, with requests waiting, and when this instance is the only
        free one (otherwise the batcher sees a waiting instance anyway).
        """
        if self._prefetch or self._missed_p <= 0 or self.batcher.size == 0:
            return False
        if self._executing != self._instances - 1 or self.env.now < self._paused_until:
            return False
        return bool(self._wake_rng.random() < self._missed_p)

    def _sleep_until_poll(self) -> None:
        """Missed wake-up: the next arrival (``Replica.enqueue``) or the next poll runs the batcher.

        After a dispatch Triton's batcher waits ``batcher_poll_s`` at a time: for a slot if
        requests were left queued, else on its empty-queue timer, which turns into a slot wait
        at the first expiry that finds a request queued. Polls therefore fall on the lattice
        ``dispatch + k × poll`` — unless the queue was still empty at every expiry before this
        completion: then the completion's callback woke the timer wait and the slot wait (and
        its lattice) starts now.
        """
        self.missed_wakeups += 1
        now = self.env.now
        poll = self._poll_s
        origin = self._dispatch_at
        if not self._queued_at_dispatch:
            expiries = math.floor((now - origin) / poll + 1e-9)
            oldest = self.batcher.oldest_enqueue_s()
            if expiries < 1 or oldest is None or oldest > origin + expiries * poll:
                origin = now
        ticks = math.floor((now - origin) / poll + 1e-9) + 1
        self._timer_at = None
        self._arm(origin + ticks * poll)


class LLMReplica(Replica):
    """An LLM engine on one GPU: batched prefill, in-flight decode, KV-limited admission.

    The batcher's "instance is free" means: no prefill running, a sequence slot free, and the
    head request's prompt + output tokens fit the unreserved KV cache (guaranteed-no-evict).
    ``instance_count`` is not modelled: a second engine copy would need its own weights and KV
    on the same GPU.
    """

    prefetch_capable = False

    def __init__(
        self, rid: int, env: simpy.Environment, fleet: Fleet, config: BatcherConfig, cost: LLMEngineCost
    ) -> None:
        super().__init__(rid, env, fleet, config)
        self.cost = cost
        prof = cost.profile
        self._max_seqs = prof.max_num_seqs
        self._kv_cap = prof.kv_capacity_tokens
        self._max_prefill = prof.max_prefill_tokens
        self._v = 0.0  # decode tokens every active sequence has received (virtual clock)
        self._tv = env.now
        self._rate = 0.0  # dv/dt, tokens per second per sequence
        self._heap: list[tuple[float, int, RequestRecord]] = []
        self._n = 0
        self._sum_base = 0.0  # sum over active of (prompt - v_join): kv tokens = sum_base + n * v
        self._reserved = 0
        self._prefilling: list[RequestRecord] | None = None
        self._gen = 0

    def enqueue(self, rec: RequestRecord) -> None:
        p, o = self.cost.clip(rec.prompt_tokens, rec.output_tokens)
        rec.prompt_tokens = p
        rec.output_tokens = o
        rec.kv_tokens = p + o
        super().enqueue(rec)

    def in_flight(self) -> int:
        return self._n + (len(self._prefilling) if self._prefilling else 0)

    def saturation(self) -> float:
        return self._reserved / self._kv_cap

    def kv_tokens_in_use(self) -> float:
        return self._sum_base + self._n * self._v

    def _slot_available(self) -> bool:
        return self._prefilling is None and self._n < self._max_seqs

    def _budgets(self) -> tuple[int | None, int | None, int | None]:
        return self._max_seqs - self._n, self._kv_cap - self._reserved, self._max_prefill

    def _feed(self) -> None:
        if self._prefilling is None and self._payloads:
            payload = self._payloads.popleft()
            payload.executing = True
            self._start(payload)

    def _advance(self, now: float) -> None:
        if self._rate:
            self._v += (now - self._tv) * self._rate
        self._tv = now

    def _reschedule(self) -> None:
        self._gen += 1
        if self._prefilling is not None or self._n == 0:
            self._rate = 0.0
            return
        step = self.cost.step_time(self._n, self._sum_base + self._n * self._v)
        self._rate = 1.0 / step
        gen = self._gen
        dt = max(self._heap[0][0] - self._v, 0.0) * step
        call_at(self.env, dt, lambda: self._decode_event(gen))

    def _decode_event(self, gen: int) -> None:
        if gen != self._gen:
            return
        self._advance(self.env.now)
        self._complete_due()
        self._reschedule()
        self._after_change()

    def _complete_due(self) -> None:
        now = self.env.now
        limit = self._v + 1e-6
        heap = self._heap
        while heap and heap[0][0] <= limit:
            v_finish, _, rec = heapq.heappop(heap)
            v_join = v_finish - (rec.output_tokens - 1)
            self._n -= 1
            self._sum_base -= rec.prompt_tokens - v_join
            self._reserved -= rec.kv_tokens
            rec.done_s = now
            self.fleet.finished(rec)
        if self._n == 0:
            self._sum_base = 0.0

    def _after_change(self) -> None:
        self._set_busy(self._prefilling is not None or self._n > 0)
        self.run_batcher()

    def _start(self, payload: _Payload) -> None:
        now = self.env.now
        self._advance(now)
        recs = payload.entries
        tokens = 0
        sq = 0.0
        for rec in recs:
            tokens += rec.prompt_tokens
            sq += float(rec.prompt_tokens) ** 2
            self._reserved += rec.kv_tokens
        dur = self.cost.prefill_time(tokens, sq, self._n, self._sum_base + self._n * self._v)
        self._prefilling = recs
        self._record_dispatch(payload, dur)
        self._reschedule()  # pauses decoding for the prefill iteration
        self._set_busy(True)
        call_at(self.env, dur, self._prefill_done)

    def _prefill_done(self) -> None:
        now = self.env.now
        self._tv = now
        if self._n:
            self._v += 1.0  # the running sequences got one token in the mixed iteration
        recs = self._prefilling or []
        self._prefilling = None
        self._complete_due()
        for rec in recs:
            rec.first_token_s = now
            self.fleet.first_token(rec)
            if rec.output_tokens <= 1:
                self._reserved -= rec.kv_tokens
                rec.done_s = now
                self.fleet.finished(rec)
                continue
            v_finish = self._v + (rec.output_tokens - 1)
            rec.v_finish = v_finish
            heapq.heappush(self._heap, (v_finish, rec.id, rec))
            self._n += 1
            self._sum_base += rec.prompt_tokens - self._v
        self._reschedule()
        self._after_change()
