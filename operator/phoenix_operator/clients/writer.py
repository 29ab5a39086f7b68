"""The one writer: the only code that changes the Kubernetes API, or what Triton serves, for the operator.

Reconciler and control loop plan (`phoenix_operator.intents`); this performs. Keeping every
write here makes what the operator changes, how a refusal is reported and how status is
checked before it is sent one decision each, not one per call site.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import NotFoundError

from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.triton import BatchingApplyResult, TritonModelControl
from phoenix_operator.intents import (
    UNREAD,
    ApplyChild,
    CreateSecret,
    DeleteChild,
    Intent,
    LoadModelConfig,
    Manifest,
    PostEvent,
    SetReplicas,
    WriteStatus,
    describe,
)
from phoenix_operator.status.conditions import Problem
from phoenix_operator.status.patch import checked_status_patch

log = logging.getLogger(__name__)

#: Refusals that say the object itself cannot be written (invalid, forbidden, a terminating
#: namespace): reported and the rest still applied. Anything else (conflict, timeout, 5xx) is
#: transient and raised, so Kopf retries the whole pass.
REFUSED_STATUSES = (400, 403, 422)


@dataclass
class Performed:
    """What a batch of intents changed, and which children the API server refused."""

    #: ``Kind/name`` of each child written, ``deleted Kind/name`` of each pruned, in order.
    writes: list[str] = field(default_factory=list)
    rejected: list[Problem] = field(default_factory=list)
    status_written: bool = False
    #: Each model-config load's outcome, per endpoint (what status says about a retune).
    loads: list[BatchingApplyResult] = field(default_factory=list)
    #: (kind, name) of each child written or deleted: what a pass's earlier reads no longer show.
    changed: list[tuple[str, str]] = field(default_factory=list)


class Writer:
    """Performs intents through the process's one `Kube` and its Triton model control."""

    def __init__(self, kube: Kube, model_control: TritonModelControl | None = None) -> None:
        self.kube = kube
        self.model_control = model_control or TritonModelControl()

    def load_model_config(self, intent: LoadModelConfig) -> BatchingApplyResult:
        """Perform one load and return its outcome (callers turn it into status)."""
        return self.perform([intent]).loads[0]

    def perform(self, intents: Iterable[Intent]) -> Performed:
        """Perform ``intents`` in order; raises on the first transient API error."""
        done = Performed()
        for intent in intents:
            match intent:
                case ApplyChild(manifest, live):
                    self._refusable(done, manifest, functools.partial(self.kube.apply, manifest, live=live))
                case CreateSecret(manifest):
                    self._refusable(done, manifest, functools.partial(self.kube.create_if_absent, manifest))
                case SetReplicas(name, namespace, replicas, live):
                    # Applied earlier in this batch: what the pass listed is no longer what is live.
                    fresh = UNREAD if ("Deployment", name) in done.changed else live
                    if self.kube.apply_replicas(name, namespace, replicas, live=fresh):
                        done.writes.append(f"Deployment/{name} replicas={replicas}")
                        done.changed.append(("Deployment", name))
                case DeleteChild(api_version, kind, name, namespace):
                    if self._delete(api_version, kind, name, namespace):
                        done.writes.append(f"deleted {kind}/{name}")
                        done.changed.append((kind, name))
                case WriteStatus(name, namespace, current, patch):
                    self.kube.patch_status(name, namespace, checked_status_patch(current, patch))
                    done.status_written = True
                case PostEvent(involved, type_, reason, message):
                    self.kube.post_event(involved, type_, reason, message)
                case LoadModelConfig() as load:
                    result = self.model_control.load(load)
                    done.loads.append(result)
                    if result.applied:
                        done.writes.append(f"{load.model} config loaded on {len(load.endpoints)} endpoint(s)")
        return done

    def _refusable(self, done: Performed, manifest: Manifest, write: Callable[[], bool]) -> None:
        what = describe(manifest)
        try:
            if write():
                done.writes.append(what)
                done.changed.append((manifest["kind"], manifest["metadata"]["name"]))
        except ApiException as exc:
            if exc.status not in REFUSED_STATUSES:
                raise
            done.rejected.append(Problem("ChildRejected", f"{what} rejected: {api_message(exc)}"))

    def _delete(self, api_version: str, kind: str, name: str, namespace: str) -> bool:
        try:
            self.kube.resource(api_version, kind).delete(
                name=name, namespace=namespace, body={"propagationPolicy": "Background"}
            )
        except NotFoundError:
            return False  # already gone: what pruning wanted
        return True


def api_message(exc: ApiException) -> str:
    """The API server's own message for a refusal (its Status object), else the HTTP reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


__all__ = ["REFUSED_STATUSES", "Performed", "Writer", "api_message"]
