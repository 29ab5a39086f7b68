"""One reconcile pass of a PhoenixDeployment: check, apply what differs, observe, report.

Independent of Kopf (the handlers in `handlers.py` only adapt arguments), so the same pass
runs from create/update/resume handlers and from the periodic drift check, and tests can call it
directly against a real API server.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from phoenix_operator.api.models import (
    AutoscalingMode,
    GatewayStatus,
    PhoenixDeploymentSpec,
    QualityStatus,
    RetrievalStatus,
)
from phoenix_operator.clients.kube import Kube, Manifest
from phoenix_operator.clients.triton import TritonModelControl, triton_control_key
from phoenix_operator.clients.writer import Writer
from phoenix_operator.intents import UNREAD
from phoenix_operator.reconcile import plan, promotion
from phoenix_operator.render.objects import (
    COMPONENT_LABEL,
    DEPLOYMENT_LABEL,
    EMBEDDER_DIMENSION,
    EMBEDDER_NAME,
    EVALUATION_JOB,
    FINE_TUNE_JOB,
    REFRESH_JOB,
    RETRAIN_JOB,
    Target,
    gateway_endpoint,
    gateway_name,
    generated_secrets,
    milvus_name,
    render_all,
    retrieval_endpoint,
    selector_string,
    triton_name,
)
from phoenix_operator.render.secrets import (
    TokenSecretError,
    milvus_root_secret_name,
    milvus_token,
    resolve_token,
)
from phoenix_operator.render.tritonconfig import BatchingConfig, batching_in_force
from phoenix_operator.settings import OperatorSettings
from phoenix_operator.status import quality as qual
from phoenix_operator.status.conditions import (
    DeploymentState,
    Problem,
    RetrievalState,
    Snapshot,
    StatusDraft,
    changed_conditions,
    desired_conditions,
    embedder_state,
    merge_conditions,
    unschedulable_problems,
)

log = logging.getLogger(__name__)

#: Bytes of randomness in each generated key or password (256 bits, URL-safe base64 text).
GENERATED_SECRET_BYTES = 32

#: Kinds the operator creates, for pruning children that the spec no longer asks for.
PRUNABLE_KINDS = (
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("policy/v1", "PodDisruptionBudget"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)
OPTIONAL_PRUNABLE_KINDS = (
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("milvus.io/v1beta1", "Milvus"),
)


@dataclass
class Outcome:
    """What a pass wants written to status and posted as Events."""

    status_patch: dict[str, Any] = field(default_factory=dict)
    #: (type, reason, message) — type is "Normal" or "Warning".
    events: list[tuple[str, str, str]] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    #: Set when the pass could not complete and should be retried soon (e.g. a missing Secret).
    retry_reason: str | None = None
    invalid: bool = False
    #: status.quality after this pass (the operator's phoenix_eval_* metrics are set from it).
    quality: QualityStatus | None = None


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def batching_status(
    batching: BatchingConfig, spec: PhoenixDeploymentSpec, previous: Mapping[str, Any]
) -> dict[str, Any]:
    source = "spec" if batching == BatchingConfig.from_spec(spec) else "tuned"
    out: dict[str, Any] = {
        "preferredBatchSizes": list(batching.preferred_batch_sizes),
        "maxQueueDelayMicroseconds": batching.max_queue_delay_us,
        "instanceCount": batching.instance_count,
        "source": source,
    }
    if previous.get("appliedAt"):
        out["appliedAt"] = previous["appliedAt"]
    return out


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        model_control: TritonModelControl | None = None,
        writer: Writer | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        #: The one writer; the reconciler itself only reads.
        self.writer = writer or Writer(kube, model_control)

    # ---------------------------------------------------------------- entry point

    def reconcile(self, body: Mapping[str, Any]) -> Outcome:
        meta, status = body["metadata"], dict(body.get("status") or {})
        target = Target(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid"),
            generation=meta.get("generation"),
        )
        outcome = Outcome()
        try:
            spec = PhoenixDeploymentSpec.model_validate(body.get("spec") or {})
        except ValidationError as exc:
            # The API server validates first; this only happens for objects stored under an older
            # CRD. Report it and leave the running children alone.
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            self._finish(
                outcome,
                target,
                status,
                [Problem("InvalidSpec", f"spec is invalid: {fields}")],
                None,
                None,
                None,
                [],
            )
            outcome.invalid = True
            return outcome

        blocking = self._preflight(target, spec)
        batching = batching_in_force(spec, status)
        rejected: list[Problem] = []
        # Reports first: a retraining candidate that passes the gate is rolled out in this pass.
        quality = self._observe_quality(target, spec, status)
        if not blocking:
            quality = self._roll_out_model(target, spec, batching, quality)
        outcome.quality = quality.quality
        promoted = quality.quality.classifier if quality.quality else None
        version = quality.quality.model.serving_version if quality.quality and quality.quality.model else None
        live: plan.LiveChildren | None = None
        if not blocking:
            live = plan.LiveChildren()
            outcome.writes = self._apply_children(
                target, spec, batching, status, rejected, live, promoted, version
            )
            if outcome.writes:
                outcome.events.append(("Normal", "Applied", "applied " + ", ".join(outcome.writes)))
        else:
            outcome.retry_reason = blocking[0].message
        retrieval, retrieval_status, actions = self._observe_retrieval(target, spec, blocked=bool(blocking))
        for action in actions:
            outcome.events.append(("Normal", "Retrieval", action))
        self._finish(
            outcome,
            target,
            status,
            blocking,
            spec,
            batching,
            (retrieval, retrieval_status),
            rejected,
            quality,
            live,
        )
        return outcome

    def _observe_quality(
        self, target: Target, spec: PhoenixDeploymentSpec, status: Mapping[str, Any]
    ) -> qual.QualityOutcome:
        """Read the reports of the deployment's finished quality jobs from their pods."""
        try:
            previous = QualityStatus.model_validate(status["quality"]) if status.get("quality") else None
        except ValidationError:
            previous = None
        refresh = spec.retrieval.refresh if spec.retrieval else None
        retraining = spec.maintenance.retraining if spec.maintenance else None
        fine_tuning = spec.maintenance.fine_tuning if spec.maintenance else None
        if not any((spec.monitoring.evaluation, refresh, retraining, fine_tuning)):
            return qual.QualityOutcome(previous, [])
        components = ",".join(qual.QUALITY_COMPONENTS)
        pods = self.kube.list(
            "v1",
            "Pod",
            target.namespace,
            f"{DEPLOYMENT_LABEL}={target.name},{COMPONENT_LABEL} in ({components})",
        )
        return qual.apply_reports(spec, previous, qual.finished_jobs(pods), now_rfc3339())

    def _roll_out_model(
        self,
        target: Target,
        spec: PhoenixDeploymentSpec,
        batching: BatchingConfig,
        quality: qual.QualityOutcome,
    ) -> qual.QualityOutcome:
        """Load a promoted LLM version on the running Tritons before the ConfigMap pins it.

        Live first: a version that fails to load is undone in status, so the ConfigMap rendered
        next pins the version that still serves and no new pod starts on the broken one.
        """
        if qual.pending_version(quality.quality) is None:
            return quality
        updated, events = promotion.roll_out(
            self.kube,
            target,
            spec,
            batching,
            quality.quality,
            self.settings.resolve,
            self.writer.load_model_config,
            triton_control_key(self.kube, target),
            now_rfc3339(),
        )
        return replace(quality, quality=updated, events=[*quality.events, *events])

    # ---------------------------------------------------------------- steps

    def _preflight(self, target: Target, spec: PhoenixDeploymentSpec) -> list[Problem]:
        """Checks only the operator can make; a failure blocks applying (children stay as they are)."""
        problems = []
        secret = spec.model.repository.credentials_secret
        if secret and self.kube.secret_data(secret, target.namespace) is None:
            problems.append(
                Problem(
                    "SecretNotFound",
                    f"Secret {target.namespace}/{secret} (model.repository.credentialsSecret) does not exist",
                )
            )
        external = spec.retrieval.milvus.external if spec.retrieval else None
        if external and external.token_secret_ref:
            ref = external.token_secret_ref
            try:
                resolve_token(self.kube.secret_data(ref.name, target.namespace), ref)
            except TokenSecretError as exc:
                problems.append(Problem(exc.reason, exc.message))
        return problems

    def _apply_children(
        self,
        target: Target,
        spec: PhoenixDeploymentSpec,
        batching: BatchingConfig,
        status: Mapping[str, Any],
        rejected: list[Problem],
        live: plan.LiveChildren,
        promoted: str | None = None,
        serving_version: int | None = None,
    ) -> list[str]:
        """Read what is live, plan the writes, have the writer perform them.

        Children the API server refuses (requests above limits, RBAC missing a kind, a
        terminating namespace) are added to ``rejected`` and the rest still applied, so a pass
        never crash-loops on one of them. A kind whose list fails is read child by child, so it
        never holds back an apply; its error is raised before pruning, which it would make blind.
        """
        caps = self.kube.capabilities(self.settings.capabilities_ttl_seconds)
        desired = render_all(target, spec, batching, caps, promoted, self.settings.network, serving_version)
        list_error = self._list_owned(target, caps.milvus_operator or caps.prometheus_operator, live)
        wanted = generated_secrets(target, spec)
        # Read by name (``get``), never listed: the operator reads only the Secrets it names.
        live_secrets = {s.name: self.kube.secret_data(s.name, target.namespace) for s in wanted}
        secret_intents, problems = plan.generated_secret_intents(
            target, wanted, live_secrets, new_secret_value
        )
        rejected.extend(problems)
        done = self.writer.perform(plan.apply_intents(target, spec, status, desired, secret_intents, live))
        live.mark_changed(done.changed)
        if list_error is not None:
            raise list_error
        pruned = self.writer.perform(plan.prune_intents(target, desired, live.owned()))
        live.mark_changed(pruned.changed)
        rejected.extend(done.rejected + pruned.rejected)
        return done.writes + pruned.writes

    def _list_owned(
        self, target: Target, optional_kinds: bool, live: plan.LiveChildren
    ) -> ApiException | None:
        """List every prunable kind with this deployment's label (never PVCs) into ``live``.

        A kind that is not served, or whose CRD went away since discovery, has none. Returns
        the first list that failed otherwise (that kind stays unlisted).
        """
        kinds = PRUNABLE_KINDS + (OPTIONAL_PRUNABLE_KINDS if optional_kinds else ())
        selector = f"{DEPLOYMENT_LABEL}={target.name}"
        error: ApiException | None = None
        for api_version, kind in kinds:
            try:
                items = self.kube.list_if_served(api_version, kind, target.namespace, selector)
            except ApiException as exc:
                error = error or exc
                continue
            live.add_listing(api_version, kind, items)
        return error

    def _read(
        self, live: plan.LiveChildren | None, api_version: str, kind: str, name: str, namespace: str
    ) -> Manifest | None:
        """A child as this pass listed it, else as the API server has it now."""
        seen = live.get(kind, name) if live is not None else UNREAD
        return self.kube.get_unless_read(seen, api_version, kind, name, namespace)

    def _observe_retrieval(
        self, target: Target, spec: PhoenixDeploymentSpec, blocked: bool
    ) -> tuple[RetrievalState | None, RetrievalStatus | None, list[str]]:
        retrieval = spec.retrieval
        if retrieval is None:
            return None, None, []
        endpoint = retrieval_endpoint(target, spec)
        assert endpoint is not None
        base = RetrievalStatus(endpoint=endpoint, collection=retrieval.collection.name)
        if blocked:
            return RetrievalState(False, "Blocked", "waiting for the blocking problem to be fixed"), base, []
        token = None
        db_name = "default"
        if retrieval.milvus.mode == "managed":
            waiting = self._managed_milvus_waiting(target)
            if waiting:
                return RetrievalState(False, "WaitingForMilvus", waiting), base, []
            secret = milvus_root_secret_name(target.name)
            token = milvus_token(self.kube.secret_data(secret, target.namespace))
            if token is None:
                message = f"Secret {target.namespace}/{secret} (Milvus' root credential) is missing or empty"
                return RetrievalState(False, "SecretNotFound", message), base, []
        else:
            external = retrieval.milvus.external
            assert external is not None
            db_name = external.db_name
            if external.token_secret_ref:
                # Checked in preflight; a Secret deleted since then surfaces as a retrieval problem.
                try:
                    token = resolve_token(
                        self.kube.secret_data(external.token_secret_ref.name, target.namespace),
                        external.token_secret_ref,
                    )
                except TokenSecretError as exc:
                    return RetrievalState(False, exc.reason, exc.message), base, []
        # Here, not at the top: pymilvus brings pandas, pyarrow and gRPC (about 95 MB of resident
        # memory), which an operator whose deployments have no retrieval never needs.
        from phoenix_operator.clients.milvus import ensure_collection

        report = ensure_collection(
            self.settings.resolve(endpoint),
            token,
            db_name,
            retrieval.collection,
            timeout_s=self.settings.milvus_timeout_seconds,
        )
        status = report.status.model_copy(update={"endpoint": endpoint})
        actions = [f"{a} ({retrieval.collection.name})" for a in report.actions]
        return RetrievalState(report.ready, report.reason, report.message), status, actions

    def _managed_milvus_waiting(self, target: Target) -> str | None:
        """Why the managed Milvus is not serving yet, or None when it is."""
        if self.kube.capabilities(self.settings.capabilities_ttl_seconds).milvus_operator:
            cr = self.kube.get("milvus.io/v1beta1", "Milvus", target.name, target.namespace)
            state = ((cr or {}).get("status") or {}).get("status")
            return None if state == "Healthy" else f"Milvus {target.name} is {state or 'being created'}"
        sts = self.kube.get("apps/v1", "StatefulSet", milvus_name(target.name), target.namespace)
        ready = int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)
        return None if ready >= 1 else f"StatefulSet {milvus_name(target.name)} has no ready pod yet"

    def _finish(
        self,
        outcome: Outcome,
        target: Target,
        status: Mapping[str, Any],
        blocking: list[Problem],
        spec: PhoenixDeploymentSpec | None,
        batching: BatchingConfig | None,
        retrieval: tuple[RetrievalState | None, RetrievalStatus | None] | None,
        rejected: list[Problem],
        quality: qual.QualityOutcome | None = None,
        live: plan.LiveChildren | None = None,
    ) -> None:
        deployment = self._read(live, "apps/v1", "Deployment", triton_name(target.name), target.namespace)
        triton = DeploymentState.from_object(deployment)
        gateway_deployment = self._gateway_deployment(target, spec, live)
        # One list for the pods of Triton and the gateway, told apart by their component label.
        pods_of = (
            _by_component(self.kube.list("v1", "Pod", target.namespace, f"{DEPLOYMENT_LABEL}={target.name}"))
            if deployment is not None or gateway_deployment
            else {}
        )
        pods = pods_of.get("triton", []) if deployment is not None else []
        retrieval_state, retrieval_status = retrieval if retrieval else (None, None)
        gateway, gateway_pods = None, []
        if gateway_deployment is not False:
            gateway = DeploymentState.from_object(gateway_deployment)
            gateway_pods = pods_of.get("gateway", []) if gateway_deployment else []
        embedder = embedder_state(spec) if spec is not None else None
        snap = Snapshot(
            triton=triton,
            blocking=blocking,
            unschedulable=[*rejected, *unschedulable_problems(pods)],
            retrieval=retrieval_state,
            gateway=gateway,
            gateway_unschedulable=unschedulable_problems(gateway_pods),
            embedder=embedder,
        )

        old_conditions = list(status.get("conditions") or [])
        drop: tuple[str, ...] = () if retrieval_state is not None else ("RetrievalReady",)
        if spec is not None and spec.autoscaling.mode == AutoscalingMode.OFF:
            # The control loop's conditions, stale once it stops.
            drop += ("MetricsAvailable", "Autoscaling", "RetrievalSlow")
        if spec is not None and gateway is None:
            drop += ("GatewayReady",)
        if spec is not None and embedder is None:
            drop += ("EmbedderCompatible",)
        desired = desired_conditions(snap)
        jobs = self._job_status(target, spec, live)
        if spec is not None:
            quality_status = quality.quality if quality else None
            scheduled = (jobs.get("evaluation") or {}).get("createdAt")
            measured = qual.measured_condition(
                spec, quality_status, datetime.now(UTC), scheduled, quality.error if quality else None
            )
            gate = qual.gate_condition(quality_status)
            model = qual.model_condition(quality_status)
            desired += [c for c in (measured, gate, model) if c is not None]
            drop += (() if measured else ("QualityMeasured",)) + (() if gate else ("QualityGate",))
            drop += () if model else ("ModelPromoted",)
        conditions = merge_conditions(old_conditions, desired, now_rfc3339(), target.generation, drop)
        draft = StatusDraft()
        draft.fields["observedGeneration"] = target.generation
        draft.fields["conditions"] = conditions
        if deployment is not None:
            draft.fields["replicas"] = triton.desired
            draft.fields["readyReplicas"] = triton.ready
            draft.fields["selector"] = selector_string(target)
            draft.fields["gpusAllocated"] = sum(
                _pod_gpus(p) for p in pods if p.get("spec", {}).get("nodeName") and not _finished(p)
            )
        if spec is not None and batching is not None:
            draft.fields["batching"] = batching_status(batching, spec, status.get("batching") or {})
        if retrieval_status is not None:
            draft.fields["retrieval"] = retrieval_status.model_dump(by_alias=True, exclude_none=True)
        elif status.get("retrieval") is not None:
            draft.fields["retrieval"] = None
        if gateway is not None:
            draft.fields["gateway"] = GatewayStatus(
                endpoint=gateway_endpoint(target.name, target.namespace),
                replicas=gateway.desired if gateway.exists else None,
                ready_replicas=gateway.ready if gateway.exists else None,
                available_replicas=gateway.available if gateway.exists else None,
                embedder=EMBEDDER_NAME,
                embedder_dimension=EMBEDDER_DIMENSION,
            ).model_dump(by_alias=True, exclude_none=True)
        elif spec is not None and status.get("gateway") is not None:
            draft.fields["gateway"] = None
        jobs = {k: {f: v for f, v in job.items() if f != "createdAt"} for k, job in jobs.items()}
        if jobs or status.get("jobs"):
            draft.fields["jobs"] = jobs
        if quality is not None and quality.quality is not None:
            compact = quality.quality.model_dump(by_alias=True, exclude_none=True)
            if status.get("quality") != compact:
                draft.fields["quality"] = with_removals(status.get("quality") or {}, compact)
            outcome.events += quality.events
        outcome.status_patch = draft.diff(status)
        for cond in changed_conditions(old_conditions, conditions):
            outcome.events.append(
                (event_type(cond), f"{cond['type']}{cond['status']}", f"{cond['reason']}: {cond['message']}")
            )

    def _gateway_deployment(
        self, target: Target, spec: PhoenixDeploymentSpec | None, live: plan.LiveChildren | None
    ) -> Manifest | Literal[False] | None:
        """The gateway Deployment (None: not there yet); False when the spec has no gateway."""
        if spec is None or not spec.gateway.enabled:
            return False
        return self._read(live, "apps/v1", "Deployment", gateway_name(target.name), target.namespace)

    def _job_status(
        self, target: Target, spec: PhoenixDeploymentSpec | None, live: plan.LiveChildren | None
    ) -> dict[str, Any]:
        """Schedule and last runs of the quality CronJobs (refresh, retraining, evaluation, fine-tuning)."""
        if spec is None:
            return {}
        out: dict[str, Any] = {}
        for key, (suffix, _) in (
            ("knowledgeBaseRefresh", REFRESH_JOB),
            ("retraining", RETRAIN_JOB),
            ("evaluation", EVALUATION_JOB),
            ("fineTuning", FINE_TUNE_JOB),
        ):
            cron = self._read(live, "batch/v1", "CronJob", f"{target.name}-{suffix}", target.namespace)
            if cron is None:
                continue
            cron_status = cron.get("status") or {}
            entry = {"schedule": cron["spec"]["schedule"], "suspended": bool(cron["spec"].get("suspend"))}
            # For QualityMeasured only (no run within the bound since the CronJob exists: Stale).
            entry["createdAt"] = cron["metadata"].get("creationTimestamp")
            for field_name in ("lastScheduleTime", "lastSuccessfulTime"):
                if cron_status.get(field_name):
                    entry[field_name] = cron_status[field_name]
            out[key] = entry
        return out


#: Reasons that are a normal step on the way to Ready, not a problem worth a Warning.
#: GatewayNotReady is Ready's echo of GatewayReady, which warns on its own when it is a problem.
TRANSIENT_REASONS = {
    "Creating",
    "WaitingForReplicas",
    "WaitingForMilvus",
    "RetrievalNotReady",
    "GatewayNotReady",
    "Blocked",
}


def event_type(cond: Mapping[str, Any]) -> str:
    """Warning for a new problem (Degraded, or not ready for a non-transient reason), else Normal."""
    if cond["type"] == "Degraded":
        return "Warning" if cond["status"] == "True" else "Normal"
    if cond["type"] == "EmbedderCompatible":
        return "Warning" if cond["status"] == "False" else "Normal"
    if cond["type"] in {"QualityMeasured", "QualityGate"}:
        return "Warning" if cond["status"] == "False" else "Normal"
    if cond["type"] in {"Ready", "RetrievalReady", "GatewayReady"} and cond["status"] == "False":
        return "Normal" if cond["reason"] in TRANSIENT_REASONS else "Warning"
    return "Normal"


def with_removals(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` as a merge patch over ``old``: keys ``new`` lacks become null, so they are removed."""
    out: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            out[key] = with_removals(before, value)
        else:
            out[key] = value
    return out


def _by_component(pods: list[Manifest]) -> dict[str, list[Manifest]]:
    out: dict[str, list[Manifest]] = {}
    for pod in pods:
        component = ((pod.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL, "")
        out.setdefault(component, []).append(pod)
    return out


def _pod_gpus(pod: Mapping[str, Any]) -> int:
    total = 0
    for container in pod.get("spec", {}).get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        total += int(str(requests.get("nvidia.com/gpu", 0)))
    return total


def new_secret_value() -> str:
    """A generated Secret's random value (a root password, a model-control key)."""
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


def _finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}
