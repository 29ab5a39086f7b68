"""The reconciler's children as intents: pure functions from what is rendered and read to what to write.

The reconciler reads (live Secrets by name, its owned children one list per kind), these
functions decide, and the one writer performs the result in order: generated Secrets first
(children mount them), then the children, then the autoscaler's replica count, then pruning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from phoenix_operator.api.models import AutoscalingMode, PhoenixDeploymentSpec
from phoenix_operator.intents import (
    UNREAD,
    ApplyChild,
    CreateSecret,
    DeleteChild,
    Intent,
    Manifest,
    SetReplicas,
    Unread,
)
from phoenix_operator.render.objects import GeneratedSecret, Target, generated_secret_manifest, triton_name
from phoenix_operator.status.conditions import Problem


@dataclass(frozen=True)
class OwnedChild:
    """A live object carrying the deployment's label, as read for pruning."""

    api_version: str
    kind: str
    name: str
    owner_uids: tuple[str, ...]


def owned_child(api_version: str, kind: str, live: Mapping[str, Any]) -> OwnedChild:
    meta = live.get("metadata") or {}
    owners = tuple(str(o.get("uid")) for o in meta.get("ownerReferences") or [])
    return OwnedChild(api_version, kind, str(meta.get("name")), owners)


@dataclass
class LiveChildren:
    """One pass's view of its owned children: every object of each listed kind, by name.

    One list per kind stands in for a read of each child: the writer compares against these,
    and status reads them, instead of asking the API server once per child. A kind that was not
    listed (not served, or its list failed) and a child this pass changed read as `UNREAD`.
    """

    #: api_version of every kind that was listed (the prunable kinds this pass can see).
    listed: dict[str, str] = field(default_factory=dict)
    objects: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    changed: set[tuple[str, str]] = field(default_factory=set)

    def add_listing(self, api_version: str, kind: str, items: Iterable[Manifest]) -> None:
        self.listed[kind] = api_version
        for item in items:
            self.objects[(kind, str(item["metadata"]["name"]))] = item

    def get(self, kind: str, name: str) -> Manifest | Unread | None:
        if kind not in self.listed or (kind, name) in self.changed:
            return UNREAD
        return self.objects.get((kind, name))

    def mark_changed(self, changed: Iterable[tuple[str, str]]) -> None:
        self.changed.update(changed)

    def owned(self) -> list[OwnedChild]:
        """What the listings found, for pruning."""
        return [owned_child(self.listed[kind], kind, obj) for (kind, _), obj in self.objects.items()]


def generated_secret_intents(
    target: Target,
    wanted: Iterable[GeneratedSecret],
    live: Mapping[str, Mapping[str, str] | None],
    new_value: Callable[[], str],
) -> tuple[list[Intent], list[Problem]]:
    """Create each wanted Secret that does not exist; report one that exists without its values.

    ``live`` maps each wanted Secret's name to its decoded data (None: absent). A Secret that
    exists is never rewritten: Milvus keeps the root password it first started with.
    """
    intents: list[Intent] = []
    problems: list[Problem] = []
    for secret in wanted:
        data = live.get(secret.name)
        if data is None:
            values = {key: new_value() for key in secret.random_keys}
            intents.append(CreateSecret(generated_secret_manifest(target, secret, values)))
            continue
        missing = [k for k in (*secret.fixed, *secret.random_keys) if not str(data.get(k, "")).strip()]
        if missing:
            problems.append(
                Problem(
                    "GeneratedSecretInvalid",
                    f"Secret {target.namespace}/{secret.name} has no value for {', '.join(missing)}; "
                    "delete it and the operator generates a new one (for Milvus' root password, "
                    "also set root's password in Milvus to the new value)",
                )
            )
    return intents, problems


def replicas_intent(
    target: Target,
    spec: PhoenixDeploymentSpec,
    status: Mapping[str, Any],
    live: LiveChildren | None = None,
) -> SetReplicas | None:
    """In auto mode the autoscaler owns Triton's replicas: the control loop's last decision
    (``status.desiredReplicas``), else the spec's count clamped to the bounds."""
    if spec.autoscaling.mode != AutoscalingMode.AUTO:
        return None
    auto = spec.autoscaling
    initial = status.get("desiredReplicas") or min(
        max(spec.triton.replicas, auto.min_replicas), auto.max_replicas
    )
    name = triton_name(target.name)
    seen = live.get("Deployment", name) if live is not None else UNREAD
    return SetReplicas(name, target.namespace, int(initial), seen)


def prune_intents(target: Target, desired: Iterable[Manifest], live: Iterable[OwnedChild]) -> list[Intent]:
    """Delete what carries our label and our ownerReference but is no longer rendered.

    An object with the label that another owner holds is left alone: the label alone is not
    proof that we created it.
    """
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    return [
        DeleteChild(child.api_version, child.kind, child.name, target.namespace)
        for child in live
        if (child.kind, child.name) not in wanted and target.uid in child.owner_uids
    ]


def apply_intents(
    target: Target,
    spec: PhoenixDeploymentSpec,
    status: Mapping[str, Any],
    desired: list[Manifest],
    secrets: list[Intent],
    live: LiveChildren | None = None,
) -> list[Intent]:
    """The writes of one pass before pruning, in the order the writer performs them."""
    replicas = replicas_intent(target, spec, status, live)

    def seen(obj: Manifest) -> Manifest | Unread | None:
        return live.get(obj["kind"], obj["metadata"]["name"]) if live is not None else UNREAD

    return [
        *secrets,
        *(ApplyChild(obj, seen(obj)) for obj in desired),
        *([replicas] if replicas is not None else []),
    ]


__all__ = [
    "LiveChildren",
    "OwnedChild",
    "apply_intents",
    "generated_secret_intents",
    "owned_child",
    "prune_intents",
    "replicas_intent",
]
