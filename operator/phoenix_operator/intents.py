"""What a pass wants changed, as data: planners return these, one writer performs them.

Planning stays pure and testable without a cluster, and everything the operator may change (in
the Kubernetes API, and the model config Triton serves) is listed here; `clients/writer.py` is
the only module that performs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

Manifest = dict[str, Any]


class Unread(Enum):
    """The pass did not read this object: the writer reads it before deciding to write."""

    UNREAD = "unread"


UNREAD: Final = Unread.UNREAD


def describe(manifest: Mapping[str, Any]) -> str:
    """``Kind/name``: how writes and refusals name an object in status, Events and logs."""
    return f"{manifest['kind']}/{manifest['metadata']['name']}"


@dataclass(frozen=True)
class ApplyChild:
    """Server-side apply a rendered child, unless the live object already matches it."""

    manifest: Manifest
    #: The live object as the pass listed it (None: there is none), so the writer need not read it.
    live: Manifest | Unread | None = field(default=UNREAD, repr=False, compare=False)


@dataclass(frozen=True)
class CreateSecret:
    """Create a generated Secret unless one of that name exists; never update it."""

    manifest: Manifest


@dataclass(frozen=True)
class SetReplicas:
    """Set a Deployment's replicas under the autoscaler's own field manager."""

    name: str
    namespace: str
    replicas: int
    #: The live Deployment as the pass listed it, as for `ApplyChild`.
    live: Manifest | Unread | None = field(default=UNREAD, repr=False, compare=False)


@dataclass(frozen=True)
class DeleteChild:
    """Delete a child of ours the spec no longer asks for (dependents in the background)."""

    api_version: str
    kind: str
    name: str
    namespace: str


@dataclass(frozen=True)
class WriteStatus:
    """Merge-patch a PhoenixDeployment's status; ``current`` is the status the patch applies to."""

    name: str
    namespace: str
    current: Mapping[str, Any]
    patch: Mapping[str, Any]


@dataclass(frozen=True)
class PostEvent:
    """One core/v1 Event about ``involved``: a note, dropped where the API refuses it."""

    involved: Manifest
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class LoadModelConfig:
    """Load a full model config on every ready Triton endpoint at once, all or none.

    Batching retunes and promoted LLM versions reach running pods this way; the ConfigMap new
    pods start from follows through status. ``control_key`` is Triton's model-control key.
    """

    endpoints: tuple[str, ...]
    model: str
    config_json: str
    control_key: str | None = field(default=None, repr=False)


Intent = ApplyChild | CreateSecret | SetReplicas | DeleteChild | WriteStatus | PostEvent | LoadModelConfig

__all__ = [
    "UNREAD",
    "ApplyChild",
    "CreateSecret",
    "DeleteChild",
    "Intent",
    "LoadModelConfig",
    "Manifest",
    "PostEvent",
    "SetReplicas",
    "Unread",
    "WriteStatus",
    "describe",
]
