"""Children's observed state → PhoenixDeployment conditions (pure).

Conditions are derived from what the children really do (the Deployment's counters, pods the
scheduler refused, the Milvus collection), never from what the operator last asked for, so
`kubectl get phx` tells the truth even when the operator's own apply succeeded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.render.objects import EMBEDDER_DIMENSION, EMBEDDER_NAME

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "RetrievalReady", "GatewayReady", "EmbedderCompatible")


@dataclass(frozen=True)
class DeploymentState:
    """The Triton Deployment as the API server reports it."""

    exists: bool
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    observed_current: bool = True
    deadline_exceeded: bool = False

    @property
    def rolled_out(self) -> bool:
        """The current generation observed, every desired replica updated and ready."""
        return (
            self.exists
            and self.observed_current
            and self.updated >= self.desired
            and self.ready >= self.desired
        )

    @classmethod
    def from_object(cls, obj: Mapping[str, Any] | None) -> DeploymentState:
        if obj is None:
            return cls(exists=False)
        spec, status, meta = obj.get("spec", {}), obj.get("status") or {}, obj.get("metadata", {})
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        progressing = conditions.get("Progressing") or {}
        return cls(
            exists=True,
            desired=int(spec.get("replicas", 1)),
            replicas=int(status.get("replicas") or 0),
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            observed_current=int(status.get("observedGeneration") or 0) >= int(meta.get("generation") or 0),
            deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        )


@dataclass(frozen=True)
class Problem:
    """Something wrong the user must act on; ``reason`` is a CamelCase condition reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class RetrievalState:
    ready: bool
    reason: str
    message: str


@dataclass(frozen=True)
class EmbedderState:
    compatible: bool
    reason: str
    message: str


def embedder_state(spec: PhoenixDeploymentSpec) -> EmbedderState | None:
    """Whether the gateway's query vectors fit the collection; None when the gateway searches none.

    Reported, never blocking: the collection may be fixed (or a new one named) without touching
    Triton, and the rest of the stack keeps serving meanwhile.
    """
    if not spec.gateway.enabled or spec.retrieval is None:
        return None
    dimension = spec.retrieval.collection.dimension
    if dimension != EMBEDDER_DIMENSION:
        return EmbedderState(
            False,
            "DimensionMismatch",
            f"retrieval.collection.dimension is {dimension} but the gateway's embedder {EMBEDDER_NAME} "
            f"produces {EMBEDDER_DIMENSION}-dimensional vectors: every search would fail; use a "
            f"collection of dimension {EMBEDDER_DIMENSION}",
        )
    return EmbedderState(
        True,
        "DimensionMatches",
        f"collection dimension {dimension} matches the gateway's embedder {EMBEDDER_NAME}",
    )


@dataclass(frozen=True)
class Snapshot:
    """Everything the conditions depend on."""

    triton: DeploymentState
    #: Problems that stopped the operator from applying children (e.g. a missing Secret).
    blocking: Sequence[Problem] = ()
    #: Pods the scheduler could not place, as problems (InsufficientGPU, Unschedulable).
    unschedulable: Sequence[Problem] = ()
    retrieval: RetrievalState | None = None
    #: The gateway Deployment; None when the spec disables the gateway.
    gateway: DeploymentState | None = None
    #: Gateway pods the scheduler could not place.
    gateway_unschedulable: Sequence[Problem] = ()
    embedder: EmbedderState | None = None


def unschedulable_problems(pods: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Pods stuck Pending because the scheduler found no node; GPU shortage named as such."""
    problems = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Pending":
            continue
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                message = cond.get("message") or "no node fits the pod"
                reason = "InsufficientGPU" if "nvidia.com/gpu" in message else "Unschedulable"
                name = pod.get("metadata", {}).get("name", "?")
                problems.append(Problem(reason, f"pod {name} cannot be scheduled: {message}"))
    return problems


def _cond(type_: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {"type": type_, "status": "True" if ok else "False", "reason": reason, "message": message}


def gateway_condition(snap: Snapshot) -> dict[str, str] | None:
    """GatewayReady: every desired gateway replica available (old pods count during a roll-out)."""
    g = snap.gateway
    if g is None:
        return None
    if not g.exists:
        if snap.blocking:
            return _cond("GatewayReady", False, "Blocked", snap.blocking[0].message)
        return _cond("GatewayReady", False, "Creating", "creating the gateway Deployment")
    message = f"{g.available}/{g.desired} gateway replicas available"
    if g.available >= g.desired:
        return _cond("GatewayReady", True, "Available", message)
    why = snap.gateway_unschedulable[0] if snap.gateway_unschedulable else None
    if why is not None:
        return _cond("GatewayReady", False, why.reason, f"{message}; {why.message}")
    return _cond("GatewayReady", False, "WaitingForReplicas", message)


def desired_conditions(snap: Snapshot) -> list[dict[str, str]]:
    """Ready / Progressing / Degraded / RetrievalReady / GatewayReady / EmbedderCompatible (no timestamps)."""
    t = snap.triton
    problems = list(snap.blocking) + list(snap.unschedulable)
    if t.deadline_exceeded:
        problems.append(Problem("ProgressDeadlineExceeded", "the Triton Deployment stopped making progress"))
    retrieval = snap.retrieval
    if (
        retrieval is not None
        and not retrieval.ready
        and retrieval.reason not in {"Pending", "WaitingForMilvus"}
    ):
        problems.append(Problem(retrieval.reason, retrieval.message))
    problems += snap.gateway_unschedulable
    if snap.gateway is not None and snap.gateway.deadline_exceeded:
        problems.append(Problem("ProgressDeadlineExceeded", "the gateway Deployment stopped making progress"))
    if snap.embedder is not None and not snap.embedder.compatible:
        problems.append(Problem(snap.embedder.reason, snap.embedder.message))
    gateway = gateway_condition(snap)

    rolled_out = t.rolled_out
    if snap.blocking:
        ready = _cond("Ready", False, snap.blocking[0].reason, snap.blocking[0].message)
    elif not t.exists:
        ready = _cond("Ready", False, "Creating", "creating the Triton Deployment")
    elif not rolled_out:
        why = snap.unschedulable[0] if snap.unschedulable else None
        message = f"{t.ready}/{t.desired} Triton replicas ready"
        ready = _cond(
            "Ready",
            False,
            why.reason if why else "WaitingForReplicas",
            message + (f"; {why.message}" if why else ""),
        )
    elif retrieval is not None and not retrieval.ready:
        ready = _cond("Ready", False, "RetrievalNotReady", retrieval.message)
    elif gateway is not None and gateway["status"] != "True":
        ready = _cond("Ready", False, "GatewayNotReady", gateway["message"])
    else:
        ready = _cond(
            "Ready",
            True,
            "AllReady",
            f"{t.ready}/{t.desired} Triton replicas ready"
            + ("; retrieval ready" if retrieval else "")
            + (f"; {gateway['message']}" if gateway else ""),
        )

    if not t.exists or rolled_out:
        progressing = _cond("Progressing", False, "Stable", "no roll-out or scaling in progress")
    elif t.updated < t.desired:
        progressing = _cond("Progressing", True, "RollingOut", f"{t.updated}/{t.desired} replicas updated")
    else:
        progressing = _cond("Progressing", True, "Scaling", f"{t.ready}/{t.desired} replicas ready")

    if problems:
        degraded = _cond("Degraded", True, problems[0].reason, "; ".join(p.message for p in problems[:3]))
    else:
        degraded = _cond("Degraded", False, "AsExpected", "no problem found")

    out = [ready, progressing, degraded]
    if retrieval is not None:
        out.append(_cond("RetrievalReady", retrieval.ready, retrieval.reason, retrieval.message))
    if gateway is not None:
        out.append(gateway)
    if snap.embedder is not None:
        e = snap.embedder
        out.append(_cond("EmbedderCompatible", e.compatible, e.reason, e.message))
    return out


def merge_conditions(
    current: Sequence[Mapping[str, Any]],
    updates: Sequence[Mapping[str, str]],
    now: str,
    generation: int | None,
    drop: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Apply ``updates`` to ``current``; lastTransitionTime only moves when status changes.

    Conditions not mentioned are kept as they are (the control loop owns its own types), except
    those listed in ``drop`` (e.g. RetrievalReady once retrieval is removed from the spec).
    """
    by_type: dict[str, dict[str, Any]] = {
        c["type"]: dict(c) for c in current if c.get("type") not in set(drop)
    }
    for update in updates:
        old = by_type.get(update["type"])
        merged: dict[str, Any] = dict(update)
        merged["lastTransitionTime"] = (
            old["lastTransitionTime"]
            if old and old.get("status") == update["status"] and old.get("lastTransitionTime")
            else now
        )
        if generation is not None:
            merged["observedGeneration"] = generation
        by_type[update["type"]] = merged
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(by_type.values(), key=lambda c: (order.get(c["type"], len(order)), c["type"]))


#: A condition that first appears in one of these states says that nothing happened: no Event.
QUIET_FIRST_STATES = {("Degraded", "False"), ("Progressing", "False")}


def changed_conditions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Conditions whose status or reason changed: each deserves one Event, not one per resync.

    Not a condition that first appears in a quiet state (`QUIET_FIRST_STATES`): at a thousand
    deployments starting, those were one in five of the operator's Events.
    """
    before = {c["type"]: (c.get("status"), c.get("reason")) for c in old}
    return [
        dict(c)
        for c in new
        if before.get(c["type"]) != (c.get("status"), c.get("reason"))
        and not (c["type"] not in before and (c["type"], c.get("status")) in QUIET_FIRST_STATES)
    ]


@dataclass
class StatusDraft:
    """Accumulates the status fields one reconcile wants to write."""

    fields: dict[str, Any] = field(default_factory=dict)

    def diff(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """Only the top-level fields whose value differs from the live status."""
        return {k: v for k, v in self.fields.items() if current.get(k) != v}
