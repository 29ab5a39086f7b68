"""A fleet of Triton replicas behind a Kubernetes Service, driven by a controller.

Load balancing, scale-up and ReplicaSet-style scale-down, live batching changes and GPU billing:
docs/simulator.md, "Fleet, load balancing, billing" and "Triton's dynamic batcher" (live
reconfiguration).
"""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import simpy

from phoenix_operator.observation import Observation
from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.interface import FleetCommand, FleetController, FleetView
from phoenix_operator.sim.replica import (
    GONE,
    STARTING,
    BlockingReplica,
    LLMReplica,
    Replica,
    call_at,
)
from phoenix_operator.sim.request import DEFAULT_CLASSES, Arrival, RequestRecord
from phoenix_operator.sim.scrape import FleetScraper, GaugeSample, ScrapeSettings
from phoenix_operator.stats import percentile

CostModel = BlockingBatchCost | LLMEngineCost
LB_POLICIES = ("round-robin", "least-pending", "random")
STARTUP_DISTRIBUTIONS = ("fixed", "uniform", "lognormal")


@dataclass(frozen=True)
class FleetSettings:
    initial_replicas: int = 1
    min_replicas: int = 1
    max_replicas: int = 1000
    startup_s: float = 0.0
    #: How each new pod's start-up time is drawn around ``startup_s``: ``fixed``, ``uniform``
    #: (within ± ``startup_spread`` of it) or ``lognormal`` (median ``startup_s``, sigma
    #: ``startup_spread``); seeded by ``seed``, so a run is reproducible.
    startup_distribution: str = "fixed"
    startup_spread: float = 0.0
    #: The start-up time controllers are told (``replicaStartupSeconds``); None = ``startup_s``.
    told_startup_s: float | None = None
    #: The Prometheus pipeline controllers read metrics through; None = exact figures from the
    #: event logs (unit tests of the engine, the fidelity harness).
    scrape: ScrapeSettings | None = None
    #: ``least-pending`` by default: an LLM pod's cost is its queued + running requests, and a
    #: gateway that counts them (Envoy least-request, llm-d's endpoint picker, the Gateway API
    #: inference extension) is how LLM fleets are fronted; blind round-robin piles a burst of long
    #: prompts onto one pod while another idles. ``round-robin`` (kube-proxy IPVS) stays available.
    lb: str = "least-pending"
    #: The client gives up when no first token came this long after a send (0 = never) and
    #: sends again after ``client_backoff_s × 2^(attempt - 1)``, at most ``client_retries`` times;
    #: then the request is ``abandoned``. Every retry is a new arrival for the fleet.
    client_ttft_timeout_s: float = 60.0
    client_retries: int = 2
    client_backoff_s: float = 1.0
    #: Delay until a new batching config is in force on the pods.
    batching_apply_s: float = 0.0
    #: Pause in batch dispatch while a pod reloads (0 = Triton's seamless reload).
    batching_pause_s: float = 0.0
    #: Stop at most this long after the last arrival (requests still queued are ``unserved``).
    max_drain_s: float = 1800.0
    seed: int = 0
    #: Blocking replicas without prefetch (priority levels or a queue policy): probability that
    #: Triton's batcher misses an instance's completion and sleeps until the next arrival or its
    #: 500 ms slot poll (a race in Triton core, docs/fidelity.md). 0 = the intended semantics;
    #: the fidelity harness measures it on the real server.
    missed_wakeup_p: float = 0.0
    #: ``default_wait_microseconds`` of Triton's ``BatcherThread``: its slot-wait timeout.
    batcher_poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.lb not in LB_POLICIES:
            raise ValueError(f"lb must be one of {LB_POLICIES}")
        if self.min_replicas < 1 or self.max_replicas < self.min_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.initial_replicas < 1:
            raise ValueError("initial_replicas must be >= 1")
        if not 0.0 <= self.missed_wakeup_p <= 1.0 or self.batcher_poll_s <= 0:
            raise ValueError("need 0 <= missed_wakeup_p <= 1 and batcher_poll_s > 0")
        if self.client_ttft_timeout_s < 0 or self.client_retries < 0 or self.client_backoff_s < 0:
            raise ValueError("client timeout, retries and backoff must be >= 0")
        if self.startup_distribution not in STARTUP_DISTRIBUTIONS:
            raise ValueError(f"startup_distribution must be one of {STARTUP_DISTRIBUTIONS}")
        if self.startup_spread < 0 or (self.startup_distribution == "uniform" and self.startup_spread > 1):
            raise ValueError("startup_spread must be >= 0 (at most 1 for uniform)")


@dataclass
class FleetDecision:
    at: float
    target_replicas: int | None
    batching: BatcherConfig | None
    reason: str


@dataclass
class FleetResult:
    """Everything one simulated run produced."""

    records: list[RequestRecord]
    #: (time, desired, ready, provisioned = ready + starting + draining) at every change.
    timeline: list[tuple[float, int, int, int]]
    #: Per pod: (created, ready or None, gone or None).
    replica_spans: list[tuple[float, float | None, float | None]]
    scaling_actions: int
    batching_changes: int
    #: Billing window [0, horizon_s], seconds.
    horizon_s: float
    end_s: float
    decisions: list[FleetDecision] = field(default_factory=list)
    batches: int = 0
    #: LLM engine: sequences pre-empted for KV (recompute), client retries sent, and prompt
    #: tokens admitted / served from the prefix cache.
    preemptions: int = 0
    retries: int = 0
    prefix_lookup_tokens: int = 0
    prefix_hit_tokens: int = 0

    @property
    def prefix_hit_rate(self) -> float | None:
        """Share of admitted prompt tokens the prefix cache served (None: nothing admitted)."""
        return self.prefix_hit_tokens / self.prefix_lookup_tokens if self.prefix_lookup_tokens else None

    def gpu_seconds(self, start: float = 0.0, end: float | None = None) -> float:
        stop = self.horizon_s if end is None else end
        total = 0.0
        for created, _ready, gone in self.replica_spans:
            lo = max(created, start)
            hi = min(stop if gone is None else gone, stop)
            if hi > lo:
                total += hi - lo
        return total

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds() / 3600.0


class Fleet:
    """Replicas, load balancer, scaling and the metric logs observations are built from."""

    def __init__(
        self,
        env: simpy.Environment,
        cost: CostModel,
        batching: BatcherConfig,
        settings: FleetSettings,
        total_requests: int,
    ) -> None:
        self.env = env
        self.cost = cost
        self.config = batching
        self.settings = settings
        self.replicas: list[Replica] = []
        self.ready: list[Replica] = []
        self.starting: list[Replica] = []
        self.draining: list[Replica] = []
        self.timeline: list[tuple[float, int, int, int]] = []
        self.decisions: list[FleetDecision] = []
        self.scaling_actions = 0
        self.batching_changes = 0
        self._rr = 0
        self._rng = np.random.default_rng(settings.seed)
        self._batch_id = 0
        self._total = total_requests
        self._terminal = 0
        self.preemptions = 0
        self.retries = 0
        #: Client deadlines (time, request, attempt) in send order, and whether a sweep is due.
        self._deadlines: deque[tuple[float, RequestRecord, int]] = deque()
        self._sweep_armed = False
        self.all_done = env.event()
        if total_requests == 0:
            self.all_done.succeed()
        # Metric logs, appended in time order.
        self.arr_t: list[float] = []
        self.ft_t: list[float] = []
        self.ft_v: list[float] = []
        self.ft_c: list[str] = []
        self.ft_p: list[int] = []
        self.fin_t: list[float] = []
        self.fin_o: list[int] = []
        self.fin_tpot: list[float] = []
        self.dq_t: list[float] = []
        self.dq_queue: list[float] = []
        self.dq_compute: list[float] = []
        self.b_t: list[float] = []
        self.b_rows: list[int] = []
        self.err_t: list[float] = []
        for _ in range(settings.initial_replicas):
            rep = self._new_replica()
            rep.become_ready()
            self.starting.remove(rep)
            self.ready.append(rep)
        self.desired = settings.initial_replicas
        self._mark()
        self._startup_rng = np.random.default_rng([settings.seed, 0x57A27])
        self.scraper: FleetScraper | None = None
        if settings.scrape is not None:
            self.scraper = FleetScraper(settings.scrape)
            self._scrape(0.0)

    # -- replicas ------------------------------------------------------------------------------
    def _new_replica(self) -> Replica:
        rid = len(self.replicas)
        rep: Replica
        if isinstance(self.cost, LLMEngineCost):
            rep = LLMReplica(rid, self.env, self, self.config, self.cost)
        else:
            rep = BlockingReplica(rid, self.env, self, self.config, self.cost)
        self.replicas.append(rep)
        self.starting.append(rep)
        return rep

    def _mark(self) -> None:
        provisioned = len(self.ready) + len(self.starting) + len(self.draining)
        self.timeline.append((self.env.now, self.desired, len(self.ready), provisioned))

    def _ready_up(self, rep: Replica) -> None:
        if rep.state != STARTING:
            return
        self.starting.remove(rep)
        if rep.batcher.config != self.config:
            rep.reconfigure(self.config)
        rep.become_ready()
        self.ready.append(rep)
        self._mark()

    def replica_gone(self, rep: Replica) -> None:
        if rep in self.draining:
            self.draining.remove(rep)
        self._mark()

    def set_target(self, target: int) -> bool:
        """Scale the Deployment; returns whether ``spec.replicas`` changed."""
        s = self.settings
        target = max(s.min_replicas, min(s.max_replicas, int(target)))
        if target == self.desired:
            return False
        self.scaling_actions += 1
        self.desired = target
        active = len(self.ready) + len(self.starting)
        if target > active:
            for _ in range(target - active):
                rep = self._new_replica()
                call_at(self.env, self.startup_delay(), functools.partial(self._ready_up, rep))
        else:
            excess = active - target
            while excess and self.starting:
                rep = self.starting.pop()  # newest not-ready pod first
                rep.state = GONE
                rep.gone_s = self.env.now
                excess -= 1
            while excess and self.ready:
                rep = max(self.ready, key=lambda r: (r.ready_s or 0.0, r.id))
                self.ready.remove(rep)
                self.draining.append(rep)
                rep.start_draining()
                excess -= 1
        self._mark()
        return True

    def set_batching(self, config: BatcherConfig) -> bool:
        """Apply a batching config live; returns whether it differed from the current one."""
        if config == self.config:
            return False
        self.batching_changes += 1
        self.config = config
        s = self.settings

        def apply() -> None:
            for rep in [*self.ready, *self.draining]:
                if rep.batcher.config != config and self.config == config:
                    rep.reconfigure(config, s.batching_pause_s)

        if s.batching_apply_s > 0:
            call_at(self.env, s.batching_apply_s, apply)
        else:
            apply()
        return True

    def apply(self, cmd: FleetCommand) -> None:
        changed_batching = cmd.batching is not None and self.set_batching(cmd.batching)
        changed_target = cmd.target_replicas is not None and self.set_target(cmd.target_replicas)
        if changed_batching or changed_target:
            self.decisions.append(
                FleetDecision(
                    self.env.now,
                    cmd.target_replicas if changed_target else None,
                    cmd.batching if changed_batching else None,
                    cmd.reason,
                )
            )

    # -- request path --------------------------------------------------------------------------
    def submit(self, rec: RequestRecord) -> None:
        self.arr_t.append(self.env.now)
        ready = self.ready
        if not ready:
            self.reject(rec, "no ready replica")
            return
        lb = self.settings.lb
        if lb == "round-robin":
            rep = ready[self._rr % len(ready)]
            self._rr += 1
        elif lb == "least-pending":
            # Ties go round-robin (an idle fleet is all ties): scan from a rotating start.
            start = self._rr % len(ready)
            self._rr += 1
            rep = min(ready[start:] + ready[:start], key=Replica.outstanding)
        else:
            rep = ready[int(self._rng.integers(len(ready)))]
        timeout = self.settings.client_ttft_timeout_s
        if timeout > 0:
            self._deadlines.append((self.env.now + timeout, rec, rec.attempt))
            if not self._sweep_armed:
                self._sweep_armed = True
                call_at(self.env, timeout, self._sweep_deadlines)
        rep.enqueue(rec)

    def _sweep_deadlines(self) -> None:
        """Fire the client timeouts that are due. Deadlines are in send order (one timeout for
        all), and most requests have their first token long before theirs, so one timer,
        re-armed at the oldest still-waiting request's deadline, serves them all."""
        self._sweep_armed = False
        now = self.env.now
        pending = self._deadlines
        while pending:
            deadline, rec, attempt = pending[0]
            if rec.attempt == attempt and rec.first_token_s is None and rec.status == "unserved":
                if deadline > now + 1e-9:
                    self._sweep_armed = True
                    call_at(self.env, deadline - now, self._sweep_deadlines)
                    return
                self._client_gives_up(rec, attempt)
            pending.popleft()

    def _client_gives_up(self, rec: RequestRecord, attempt: int) -> None:
        """No first token within the client's timeout: cancel, then retry after a backoff."""
        if rec.attempt != attempt or rec.first_token_s is not None or rec.status != "unserved":
            return
        if not self.replicas[rec.replica].abort(rec):
            return  # already executing: the answer is on its way
        s = self.settings
        if rec.attempt > s.client_retries:
            rec.status = "abandoned"
            rec.reject_reason = "client timeout"
            self.err_t.append(self.env.now)
            self._terminal_one()
            return
        self.retries += 1
        backoff = s.client_backoff_s * 2 ** (rec.attempt - 1)
        rec.attempt += 1
        rec.dispatch_s = None
        rec.batch_id = -1
        call_at(self.env, backoff, lambda: self.submit(rec))

    def preempted(self, rec: RequestRecord) -> None:
        """An engine pre-empted ``rec`` to free KV blocks (it will be recomputed)."""
        self.preemptions += 1

    def _terminal_one(self) -> None:
        self._terminal += 1
        if self._terminal == self._total:
            self.all_done.succeed()

    def reject(self, rec: RequestRecord, reason: str) -> None:
        rec.status = "timeout" if reason == "timeout" else "rejected"
        rec.reject_reason = reason
        rec.done_s = None
        self.err_t.append(self.env.now)
        self._terminal_one()

    def next_batch_id(self) -> int:
        self._batch_id += 1
        return self._batch_id

    def dispatched(self, recs: Sequence[RequestRecord], rows: int, compute_s: float) -> None:
        now = self.env.now
        self.b_t.append(now)
        self.b_rows.append(rows)
        for rec in recs:
            self.dq_t.append(now)
            self.dq_queue.append(now - rec.enqueue_s)
            self.dq_compute.append(compute_s)

    def first_token(self, rec: RequestRecord) -> None:
        self.ft_t.append(self.env.now)
        self.ft_v.append(self.env.now - rec.arrival_s)
        self.ft_c.append(rec.klass)
        self.ft_p.append(rec.prompt_tokens)

    def finished(self, rec: RequestRecord) -> None:
        rec.status = "ok"
        self.fin_t.append(self.env.now)
        self.fin_o.append(rec.output_tokens)
        first = rec.first_token_s if rec.first_token_s is not None else self.env.now
        self.fin_tpot.append((self.env.now - first) / max(rec.output_tokens - 1, 1))
        self._terminal_one()

    # -- start-up and observation --------------------------------------------------------------
    def startup_delay(self) -> float:
        """A new pod's start-up time, drawn from the settings' distribution."""
        s = self.settings
        if s.startup_distribution == "uniform" and s.startup_spread > 0:
            return float(s.startup_s * self._startup_rng.uniform(1 - s.startup_spread, 1 + s.startup_spread))
        if s.startup_distribution == "lognormal" and s.startup_spread > 0:
            return float(s.startup_s * self._startup_rng.lognormal(0.0, s.startup_spread))
        return s.startup_s

    def _scrape(self, stamp: float) -> None:
        """Prometheus' scrape stamped ``stamp``: the exporters' state ``lag_s`` earlier."""
        scraper = self.scraper
        assert scraper is not None
        cfg = scraper.settings
        now = self.env.now
        busy = 0.0
        util_busy = 0.0
        util_time = 0.0
        for rep in self.replicas:
            busy += rep.busy_seconds(now)
        for rep in self.ready:
            start = max(now - cfg.interval_s, rep.ready_s if rep.ready_s is not None else now)
            if now > start:
                util_busy += rep.busy_seconds(now) - rep.busy_seconds(start)
                util_time += now - start
        ready = self.ready
        gauges = GaugeSample(
            waiting=tuple(r.batcher.size for r in ready),
            running=tuple(r.in_flight() for r in ready),
            saturation=tuple(r.saturation() for r in ready),
            pending=float(sum(r.batcher.size for r in ready) + sum(r.batcher.size for r in self.draining)),
            utilization=util_busy / util_time if util_time > 0 else None,
        )
        scraper.scrape(stamp, self, busy, gauges)
        nxt = stamp + cfg.interval_s
        call_at(self.env, nxt - cfg.lag_s - now, functools.partial(self._scrape, nxt))

    def observe(self, t0: float, now: float) -> Observation:
        """Window [t0, now] as the Prometheus metric source would aggregate it: through the
        scrape pipeline when the settings have one, else exact figures from the event logs."""
        if self.scraper is not None:
            window = max(now - t0, self.scraper.settings.rate_window_s)
            return self._observe_scraped(self.scraper, window, now)
        return self._observe_exact(t0, now)

    def _observe_scraped(self, prom: FleetScraper, window: float, now: float) -> Observation:
        """The operator's queries (``control.metrics.build_queries``) on the scraped samples."""
        missing: dict[str, str] = {}

        def need(name: str, value: float | None, reason: str = "no data") -> float | None:
            if value is None:
                missing[name] = reason
            return value

        success = prom.rate("successes", now, window)
        failure = prom.rate("failures", now, window)
        first_tokens = prom.rate("first_tokens", now, window)
        ttft_p95 = prom.quantile(0.95, "ttft", now, window) if first_tokens else None
        by_class: dict[str, float | None] = {}
        for klass in prom.classes():
            value = prom.quantile(0.95, "class_ttft", now, window, klass)
            if value is not None:
                by_class[klass] = value
        dispatched = prom.rate("dispatched", now, window)

        def per(counter: str, denominator: float | None) -> float | None:
            numerator = prom.rate(counter, now, window)
            if numerator is None or not denominator:
                return None
            return numerator / denominator

        batches = prom.rate("batches", now, window)
        request_rate = None if success is None else success + (failure or 0.0)
        error_rate = None
        if request_rate:
            error_rate = (failure or 0.0) / request_rate
        gauges = prom.last_gauges(now)
        return Observation(
            at=now,
            window_s=window,
            ttft_p95_s=need("ttft_p95_s", ttft_p95),
            ttft_p95_by_class_s=by_class,
            queue_time_s=need("queue_time_s", per("queue_seconds", dispatched)),
            compute_time_s=need("compute_time_s", per("compute_seconds", dispatched)),
            request_rate=need("request_rate", request_rate),
            mean_batch_size=need("mean_batch_size", per("batch_rows", batches)),
            gpu_utilization=need("gpu_utilization", prom.avg_utilization(now, window)),
            error_rate=need("error_rate", error_rate),
            pending_requests=need("pending_requests", None if gauges is None else gauges.pending),
            ready_replicas=len(self.ready),
            mean_prompt_tokens=per("prompt_tokens", first_tokens),
            mean_output_tokens=per("generation_tokens", success),
            ttft_source="vllm-histogram",
            missing=missing,
        )

    def _observe_exact(self, t0: float, now: float) -> Observation:
        window = max(now - t0, 1e-9)
        missing: dict[str, str] = {}
        i = bisect_left(self.ft_t, t0)
        ttfts = self.ft_v[i:]
        ttft_p95: float | None = None
        by_class: dict[str, float | None] = {}
        if ttfts:
            ttft_p95 = percentile(ttfts, 95)
            groups: dict[str, list[float]] = {}
            for v, c in zip(ttfts, self.ft_c[i:], strict=True):
                groups.setdefault(c, []).append(v)
            by_class = {c: percentile(vs, 95) for c, vs in groups.items()}
        else:
            missing["ttft_p95_s"] = "no data"
        j = bisect_left(self.dq_t, t0)
        queue_time: float | None = None
        compute_time: float | None = None
        if j < len(self.dq_t):
            queue_time = float(np.mean(self.dq_queue[j:]))
            compute_time = float(np.mean(self.dq_compute[j:]))
        else:
            missing["queue_time_s"] = "no data"
            missing["compute_time_s"] = "no data"
        k = bisect_left(self.b_t, t0)
        mean_batch: float | None = None
        if k < len(self.b_t):
            mean_batch = float(np.mean(self.b_rows[k:]))
        else:
            missing["mean_batch_size"] = "no data"
        arrivals = len(self.arr_t) - bisect_left(self.arr_t, t0)
        errors = len(self.err_t) - bisect_left(self.err_t, t0)
        error_rate: float | None = errors / arrivals if arrivals else None
        if error_rate is None:
            missing["error_rate"] = "no data"
        util_busy = 0.0
        util_time = 0.0
        for rep in self.ready:
            start = max(t0, rep.ready_s if rep.ready_s is not None else t0)
            if now > start:
                util_busy += rep.busy_seconds(now) - rep.busy_seconds(start)
                util_time += now - start
        gpu_util: float | None = util_busy / util_time if util_time > 0 else None
        if gpu_util is None:
            missing["gpu_utilization"] = "no data"
        mean_prompt = float(np.mean(self.ft_p[i:])) if ttfts else None
        f = bisect_left(self.fin_t, t0)
        mean_output = float(np.mean(self.fin_o[f:])) if f < len(self.fin_t) else None
        pending = sum(rep.batcher.size for rep in self.ready) + sum(rep.batcher.size for rep in self.draining)
        return Observation(
            at=now,
            window_s=window,
            ttft_p95_s=ttft_p95,
            ttft_p95_by_class_s=by_class,
            queue_time_s=queue_time,
            compute_time_s=compute_time,
            request_rate=arrivals / window,
            mean_batch_size=mean_batch,
            gpu_utilization=gpu_util,
            error_rate=error_rate,
            pending_requests=float(pending),
            ready_replicas=len(self.ready),
            mean_prompt_tokens=mean_prompt,
            mean_output_tokens=mean_output,
            ttft_source="simulator",
            missing=missing,
        )

    def latency_p90(self, t0: float, now: float | None = None) -> tuple[float | None, float | None]:
        """(P90 TTFT, P90 TPOT) of first tokens / finished requests since ``t0``: the
        histogram quantiles an SLO-driven scaler reads (llm-d's signal)."""
        if self.scraper is not None:
            at = self.env.now if now is None else now
            window = max(at - t0, self.scraper.settings.rate_window_s)
            return (
                self.scraper.quantile(0.9, "ttft", at, window),
                self.scraper.quantile(0.9, "tpot", at, window),
            )
        i = bisect_left(self.ft_t, t0)
        f = bisect_left(self.fin_t, t0)
        ttft = percentile(self.ft_v[i:], 90) if i < len(self.ft_v) else None
        tpot = percentile(self.fin_tpot[f:], 90) if f < len(self.fin_tpot) else None
        return ttft, tpot

    def view(self, t0: float, now: float, slo_ttft_s: float) -> FleetView:
        """What a controller deciding at ``now`` (previously at ``t0``) reads: replica counts
        from the Kubernetes API (live), metrics through the pipeline; per-pod gauges are the
        last scrape's (pods created since have none yet)."""
        ready = self.ready
        ttft_p90, tpot_p90 = self.latency_p90(t0, now)
        waiting = tuple(r.batcher.size for r in ready)
        running = tuple(r.in_flight() for r in ready)
        saturation = tuple(r.saturation() for r in ready)
        if self.scraper is not None:
            gauges = self.scraper.last_gauges(now)
            waiting, running, saturation = (
                ((), (), ()) if gauges is None else (gauges.waiting, gauges.running, gauges.saturation)
            )
        told = self.settings.told_startup_s
        return FleetView(
            now=now,
            observation=self.observe(t0, now),
            desired_replicas=self.desired,
            ready_replicas=len(ready),
            starting_replicas=len(self.starting),
            draining_replicas=len(self.draining),
            batching=self.config,
            replica_waiting=waiting,
            replica_saturation=saturation,
            replica_running=running,
            min_replicas=self.settings.min_replicas,
            max_replicas=self.settings.max_replicas,
            startup_s=self.settings.startup_s if told is None else told,
            slo_ttft_s=slo_ttft_s,
            ttft_p90_s=ttft_p90,
            tpot_p90_s=tpot_p90,
        )


def class_names(classes: dict[str, int] | None = None) -> dict[int, str]:
    """Triton priority value -> class name (``0`` -> ``default``)."""
    table = {v: k for k, v in (classes or DEFAULT_CLASSES).items()}
    table.setdefault(0, "default")
    return table


def run_fleet(
    arrivals: Sequence[Arrival],
    cost: CostModel,
    batching: BatcherConfig,
    settings: FleetSettings | None = None,
    controller: FleetController | None = None,
    slo_ttft_s: float = 3.0,
    classes: dict[str, int] | None = None,
    horizon_s: float | None = None,
) -> FleetResult:
    """Simulate ``arrivals`` (sorted by time) on a fleet, optionally under a controller."""
    settings = settings or FleetSettings()
    env = simpy.Environment()
    names = class_names(classes)
    records = [
        RequestRecord(i, a, a.klass or names.get(a.priority, f"p{a.priority}"))
        for i, a in enumerate(arrivals)
    ]
    fleet = Fleet(env, cost, batching, settings, len(records))
    last = records[-1].arrival_s if records else 0.0
    horizon = last if horizon_s is None else horizon_s

    def arrive(idx: int) -> None:
        fleet.submit(records[idx])
        nxt = idx + 1
        if nxt < len(records):
            call_at(env, records[nxt].arrival_s - env.now, lambda: arrive(nxt))

    if records:
        call_at(env, records[0].arrival_s, lambda: arrive(0))

    if controller is not None:
        interval = float(controller.interval_s)
        state = {"t0": 0.0}

        def tick() -> None:
            now = env.now
            cmd = controller.decide(now, fleet.view(state["t0"], now, slo_ttft_s))
            fleet.apply(cmd)
            state["t0"] = now
            call_at(env, interval, tick)

        call_at(env, interval, tick)

    stop = env.timeout(last + settings.max_drain_s)
    env.run(until=simpy.AnyOf(env, [fleet.all_done, stop]))
    end = env.now
    spans = [(r.created_s, r.ready_s, r.gone_s) for r in fleet.replicas]
    fleet._mark()
    return FleetResult(
        records=records,
        timeline=fleet.timeline,
        replica_spans=spans,
        scaling_actions=fleet.scaling_actions,
        batching_changes=fleet.batching_changes,
        horizon_s=max(horizon, 0.0),
        end_s=end,
        decisions=fleet.decisions,
        batches=fleet._batch_id,
        preemptions=fleet.preemptions,
        retries=fleet.retries,
        prefix_lookup_tokens=sum(getattr(r, "prefix_lookup_tokens", 0) for r in fleet.replicas),
        prefix_hit_tokens=sum(getattr(r, "prefix_hit_tokens", 0) for r in fleet.replicas),
    )


def simulate(
    arrivals: Sequence[Arrival],
    batcher_config: BatcherConfig,
    cost_model: CostModel,
    replicas: int = 1,
    lb: str = "round-robin",
    seed: int = 0,
    max_drain_s: float = 1800.0,
    missed_wakeup_p: float = 0.0,
) -> list[RequestRecord]:
    """Run explicit arrivals through a fixed fleet; one record per arrival, in arrival order.

    This is the entry point for the fidelity harness: same arrivals, same batcher
    config, same cost function as the real server. The executed-batch count is
    ``len({r.batch_id for r in records if r.batch_id >= 0})`` and a request's Triton queue time is
    ``r.queue_s``; ``r.ttft_s`` is end-to-end latency for a blocking model. ``missed_wakeup_p``
    is :attr:`FleetSettings.missed_wakeup_p` (a measured property of the real server).
    """
    ordered = sorted(arrivals, key=lambda a: a.time_s)
    settings = FleetSettings(
        initial_replicas=replicas,
        min_replicas=replicas,
        max_replicas=replicas,
        lb=lb,
        seed=seed,
        max_drain_s=max_drain_s,
        missed_wakeup_p=missed_wakeup_p,
    )
    return run_fleet(ordered, cost_model, batcher_config, settings).records
