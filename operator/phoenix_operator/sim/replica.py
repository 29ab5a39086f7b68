"""One Triton pod: its dynamic batcher, its model instance(s) and what executes on them.

Batches are handed over as Triton's rate limiter does (with and without prefetch); events are plain
simpy callbacks, so a request costs a handful of events whatever its output length. Details:
docs/simulator.md#tritons-dynamic-batcher, #cost-models; the missed wake-up: docs/fidelity.md.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import simpy

from phoenix_operator.sim.batcher import DynamicBatcher
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.request import PREFIX_BLOCK_TOKENS, RequestRecord

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

    def abort(self, rec: RequestRecord) -> bool:
        """The client gave up: drop ``rec`` if it is still queued (an executing batch runs on)."""
        if self.batcher.remove(rec):
            self._check_drained()
            return True
        return False

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
    """An LLM engine on one GPU, scheduled as vLLM V1 does.

    * **Decoupled backend.** Triton hands each request straight to the engine (the backend's
      ``execute()`` returns at once), so Triton's dynamic-batcher queue never holds it. The
      engine's waiting queue is ``self.batcher`` used as a plain priority queue: ordered by the
      request's Triton priority level, then arrival (vLLM's priority scheduling); Triton's queue
      policy (size limit, timeouts) does not apply.
    * **Paged KV on demand.** The pool holds ``kv_capacity_tokens // kv_block_tokens`` blocks. A
      request is admitted when its prompt's blocks fit above a watermark; each sequence takes a
      further block whenever its tokens cross a block boundary. When a step cannot get a block,
      the lowest-priority, newest running request is pre-empted (recompute mode: its KV is freed
      and it goes back to the head of the waiting queue, to prefill prompt + generated tokens).
    * **Chunked prefill.** Each step spends ``max_prefill_tokens`` (``max_num_batched_tokens``)
      on the running sequences' decode tokens first, then on prefill chunks: the partly
      prefilled requests first, then newly admitted ones. A request's first token comes at the
      end of the step that computes its last chunk.
    * **Prefix caching.** Full ``PREFIX_BLOCK_TOKENS`` blocks of a computed prompt stay in the
      pool keyed by their block id; a finished request's blocks become evictable (LRU) but still
      count as free. A new request reuses its longest cached prefix and prefills only the rest.
    * **Fluid decode.** Between events every running sequence advances at ``1 / step_time``
      tokens per second; events are step ends, completions, the next KV-block shortage and
      arrivals, so a request costs O(1) events whatever its output length.
    """

    prefetch_capable = False

    def __init__(
        self, rid: int, env: simpy.Environment, fleet: Fleet, config: BatcherConfig, cost: LLMEngineCost
    ) -> None:
        super().__init__(rid, env, fleet, config)
        self.cost = cost
        prof = cost.profile
        self._max_seqs = prof.max_num_seqs
        self._budget = prof.max_prefill_tokens
        self._block = prof.kv_block_tokens
        self._pool = prof.kv_capacity_tokens // prof.kv_block_tokens
        self._watermark = int(prof.kv_watermark * self._pool)
        self._entry_blocks = max(PREFIX_BLOCK_TOKENS // prof.kv_block_tokens, 1)
        # Fluid decode: every running sequence has received ``_v - v_join`` tokens since it joined.
        self._v = 0.0
        self._tv = env.now
        self._rate = 0.0
        self._heap: list[tuple[float, int, int, RequestRecord]] = []
        self._running: dict[int, RequestRecord] = {}
        self._sum_base = 0.0  # Σ kv_offset: KV tokens of the running sequences = sum_base + n·v
        # Blocks of the running sequences = Σ ceil((kv_offset + v) / block): kept as the integer
        # parts' sum and the sorted fractional phases (see _decode_blocks).
        self._q_sum = 0
        self._phases: list[float] = []
        self._shared_running = 0  # blocks of prefix-cache entries counted inside the sequences
        # Prefill.
        self._prefilling: list[RequestRecord] = []
        self._prefill_blocks = 0
        self._step: list[tuple[RequestRecord, int]] | None = None
        # Prefix cache: block id -> pins; pinned entries' blocks; evictable entries in LRU order.
        self._cache: dict[int, int] = {}
        self._pinned_blocks = 0
        self._lru: OrderedDict[int, None] = OrderedDict()
        self._gen = 0
        self.preemptions = 0
        self.prefix_hit_tokens = 0
        self.prefix_lookup_tokens = 0

    # -- what the fleet and the load balancer read ---------------------------------------------
    def in_flight(self) -> int:
        return len(self._running) + len(self._prefilling)

    def idle(self) -> bool:
        return self.batcher.size == 0 and not self._running and not self._prefilling and self._step is None

    def used_blocks(self) -> int:
        """KV blocks held by running and prefilling requests (evictable cached blocks are free)."""
        self._advance(self.env.now)
        return self._used(self._v)

    def saturation(self) -> float:
        return min(1.0, self.used_blocks() / self._pool)

    def kv_tokens_in_use(self) -> float:
        return self._sum_base + len(self._running) * self._v

    # -- requests in ---------------------------------------------------------------------------
    def enqueue(self, rec: RequestRecord) -> None:
        p, o = self.cost.clip(rec.prompt_tokens, rec.output_tokens)
        rec.prompt_tokens = p
        rec.output_tokens = o
        rec.kv_tokens = p + o
        rec.replica = self.id
        if -(-(p + o) // self._block) > self._pool:
            self.fleet.reject(rec, "exceeds KV capacity")
            return
        rec.generated = 0
        rec.prefill_target = p
        rec.prefill_done = 0
        self.batcher.enqueue(rec, self.env.now, apply_policy=False)
        self.run_batcher()

    def abort(self, rec: RequestRecord) -> bool:
        """The client gave up before its first token: drop the request, free its KV."""
        if rec.first_token_s is not None:
            return False
        if self.batcher.remove(rec):
            self._check_drained()
            return True
        if rec in self._prefilling and (self._step is None or all(r is not rec for r, _ in self._step)):
            self._prefilling.remove(rec)
            self._prefill_blocks -= rec.kv_blocks
            rec.kv_blocks = 0
            self._unpin(rec)
            self.run_batcher()
            return True
        return False

    def run_batcher(self) -> None:
        """Let the engine make progress now (arrival, freed KV, reconfiguration)."""
        if self._step is None and self.env.now >= self._paused_until:
            self._advance(self.env.now)
            self._complete_due()
            if not self._start_step():
                if self._enforce_kv(1e-6) and not self._running:
                    self._start_step()
                self._reschedule()
        self._set_busy(self._step is not None or bool(self._running))
        self._check_drained()

    # -- KV accounting ---------------------------------------------------------------------------
    def _decode_blocks(self, v: float) -> int:
        """Σ over running sequences of ceil((kv_offset + v) / block).

        With kv_offset = q·block + r (0 <= r < block) and v = m·block + w, each term is
        q + m + [r + w > 0] + [r + w > block]; the sorted phases r give both counts by bisection.
        """
        n = len(self._phases)
        if n == 0:
            return 0
        m, w = divmod(v, self._block)
        above_zero = n if w > 0 else n - bisect_right(self._phases, 0.0)
        return self._q_sum + n * int(m) + above_zero + n - bisect_right(self._phases, self._block - w)

    def _used(self, v: float) -> int:
        return self._decode_blocks(v) - self._shared_running + self._prefill_blocks + self._pinned_blocks

    def _used_bound(self, v: float) -> float:
        """An upper bound on :meth:`_used` without the per-sequence rounding (ceil(x) < x + 1):
        enough to rule out a shortage or admit a request while the pool is far from full."""
        n = len(self._phases)
        return (
            (self._sum_base + n * v) / self._block
            + n
            - self._shared_running
            + self._prefill_blocks
            + self._pinned_blocks
        )

    def _next_shortage(self) -> float:
        """The decode position at which the running sequences need a block the pool lacks."""
        n = len(self._phases)
        if n == 0:
            return math.inf
        v = self._v
        top = self._heap_top()
        if top is not None:
            # Blocks grow by at most n per block of tokens: no shortage before the next completion?
            spare_bound = self._pool - self._used_bound(v)
            if spare_bound >= 0 and v + (spare_bound // n) * self._block >= top:
                return math.inf
        spare = self._pool - self._used(v)
        if spare < 0:
            return v
        cycles, k = divmod(spare, n)
        lower = v + cycles * self._block
        if top is not None and top <= lower:
            return math.inf  # the next completion comes first anyway
        return lower + self._kth_gap(v % self._block, k)

    def _kth_gap(self, w: float, k: int) -> float:
        """The k-th smallest distance (0-based) from decode position ``w`` (mod block) to a
        running sequence's next block boundary, read off the sorted phases by bisection.

        A sequence with phase r crosses at ``block - w - r`` when ``r <= block - w``, else at
        ``2·block - w - r``; within each group a larger phase crosses sooner. At ``w == 0`` a
        phase of 0 sits exactly on a boundary and crosses at once.
        """
        phases = self._phases
        n = len(phases)
        block = self._block
        if w == 0:
            zeros = bisect_right(phases, 0.0)
            return 0.0 if k < zeros else block - phases[n - 1 - (k - zeros)]
        split = bisect_right(phases, block - w)
        if k < split:
            return block - w - phases[split - 1 - k]
        return 2 * block - w - phases[n - 1 - (k - split)]

    def _enforce_kv(self, horizon: float) -> bool:
        """Pre-empt until the running sequences' growth over ``horizon`` tokens fits; True if any."""
        any_preempted = False
        while self._running or self._prefilling:
            if self._next_shortage() > self._v + horizon:
                break
            self._preempt(self._victim())
            any_preempted = True
        self._evict(0)
        return any_preempted

    def _victim(self) -> RequestRecord:
        """vLLM's priority policy: the lowest-priority running request, newest first."""
        candidates = [*self._running.values(), *self._prefilling]
        return max(candidates, key=lambda r: (r.level, r.arrival_s, r.id))

    def _preempt(self, rec: RequestRecord) -> None:
        if rec.id in self._running:
            generated = math.floor(rec.output_tokens - (rec.v_finish - self._v) + 1e-6)
            self._leave(rec)
            rec.generated = max(rec.generated, min(generated, rec.output_tokens - 1))
        else:
            self._prefilling.remove(rec)
            self._prefill_blocks -= rec.kv_blocks
            rec.kv_blocks = 0
            self._unpin(rec)
        rec.prefill_target = rec.prompt_tokens + rec.generated
        rec.prefill_done = 0
        rec.preemptions += 1
        self.preemptions += 1
        self.fleet.preempted(rec)
        self.batcher.push_front(rec)

    def _evict(self, need: int) -> None:
        """Drop least-recently-used cached blocks until ``need`` blocks are truly free."""
        if not self._lru:
            return
        cached = len(self._lru) * self._entry_blocks
        if self._pool - self._used_bound(self._v) - cached >= need:
            return
        free = self._pool - self._used(self._v) - cached
        while free < need and self._lru:
            key, _ = self._lru.popitem(last=False)
            del self._cache[key]
            free += self._entry_blocks

    def _unpin(self, rec: RequestRecord) -> None:
        for key in rec.shared_blocks:
            pins = self._cache[key] - 1
            self._cache[key] = pins
            if pins == 0:
                self._pinned_blocks -= self._entry_blocks
                self._lru[key] = None
        rec.shared_blocks = []

    def _pin(self, key: int) -> None:
        pins = self._cache.get(key, 0)
        if pins == 0:
            self._pinned_blocks += self._entry_blocks
            self._lru.pop(key, None)
        self._cache[key] = pins + 1

    def _cache_prompt(self, rec: RequestRecord) -> None:
        """Register the computed prompt's full blocks in the prefix cache (pinned by ``rec``)."""
        full = min(len(rec.prefix_blocks), rec.prompt_tokens // PREFIX_BLOCK_TOKENS)
        for key in rec.prefix_blocks[len(rec.shared_blocks) : full]:
            self._pin(key)
            rec.shared_blocks.append(key)

    # -- admission and steps ---------------------------------------------------------------------
    def _admit(self, rec: RequestRecord, horizon_used: float) -> int | None:
        """Blocks ``rec`` needs if it fits the pool now (pinning its cached prefix), else None."""
        target = rec.prefill_target
        hits = 0
        newly_pinned = 0
        limit = min(target - 1, rec.prompt_tokens) // PREFIX_BLOCK_TOKENS
        for key in rec.prefix_blocks[:limit]:
            pins = self._cache.get(key)
            if pins is None:
                break
            hits += 1
            if pins == 0:
                newly_pinned += self._entry_blocks
        need = -(-target // self._block) - hits * self._entry_blocks
        empty = not self._running and not self._prefilling
        watermark = 0 if empty else self._watermark
        if horizon_used + newly_pinned + need + watermark > self._pool:
            return None
        for key in rec.prefix_blocks[:hits]:
            self._pin(key)
        rec.shared_blocks = list(rec.prefix_blocks[:hits])
        rec.prefill_done = hits * PREFIX_BLOCK_TOKENS
        rec.kv_blocks = need
        self._prefill_blocks += need
        self.prefix_lookup_tokens += target
        self.prefix_hit_tokens += rec.prefill_done
        if rec.generated == 0:
            rec.prefix_hit_tokens = rec.prefill_done
        self._evict(0)
        return need

    def _start_step(self) -> bool:
        """Start one engine step if any prefill can run; the running sequences ride along."""
        if not self._prefilling and self.batcher.size == 0:
            return False
        preempted = self._enforce_kv(1.0) if self._running else False
        n = len(self._running)
        budget = self._budget - n
        chunks: list[tuple[RequestRecord, int]] = []
        for rec in self._prefilling:
            if budget <= 0:
                break
            c = min(rec.prefill_target - rec.prefill_done, budget)
            chunks.append((rec, c))
            budget -= c
        admitted: list[RequestRecord] = []
        if not (preempted and self._running):
            at = self._v + 1.0 if n else self._v
            used: float = self._used_bound(at)
            exact = False
            while budget > 0 and n + len(self._prefilling) < self._max_seqs:
                head = self.batcher.head()
                if head is None:
                    break
                need = self._admit(head, used)
                if need is None and not exact:
                    used, exact = self._used(at), True
                    need = self._admit(head, used)
                if need is None:
                    break
                self.batcher.pop_head()
                used += need
                self._prefilling.append(head)
                admitted.append(head)
                c = min(head.prefill_target - head.prefill_done, budget)
                chunks.append((head, c))
                budget -= c
        if not chunks:
            return False
        self._advance(self.env.now)
        tokens = 0
        attention = 0.0
        for rec, c in chunks:
            tokens += c
            attention += float(rec.prefill_done + c) ** 2 - float(rec.prefill_done) ** 2
        dur = self.cost.prefill_time(tokens, attention, n, self.kv_tokens_in_use())
        self._step = chunks
        if admitted:
            self._record_admission(admitted, dur)
        self._reschedule()  # decoding advances one token per step while the step runs
        self._set_busy(True)
        call_at(self.env, dur, self._step_done)
        return True

    def _record_admission(self, recs: list[RequestRecord], step_s: float) -> None:
        fresh = [r for r in recs if r.batch_id < 0]
        now = self.env.now
        if not fresh:
            return
        self.batches += 1
        self.rows += len(fresh)
        bid = self.fleet.next_batch_id()
        for rec in fresh:
            rec.dispatch_s = now
            rec.compute_s = step_s
            rec.batch_id = bid
            rec.batch_size = len(fresh)
        self.fleet.dispatched(fresh, len(fresh), step_s)

    def _step_done(self) -> None:
        now = self.env.now
        self._tv = now
        if self._running:
            self._v += 1.0
        chunks = self._step or []
        self._step = None
        self._complete_due()
        for rec, c in chunks:
            rec.prefill_done += c
            if rec.prefill_done < rec.prefill_target:
                continue
            self._prefilling.remove(rec)
            self._prefill_blocks -= rec.kv_blocks
            self._cache_prompt(rec)
            rec.generated += 1
            if rec.first_token_s is None:
                rec.first_token_s = now
                self.fleet.first_token(rec)
            if rec.generated >= rec.output_tokens:
                rec.kv_blocks = 0
                self._unpin(rec)
                rec.done_s = now
                self.fleet.finished(rec)
            else:
                self._join(rec)
        self.run_batcher()

    # -- fluid decode ----------------------------------------------------------------------------
    def _join(self, rec: RequestRecord) -> None:
        v = self._v
        rec.kv_blocks = 0
        rec.kv_offset = rec.prefill_target - v
        rec.kv_epoch += 1
        rec.v_finish = v + (rec.output_tokens - rec.generated)
        heapq.heappush(self._heap, (rec.v_finish, rec.id, rec.kv_epoch, rec))
        self._running[rec.id] = rec
        self._sum_base += rec.kv_offset
        q = math.floor(rec.kv_offset / self._block)
        self._q_sum += q
        insort(self._phases, rec.kv_offset - q * self._block)
        self._shared_running += len(rec.shared_blocks) * self._entry_blocks

    def _leave(self, rec: RequestRecord) -> None:
        del self._running[rec.id]
        rec.kv_epoch += 1
        self._sum_base -= rec.kv_offset
        q = math.floor(rec.kv_offset / self._block)
        self._q_sum -= q
        phase = rec.kv_offset - q * self._block
        del self._phases[bisect_left(self._phases, phase)]
        self._shared_running -= len(rec.shared_blocks) * self._entry_blocks
        self._unpin(rec)
        if not self._running:
            self._sum_base = 0.0

    def _heap_top(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2] != heap[0][3].kv_epoch:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def _advance(self, now: float) -> None:
        if self._rate:
            self._v += (now - self._tv) * self._rate
        self._tv = now

    def _reschedule(self) -> None:
        self._gen += 1
        top = self._heap_top()
        if self._step is not None or top is None:
            self._rate = 0.0
            return
        step = self.cost.step_time(len(self._running), self.kv_tokens_in_use())
        self._rate = 1.0 / step
        gen = self._gen
        until = min(top, self._next_shortage())
        call_at(self.env, max(until - self._v, 0.0) * step, lambda: self._decode_event(gen))

    def _decode_event(self, gen: int) -> None:
        if gen == self._gen:
            self.run_batcher()

    def _complete_due(self) -> None:
        now = self.env.now
        limit = self._v + 1e-6
        heap = self._heap
        while True:
            top = self._heap_top()
            if top is None or top > limit:
                break
            rec = heapq.heappop(heap)[3]
            rec.generated = rec.output_tokens
            self._leave(rec)
            rec.done_s = now
            self.fleet.finished(rec)
