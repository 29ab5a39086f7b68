"""One control-loop step for one PhoenixDeployment: observe → decide → act → explain.

The decision is the pure `policy.decide`; this module gathers its inputs, performs what `auto` mode
allows and reports, writing only when something changes, so a converged deployment costs the API
server only reads. Details: docs/operator.md, "The control loop".
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from phoenix_operator.api.models import AutoscalingMode, PhoenixDeploymentSpec
from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.prometheus import PrometheusMetricSource
from phoenix_operator.clients.triton import (
    BATCHING_APPLIED,
    TritonModelControl,
    ready_endpoints,
    triton_control_key,
)
from phoenix_operator.clients.writer import Writer
from phoenix_operator.control.policy import (
    Decision,
    FleetState,
    PolicyParams,
    PolicyState,
    RetrievalCheck,
    check_retrieval,
    decide,
)
from phoenix_operator.intents import LoadModelConfig
from phoenix_operator.observation import Observation
from phoenix_operator.render.objects import Target, triton_name
from phoenix_operator.render.tritonconfig import (
    BatchingConfig,
    batching_in_force,
    model_config_dict,
    to_load_json,
)
from phoenix_operator.settings import OperatorSettings
from phoenix_operator.status import quality as qual
from phoenix_operator.status.conditions import DeploymentState, changed_conditions, merge_conditions

log = logging.getLogger("phoenix_operator.control")
RETRIEVAL_SLOW = "RetrievalSlow"
CONTROL_CONDITIONS = ("MetricsAvailable", "Autoscaling", RETRIEVAL_SLOW, BATCHING_APPLIED)
#: Edges (TTFT p95 / target) of the bands ``status.ttftP95Seconds`` is rewritten across.
TTFT_BAND_EDGES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
#: How far past a band's edge the TTFT must go before it counts as having left the band, so a
#: figure hovering at an edge does not rewrite status every interval.
TTFT_BAND_HYSTERESIS = 0.1


def ttft_worth_writing(new_s: float, written_s: float | None, target_s: float) -> bool:
    """Whether a TTFT p95 differs enough from the one in status to rewrite it (pure).

    Status is for people and dashboards (Prometheus has the exact series): the figure is
    rewritten when it moves to another band of the target — below a quarter, half, three
    quarters, at or over target, 1.5x, 2x, 4x — with some hysteresis at each edge.
    """
    if written_s is None:
        return True
    old, new = written_s / target_s, new_s / target_s
    lower = max((e for e in TTFT_BAND_EDGES if e <= old), default=0.0)
    upper = min((e for e in TTFT_BAND_EDGES if e > old), default=math.inf)
    return new < lower * (1 - TTFT_BAND_HYSTERESIS) or new >= upper * (1 + TTFT_BAND_HYSTERESIS)


#: Told after every step (name, namespace, observation, decision, applied, mode): the runtime
#: exports the operator's own metrics from it, so the loop needs no metrics library.
StepObserver = Callable[[str, str, Observation, Decision, bool, str], None]


@dataclass
class StepResult:
    decision: Decision | None = None
    observation: Observation | None = None
    applied: bool = False
    status_patch: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    #: Status now asks the children for something new (replicas, a tuned batching config): the
    #: runtime runs a reconcile pass right after writing status, and the reconciler, the one
    #: writer of children, renders them from it.
    reconcile: bool = False
    #: Recomputes ``status_patch`` and ``events`` against another status than the one the step
    #: read: the runtime steps on its watched copy of the object and, before writing, hands
    #: this the status it has just read from the API and takes its (status_patch, events); the
    #: decision itself is not retaken. It holds no reference to the result (no cycle to collect).
    rebase: Callable[[Mapping[str, Any]], tuple[dict[str, Any], list[tuple[str, str, str]]]] | None = field(
        default=None, repr=False, compare=False
    )


def rendered(body: Mapping[str, Any]) -> bool:
    """Whether the reconciler has finished a pass on this object (it writes observedGeneration).

    Until then there is no Deployment to size and no pods to observe: a step would only spend API
    reads and a Prometheus query on nothing, and at start-up with many deployments those calls
    compete with the reconciler's first passes for the same threads.
    """
    return (body.get("status") or {}).get("observedGeneration") is not None


def default_selector(name: str, namespace: str) -> str:
    """Series of this deployment's Triton pods (labels added by the PodMonitor's relabelling)."""
    return f'phoenix_deployment="{name}",namespace="{namespace}"'


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


#: Event reasons per action: (applied, not applied in auto mode).
EVENT_REASONS = {
    "scale-up": ("ScaledUp", "ScaleUpFailed"),
    "scale-down": ("ScaledDown", "ScaleDownFailed"),
    "batching": ("BatchingRetuned", "BatchingRetuneFailed"),
    "revert-batching": ("BatchingReverted", "BatchingRevertFailed"),
}


def _event_reason(decision: Decision, applied: bool, mode: str) -> str:
    if mode == AutoscalingMode.RECOMMEND:
        return "Recommendation"
    if decision.action == "hold":
        return "Holding"
    done, failed = EVENT_REASONS.get(decision.action, ("Decision", "DecisionFailed"))
    return done if applied else failed


class ControlLoop:
    """Holds each deployment's policy state between steps (in memory: a restart starts afresh)."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        source_factory: Callable[[str], PrometheusMetricSource] | None = None,
        model_control: TritonModelControl | None = None,
        clock: Callable[[], float] = time.time,
        on_step: StepObserver | None = None,
        writer: Writer | None = None,
    ) -> None:
        self.kube = kube
        self.on_step = on_step
        self.settings = settings
        self.source_factory = source_factory or PrometheusMetricSource
        #: The process's one writer (the reconciler's): the loop itself only reads; status and
        #: Events go back through the runtime.
        self.writer = writer or Writer(kube, model_control)
        self.clock = clock
        self.states: dict[str, PolicyState] = {}
        self._sources: dict[str, PrometheusMetricSource] = {}

    def forget(self, uid: str) -> None:
        self.states.pop(uid, None)

    def step(self, body: Mapping[str, Any], deployment: DeploymentState | None = None) -> StepResult:
        """One interval: observe, decide, act (auto mode) and draft the status to record.

        ``deployment`` is the Triton Deployment as the operator's watch last saw it; None reads
        it from the API.
        """
        meta, status = body["metadata"], dict(body.get("status") or {})
        uid, name, namespace = meta["uid"], meta["name"], meta["namespace"]
        try:
            spec = PhoenixDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError:
            return StepResult()  # the reconciler reports invalid specs
        auto = spec.autoscaling
        if auto.mode == AutoscalingMode.OFF or auto.prometheus_url is None or not rendered(body):
            return StepResult()
        now = self.clock()
        target = Target(name=name, namespace=namespace, uid=uid)

        if deployment is None:
            deployment = DeploymentState.from_object(
                self.kube.get("apps/v1", "Deployment", triton_name(name), namespace)
            )
        source = self._sources.get(auto.prometheus_url)
        if source is None:
            source = self._sources[auto.prometheus_url] = self.source_factory(
                self.settings.resolve(auto.prometheus_url)
            )
        classes = {c.name: c.level for c in spec.priority.classes} if spec.priority else {}
        observation = source.observe(
            auto.metrics_selector or default_selector(name, namespace),
            spec.model.name,
            classes,
            window_s=max(2.0 * auto.interval_seconds, 30.0),
            now=now,
            stale_after_s=3.0 * auto.interval_seconds + 30.0,
            ready_replicas=deployment.ready if deployment.exists else None,
        )
        in_force = batching_in_force(spec, status)
        fleet = FleetState(
            desired_replicas=deployment.desired if deployment.exists else auto.min_replicas,
            ready_replicas=deployment.ready,
            batching=in_force,
        )
        params = PolicyParams.from_spec(spec)
        decision, new_state = decide(params, observation, fleet, self.states.get(uid, PolicyState()), now)
        retrieval = (
            check_retrieval(
                observation.retrieval_p95_s,
                params.ttft_target_s,
                params.retrieval_ttft_share,
                observation.stage_p95_s,
                observation.missing.get("retrieval_p95_s"),
            )
            if params.retrieval_ttft_share is not None
            else None
        )
        result = StepResult(decision=decision, observation=observation)
        draft: dict[str, Any] = {}
        notes: list[str] = []
        extra_conditions: list[dict[str, str]] = []

        if auto.mode == AutoscalingMode.AUTO and decision.changes_something:
            result.applied = True
            if decision.replicas is not None:
                draft["desiredReplicas"] = decision.replicas
                result.reconcile = True
            if decision.batching is not None:
                ok, note, condition = self._apply_batching(
                    target, spec, decision.batching, now, draft, qual.serving_version(status)
                )
                extra_conditions.append(condition)
                result.applied = result.applied and ok
                result.reconcile = result.reconcile or ok
                notes.append(note)
                if not ok:
                    # Not in force: forget the trial so the policy judges the config really served.
                    new_state = replace(new_state, trial=None, last_batching_at=None)
        self.states[uid] = new_state

        acted, applied = dict(draft), result.applied

        def record(current: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
            return self._record(
                applied,
                decision,
                observation,
                retrieval,
                current,
                auto.mode,
                now,
                dict(acted),
                notes,
                self.settings.max_decisions,
                params.ttft_target_s,
                extra_conditions,
                # Only a loop that may retune batching keeps saying whether the last retune took.
                drop_batching=not (auto.mode == AutoscalingMode.AUTO and auto.tune_batching),
            )

        result.status_patch, result.events = record(status)
        result.rebase = record
        if self.on_step is not None:
            self.on_step(name, namespace, observation, decision, result.applied, auto.mode)
        return result

    # ------------------------------------------------------------------ act

    def _apply_batching(
        self,
        target: Target,
        spec: PhoenixDeploymentSpec,
        batching: BatchingConfig,
        now: float,
        draft: dict[str, Any],
        serving_version: int | None = None,
    ) -> tuple[bool, str, dict[str, str]]:
        """Reload every endpoint at once (all or nothing); persist only what the whole fleet serves.

        The reload carries the promoted LLM version's pin: without it Triton would fall back to
        serving the newest version directory, which may be a candidate the gate rejected.
        """
        endpoints = ready_endpoints(
            self.kube, triton_name(target.name), target.namespace, self.settings.resolve
        )
        outcome = self.writer.load_model_config(
            LoadModelConfig(
                tuple(endpoints),
                spec.model.name,
                to_load_json(model_config_dict(spec, batching, serving_version)),
                triton_control_key(self.kube, target),
            )
        )
        if not outcome.applied:
            return False, outcome.describe(), outcome.condition()
        # Persisted in status: the reconciler renders the ConfigMap from it (batching_in_force), so
        # new pods start tuned and a restarted operator keeps it.
        draft["batching"] = {
            "preferredBatchSizes": list(batching.preferred_batch_sizes),
            "maxQueueDelayMicroseconds": batching.max_queue_delay_us,
            "instanceCount": batching.instance_count,
            "source": "tuned",
            "appliedAt": _rfc3339(now),
        }
        return True, outcome.describe(), outcome.condition()

    # ------------------------------------------------------------------ explain

    def _record(
        self,
        applied: bool,
        decision: Decision,
        observation: Observation,
        retrieval: RetrievalCheck | None,
        status: Mapping[str, Any],
        mode: str,
        now: float,
        draft: dict[str, Any],
        notes: list[str],
        settings_n: int,
        ttft_target_s: float,
        extra_conditions: list[dict[str, str]] | None = None,
        drop_batching: bool = False,
    ) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        """The status patch and Events that record this step against ``status`` (pure)."""
        events: list[tuple[str, str, str]] = []
        previous = list(status.get("decisions") or [])
        last = previous[-1] if previous else None
        fail_static = decision.action == "hold" and not observation.usable
        last_was_fail_static = (
            last is not None
            and last.get("action") == "hold"
            and not last.get("applied")
            and str(last.get("reason", "")).startswith("fail-static")
        )
        # A recommendation nobody acts on comes back every interval: it is recorded when it
        # first stands or changes, not re-recorded (and re-announced) while it stands.
        standing_proposal = (
            mode == AutoscalingMode.RECOMMEND
            and last is not None
            and last.get("mode") == str(mode)
            and last.get("action") == decision.action
            and last.get("summary") == decision.summary
        )
        # Changes (or new proposals) are always recorded; a hold only when fail-static begins, so
        # a steady deployment writes nothing interval after interval.
        if (decision.changes_something and not standing_proposal) or (
            fail_static and not last_was_fail_static
        ):
            entry = {
                "time": _rfc3339(now),
                "action": decision.action,
                "rule": decision.rule,
                "summary": decision.summary,
                "reason": decision.reason + (f" ({'; '.join(notes)})" if notes else ""),
                "applied": applied,
                "mode": str(mode),
                "metrics": {
                    k: (None if v is None else round(float(v), 4)) for k, v in decision.metrics.items()
                },
            }
            draft["decisions"] = [*previous, entry][-settings_n:]
            draft["lastDecisionTime"] = entry["time"]
            failed = decision.changes_something and mode == AutoscalingMode.AUTO and not applied
            event_type = "Warning" if failed or fail_static else "Normal"
            events.append(
                (
                    event_type,
                    _event_reason(decision, applied, mode),
                    f"{decision.summary}: {entry['reason']}",
                )
            )

        current = list(status.get("conditions") or [])
        wanted = self._conditions(observation, mode)
        if retrieval is not None:
            wanted.append(retrieval_condition(retrieval))
        wanted.extend(extra_conditions or [])
        # No gateway, no retrieval in the TTFT: the condition would only mislead.
        drop = (() if retrieval is not None else (RETRIEVAL_SLOW,)) + (
            (BATCHING_APPLIED,) if drop_batching else ()
        )
        merged = merge_conditions(current, wanted, _rfc3339(now), None, drop=drop)
        # A message that only quotes new figures (same status and reason) is not worth a write
        # of its own; it rides along with any other.
        sticky = merge_conditions(current, _keep_messages(current, wanted), _rfc3339(now), None, drop=drop)
        conditions_moved = [_cond_key(c) for c in sticky] != [_cond_key(c) for c in current]

        ttft = observation.ttft_p95_s
        old_ttft = status.get("ttftP95Seconds")
        if observation.idle:
            if old_ttft is not None:
                draft["ttftP95Seconds"] = None  # no requests, no TTFT: an old figure would mislead
        elif (
            ttft is not None
            and round(ttft, 3) != old_ttft
            and (draft or conditions_moved or ttft_worth_writing(ttft, old_ttft, ttft_target_s))
        ):
            draft["ttftP95Seconds"] = round(ttft, 3)
        moved = [_cond_key(c) for c in merged] != [_cond_key(c) for c in current]
        if moved and (draft or conditions_moved):
            draft["conditions"] = merged
        before = {c.get("type"): c.get("status") for c in current}
        for cond in changed_conditions(current, merged):
            if cond["type"] not in CONTROL_CONDITIONS:
                continue
            event = _condition_event(cond, before.get(cond["type"]))
            if event is not None:
                events.append(event)
        return draft, events

    @staticmethod
    def _conditions(observation: Observation, mode: str) -> list[dict[str, str]]:
        if observation.stale:
            metrics = {
                "type": "MetricsAvailable",
                "status": "False",
                "reason": "MetricsStale",
                "message": observation.stale_reason or "metrics are stale",
            }
        elif observation.idle:
            metrics = {
                "type": "MetricsAvailable",
                "status": "True",
                "reason": "Idle",
                "message": "fresh metrics, no requests in the window: zero load",
            }
        elif observation.ttft_p95_s is None:
            why = observation.missing.get("ttft_p95_s", "no TTFT series")
            metrics = {"type": "MetricsAvailable", "status": "False", "reason": "NoTTFT", "message": why}
        else:
            metrics = {
                "type": "MetricsAvailable",
                "status": "True",
                "reason": "MetricsFresh",
                "message": f"TTFT from the Triton {observation.ttft_source or 'metrics'}",
            }
        if not observation.usable:
            loop = {
                "type": "Autoscaling",
                "status": "False",
                "reason": "FailStatic",
                "message": "holding replicas and batching as they are until metrics recover",
            }
        else:
            active = "Recommend" if mode == AutoscalingMode.RECOMMEND else "Auto"
            loop = {
                "type": "Autoscaling",
                "status": "True",
                "reason": active,
                "message": "deciding from fresh metrics"
                + (" (proposals only)" if active == "Recommend" else ""),
            }
        return [metrics, loop]


def retrieval_condition(check: RetrievalCheck) -> dict[str, str]:
    """``RetrievalSlow``: True when retrieval's p95 is over its share of the TTFT target."""
    status = "Unknown" if check.slow is None else "True" if check.slow else "False"
    return {"type": RETRIEVAL_SLOW, "status": status, "reason": check.reason, "message": check.message}


def _condition_event(cond: Mapping[str, Any], previous: str | None) -> tuple[str, str, str] | None:
    """The Event for a changed control condition, or None when the change says nothing new.

    RetrievalSlow is a problem when True (the others when False), and Unknown (no traffic, no
    figure) is not worth an Event; its recovery is reported only after it was slow.
    """
    text = f"{cond['reason']}: {cond['message']}"
    name = f"{cond['type']}{cond['status']}"
    if cond["type"] == RETRIEVAL_SLOW:
        if cond["status"] == "True":
            return ("Warning", name, text)
        if cond["status"] == "False" and previous == "True":
            return ("Normal", name, text)
        return None
    return ("Warning" if cond["status"] == "False" else "Normal", name, text)


def _keep_messages(current: list[dict[str, Any]], wanted: list[dict[str, str]]) -> list[dict[str, str]]:
    """``wanted`` with the messages now in status wherever status and reason stay the same."""
    before = {c.get("type"): c for c in current}
    kept = []
    for cond in wanted:
        old = before.get(cond["type"])
        same = old is not None and (old.get("status"), old.get("reason")) == (cond["status"], cond["reason"])
        kept.append({**cond, "message": str(old.get("message", ""))} if same and old is not None else cond)
    return kept


def _cond_key(cond: Mapping[str, Any]) -> tuple[Any, ...]:
    return (cond.get("type"), cond.get("status"), cond.get("reason"), cond.get("message"))
