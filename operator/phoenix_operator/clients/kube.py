"""Thin Kubernetes helpers: server-side apply that skips no-op writes, capability discovery.

A converged operator must make no write requests (each one costs the API server and shows up
as noise in audit logs and GitOps tools), so ``apply`` first compares the desired object with
the live one and only sends the apply when something the operator owns differs.
"""

from __future__ import annotations

import base64
import builtins
import datetime
import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError
from kubernetes.utils import parse_quantity

from phoenix_operator import API_GROUP, API_VERSION, FIELD_MANAGER, PLURAL
from phoenix_operator.intents import UNREAD, Unread
from phoenix_operator.render.objects import Capabilities

Manifest = dict[str, Any]

#: Hash of the last object this operator applied; a changed desired object (a field removed,
#: too) shows up as a different hash even when the live object still contains it.
APPLIED_HASH_ANNOTATION = f"{API_GROUP}/applied-hash"
#: Field manager for the autoscaler's replica writes: separate from the reconciler's so that a
#: reconcile apply (which omits replicas in auto mode) never takes replicas away from it.
AUTOSCALER_FIELD_MANAGER = "phoenix-autoscaler"
#: The Events' source and reporting component.
EVENT_COMPONENT = "phoenix-operator"

log = logging.getLogger(__name__)


def desired_hash(obj: Manifest) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def is_subset(desired: Any, live: Any) -> bool:
    """Whether every field in ``desired`` has the same value in ``live``.

    Lists must match element-wise and in length (the API server does not add list elements to
    the objects we render, but it does add defaulted fields inside them, hence the recursion).
    """
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(key in live and is_subset(value, live[key]) for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(is_subset(d, v) for d, v in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    if desired == live:
        return True
    # The API server canonicalises quantities ("1.5" CPU comes back as "1500m").
    return isinstance(desired, str) and isinstance(live, str) and _same_quantity(desired, live)


def _same_quantity(a: str, b: str) -> bool:
    try:
        return bool(parse_quantity(a) == parse_quantity(b))
    except ValueError:
        return False


def with_applied_hash(obj: Manifest) -> Manifest:
    stamped = json.loads(json.dumps(obj))
    stamped["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = desired_hash(obj)
    return stamped


def needs_apply(desired: Manifest, live: Manifest | None) -> bool:
    if live is None:
        return True
    annotations = live.get("metadata", {}).get("annotations") or {}
    if annotations.get(APPLIED_HASH_ANNOTATION) != desired_hash(desired):
        return True
    return not is_subset(with_applied_hash(desired), live)


class Kube:
    """The operator's API access, created once per process."""

    def __init__(self, api_client: k8s.ApiClient | None = None) -> None:
        self.api_client = api_client or k8s.ApiClient()
        self.dynamic = DynamicClient(self.api_client)
        self.core = k8s.CoreV1Api(self.api_client)
        self.apps = k8s.AppsV1Api(self.api_client)
        self.custom = k8s.CustomObjectsApi(self.api_client)
        self._discovery_lock = threading.Lock()
        self._caps: tuple[float, Capabilities] | None = None
        self._caps_lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        # The dynamic client's discovery cache is not thread-safe: two Kopf workers refreshing it
        # at once (a kind that just appeared) corrupt it (KeyError: 'resources'). Lookups are
        # in-memory once discovered, so one lock costs nothing.
        with self._discovery_lock:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> Manifest | None:
        try:
            response = self.resource(api_version, kind).get(name=name, namespace=namespace, serialize=False)
        except NotFoundError:
            return None
        return _json(response)

    def get_unless_read(
        self, seen: Manifest | Unread | None, api_version: str, kind: str, name: str, namespace: str
    ) -> Manifest | None:
        """``seen`` when the caller has read the object already (None: it is absent), else read it now."""
        return self.get(api_version, kind, name, namespace) if seen is UNREAD else seen

    def list(self, api_version: str, kind: str, namespace: str, label_selector: str) -> list[Manifest]:
        """The matching objects, each with its ``apiVersion`` and ``kind`` (a list's items lack them)."""
        response = self.resource(api_version, kind).get(
            namespace=namespace, label_selector=label_selector, serialize=False
        )
        items: list[Manifest] = _json(response)["items"]
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def list_if_served(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> builtins.list[Manifest]:
        """As `list`, but a kind that is not served (or whose CRD went away since discovery) has none."""
        try:
            return self.list(api_version, kind, namespace, label_selector)
        except (ResourceNotFoundError, NotFoundError):
            return []

    def apply(
        self, obj: Manifest, field_manager: str = FIELD_MANAGER, live: Manifest | Unread | None = UNREAD
    ) -> bool:
        """Server-side apply ``obj`` unless the live object (read now if not given) already matches.

        Returns True if written.
        """
        meta = obj["metadata"]
        live = self.get_unless_read(live, obj["apiVersion"], obj["kind"], meta["name"], meta["namespace"])
        if not needs_apply(obj, live):
            return False
        self.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=with_applied_hash(obj),
            name=meta["name"],
            namespace=meta["namespace"],
            field_manager=field_manager,
            force_conflicts=True,
        )
        return True

    def create_if_absent(self, obj: Manifest) -> bool:
        """Create ``obj`` unless an object of that name exists (never updates it). True if created.

        For what must be written once and then left alone (generated Secrets): a plain create,
        so a concurrent creator wins cleanly (409) instead of one overwriting the other.
        """
        meta = obj["metadata"]
        try:
            self.resource(obj["apiVersion"], obj["kind"]).create(body=obj, namespace=meta["namespace"])
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def apply_replicas(
        self, name: str, namespace: str, replicas: int, live: Manifest | Unread | None = UNREAD
    ) -> bool:
        """Set a Deployment's replicas under the autoscaler's own field manager (no-op if equal)."""
        live = self.get_unless_read(live, "apps/v1", "Deployment", name, namespace)
        if live is not None and live.get("spec", {}).get("replicas") == replicas and _owns_replicas(live):
            return False
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas},
        }
        self.resource("apps/v1", "Deployment").server_side_apply(
            body=body,
            name=name,
            namespace=namespace,
            field_manager=AUTOSCALER_FIELD_MANAGER,
            force_conflicts=True,
        )
        return True

    def patch_status(self, name: str, namespace: str, status: Manifest) -> None:
        """Merge-patch a PhoenixDeployment's status subresource (only the fields given)."""
        self.custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}
        )

    def post_event(self, involved: Manifest, type_: str, reason: str, message: str) -> bool:
        """Create one core/v1 Event about ``involved``, once; True when it was created.

        An Event is a note, not state: a namespace being deleted (403), an object already gone
        (404) or an API server that does not answer drops it with a log line. Kopf's poster
        retries each refused Event for about a minute in one queue, so a single terminating
        namespace would hold back every other deployment's Events.
        """
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": type_,
            "reason": reason[:128],
            "message": message[:1024],
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": EVENT_COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.resource("v1", "Event").create(body=body, namespace=meta["namespace"])
        except ApiException as exc:
            log.info(
                f"Event {reason} on {meta['namespace']}/{meta['name']} dropped: {exc.status} {exc.reason}"
            )
            return False
        except Exception as exc:  # a note must never fail the pass that wrote status
            log.warning(f"Event {reason} on {meta['namespace']}/{meta['name']} dropped: {exc}")
            return False
        return True

    def capabilities(self, ttl_s: float = 60.0) -> Capabilities:
        """Which optional APIs exist (Milvus Operator, Prometheus Operator); cached for ``ttl_s``."""
        with self._caps_lock:
            now = time.monotonic()
            if self._caps is not None and now - self._caps[0] < ttl_s:
                return self._caps[1]
            caps = Capabilities(
                milvus_operator=self._has_kind("milvus.io/v1beta1", "Milvus"),
                prometheus_operator=self._has_kind("monitoring.coreos.com/v1", "PrometheusRule"),
            )
            self._caps = (now, caps)
            return caps

    def _has_kind(self, api_version: str, kind: str) -> bool:
        group, _, version = api_version.rpartition("/")
        try:
            resources = k8s.CustomObjectsApi(self.api_client).get_api_resources(group, version)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return any(r.kind == kind for r in resources.resources)

    def secret_data(self, name: str, namespace: str) -> dict[str, str] | None:
        """A Secret's decoded data by name (``get`` only: the operator never lists or watches Secrets)."""
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def _json(response: Any) -> Manifest:
    """The body of a raw response as plain JSON.

    The dynamic client's own wrapping (``ResourceInstance``, then ``to_dict``) costs about eight
    times the parse itself, and a pass reads every child. Reading the whole body is also what
    hands the connection back to the pool: a raw response left unread holds it.
    """
    body: Manifest = json.loads(response.data)
    return body


def _owns_replicas(live: Manifest) -> bool:
    for entry in live.get("metadata", {}).get("managedFields") or []:
        if entry.get("manager") == AUTOSCALER_FIELD_MANAGER and "f:replicas" in json.dumps(
            entry.get("fieldsV1", {})
        ):
            return True
    return False


__all__ = [
    "APPLIED_HASH_ANNOTATION",
    "AUTOSCALER_FIELD_MANAGER",
    "Kube",
    "ResourceNotFoundError",
    "is_subset",
    "needs_apply",
]
