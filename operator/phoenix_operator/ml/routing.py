"""Which priority class a request joins: the client's header if allowed, else intent routes.

Pure: a function of the spec and the classifier's prediction, no I/O. Routes are checked most
urgent first (lowest Triton level). A route fires when the top intent is one of its intents,
or when its intents' probabilities sum to at least ``minConfidence`` even though another intent
ranks first: a missed urgent request (a stolen card queued behind routine questions) costs
more than a routine one served early, so ties and doubt resolve toward the more urgent class.
"""

from __future__ import annotations

from dataclasses import dataclass

from phoenix_operator.api.models import PRIORITY_HEADER, IntentRoute, PhoenixDeploymentSpec
from phoenix_operator.ml.classifier import Prediction

#: Class of every request when the spec defines no priority classes (Triton's single FIFO level).
NO_PRIORITY_CLASS = "default"
NO_PRIORITY_LEVEL = 0


class UnknownPriorityClass(ValueError):
    """The client asked for a class that does not exist or that it may not choose."""


@dataclass(frozen=True)
class ClassChoice:
    priority_class: str
    level: int
    reason: str


def _requested_class(spec: PhoenixDeploymentSpec, requested: str) -> ClassChoice:
    if not spec.gateway.allow_client_priority:
        raise UnknownPriorityClass(
            f"the {PRIORITY_HEADER} header is not accepted by this deployment "
            "(spec.gateway.allowClientPriority is false); the gateway chooses the class"
        )
    if spec.priority is None:
        if requested == NO_PRIORITY_CLASS:
            return ClassChoice(NO_PRIORITY_CLASS, NO_PRIORITY_LEVEL, "client header")
        raise UnknownPriorityClass(
            f"unknown priority class {requested!r}: this deployment has one class, {NO_PRIORITY_CLASS!r}"
        )
    for cls in spec.priority.classes:
        if cls.name == requested:
            return ClassChoice(cls.name, cls.level, "client header")
    names = ", ".join(repr(c.name) for c in sorted(spec.priority.classes, key=lambda c: c.level))
    raise UnknownPriorityClass(f"unknown priority class {requested!r}; this deployment has {names}")


def _route_reason(route: IntentRoute, prediction: Prediction) -> str | None:
    """Why ``route`` fires for ``prediction``, or None when it does not."""
    if prediction.intent in route.intents:
        return f"intent {prediction.intent} ({prediction.confidence:.2f})"
    total = sum(prediction.probabilities.get(intent, 0.0) for intent in set(route.intents))
    if total >= route.min_confidence:
        return f"{route.priority_class} intents sum {total:.2f} ≥ {route.min_confidence:g}"
    return None


def choose_class(
    spec: PhoenixDeploymentSpec, prediction: Prediction | None, requested: str | None = None
) -> ClassChoice:
    """The priority class of one request; raises :class:`UnknownPriorityClass` for a bad header."""
    if requested is not None:
        return _requested_class(spec, requested)
    if spec.priority is None:
        return ClassChoice(NO_PRIORITY_CLASS, NO_PRIORITY_LEVEL, "no priority classes")
    levels = {c.name: c.level for c in spec.priority.classes}
    default = ClassChoice(spec.priority.default_class, levels[spec.priority.default_class], "default class")
    if prediction is None:
        return ClassChoice(default.priority_class, default.level, "default class (no prediction)")
    # Stable sort: routes of the same class keep the order the spec lists them in.
    routes = sorted(
        (r for r in spec.gateway.routes if r.priority_class in levels), key=lambda r: levels[r.priority_class]
    )
    for route in routes:
        reason = _route_reason(route, prediction)
        if reason is not None:
            return ClassChoice(route.priority_class, levels[route.priority_class], reason)
    return default
