"""Quality in the loop (pure): job reports → status.quality, the QualityGate, QualityMeasured, ModelPromoted.

The evaluation, retraining, refresh and fine-tuning jobs report one line of JSON as their
container's termination message (``phoenix eval --termination-log``). The reconciler hands the
finished pods it found to `apply_reports`; everything here is decided from data, without I/O.
A fine-tuned LLM version the gate passes is recorded in ``status.quality.model`` first and counts
as live only once `record_rollout` hears that every ready Triton endpoint loaded it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from phoenix_operator.api.models import (
    ModelGateStatus,
    ModelVersionStatus,
    PhoenixDeploymentSpec,
    QualityGateStatus,
    QualityStatus,
)
from phoenix_operator.quality import gate as quality_gates
from phoenix_operator.render.objects import EVALUATION_JOB, FINE_TUNE_JOB, REFRESH_JOB, RETRAIN_JOB

JobKind = Literal["evaluation", "retraining", "refresh", "fineTuning"]
#: The pod label (``app.kubernetes.io/component``) of each kind's job.
COMPONENT_KIND: dict[str, JobKind] = {
    EVALUATION_JOB[1]: "evaluation",
    RETRAIN_JOB[1]: "retraining",
    REFRESH_JOB[1]: "refresh",
    FINE_TUNE_JOB[1]: "fineTuning",
}
#: Every quality job's pod component: what the reconciler's pod selector lists.
QUALITY_COMPONENTS = tuple(COMPONENT_KIND)
KINDS: tuple[JobKind, ...] = ("evaluation", "retraining", "refresh", "fineTuning")
#: Highest model version number accepted in a report (Triton's are int64; this keeps them sane).
MAX_VERSION = 2**31 - 1
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
FIGURE_KEYS = ("macro_f1", "accuracy", "urgent_recall", "urgent_precision", "hit_at_k")
#: A candidate names a directory under the classifier volume's candidates directory.
CANDIDATE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


class ReportError(ValueError):
    """A termination message that is not the one-line JSON report; the message says why."""


@dataclass(frozen=True)
class Report:
    """One finished job's figures."""

    kind: JobKind
    job_name: str
    finished_at: str
    figures: dict[str, float]
    examples: int | None = None
    candidate: str | None = None
    #: ``phoenix kb ingest --eval`` already judged the refresh: whether the alias moved, why not,
    #: the hit@k of the version it measured against, and whether the source was unchanged.
    promoted: bool | None = None
    reason: str | None = None
    current_hit_at_k: float | None = None
    unchanged: bool = False


@dataclass(frozen=True)
class FinishedJob:
    """The newest finished pod of one job kind, as read from the API."""

    kind: JobKind
    job_name: str
    finished_at: str
    message: str | None
    succeeded: bool


def finished_jobs(pods: Iterable[Mapping[str, Any]]) -> dict[JobKind, FinishedJob]:
    """Per kind, the pod of the job that finished last (succeeded or failed)."""
    newest: dict[JobKind, FinishedJob] = {}
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        kind = COMPONENT_KIND.get((meta.get("labels") or {}).get("app.kubernetes.io/component", ""))
        if kind is None or status.get("phase") not in {"Succeeded", "Failed"}:
            continue
        terminated = next(
            (
                (c.get("state") or {}).get("terminated")
                for c in status.get("containerStatuses") or []
                if (c.get("state") or {}).get("terminated")
            ),
            None,
        )
        if terminated is None:
            continue
        labels = meta.get("labels") or {}
        job_name = next((labels[k] for k in JOB_NAME_LABELS if labels.get(k)), meta.get("name", "?"))
        found = FinishedJob(
            kind=kind,
            job_name=str(job_name),
            finished_at=str(terminated.get("finishedAt") or ""),
            message=terminated.get("message"),
            succeeded=status.get("phase") == "Succeeded",
        )
        if kind not in newest or (found.finished_at, found.job_name) > (
            newest[kind].finished_at,
            newest[kind].job_name,
        ):
            newest[kind] = found
    return newest


def parse_report(job: FinishedJob) -> Report:
    """The job's figures, strictly: one JSON object, figures in [0, 1], a safe candidate name."""
    if not job.message or not job.message.strip():
        raise ReportError(f"job {job.job_name} left no termination message")
    try:
        data = json.loads(job.message)
    except ValueError as exc:
        raise ReportError(f"job {job.job_name}: termination message is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"job {job.job_name}: termination message is not a JSON object")
    figures: dict[str, float] = {}
    for key in FIGURE_KEYS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ReportError(f"job {job.job_name}: {key} must be a number in [0, 1], got {value!r}")
        figures[key] = float(value)
    if not figures:
        raise ReportError(f"job {job.job_name}: the report has none of {', '.join(FIGURE_KEYS)}")
    examples = data.get("examples")
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 0):
        raise ReportError(f"job {job.job_name}: examples must be a count, got {examples!r}")
    candidate = data.get("candidate")
    if candidate is not None and (not isinstance(candidate, str) or not CANDIDATE.match(candidate)):
        raise ReportError(f"job {job.job_name}: candidate must be a directory name, got {candidate!r}")
    if job.kind == "retraining" and ("macro_f1" not in figures or candidate is None):
        raise ReportError(f"job {job.job_name}: a retraining report needs candidate and macro_f1")
    promoted, unchanged, reason = data.get("promoted"), data.get("unchanged", False), data.get("reason")
    if promoted is not None and not isinstance(promoted, bool):
        raise ReportError(f"job {job.job_name}: promoted must be true or false, got {promoted!r}")
    if not isinstance(unchanged, bool):
        raise ReportError(f"job {job.job_name}: unchanged must be true or false, got {unchanged!r}")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 128):
        raise ReportError(f"job {job.job_name}: reason must be a short text, got {reason!r}")
    current_hit = data.get("current_hit_at_k")
    if current_hit is not None and (
        isinstance(current_hit, bool) or not isinstance(current_hit, int | float) or not 0 <= current_hit <= 1
    ):
        raise ReportError(
            f"job {job.job_name}: current_hit_at_k must be a number in [0, 1], got {current_hit!r}"
        )
    return Report(
        job.kind,
        job.job_name,
        job.finished_at,
        figures,
        examples,
        candidate,
        promoted=promoted,
        reason=reason,
        current_hit_at_k=None if current_hit is None else float(current_hit),
        unchanged=unchanged,
    )


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    message: str


def gate(
    kind: Literal["retraining", "refresh"],
    candidate: Mapping[str, float],
    current: Mapping[str, float],
    min_f1: float,
    tolerance: float,
) -> GateDecision:
    """Promote only a candidate at least ``min_f1`` (macro-F1) and within ``tolerance`` of the current.

    Retraining is judged on macro-F1, a refresh on hit@k. Without a current figure only the floor
    applies; a refresh that reports no hit@k cannot be judged and fails.
    """
    key, label = ("macro_f1", "macro-F1") if kind == "retraining" else ("hit_at_k", "hit@k")
    value = candidate.get(key)
    if value is None:
        return GateDecision(False, "NoFigures", f"the {kind} candidate reported no {label}")
    now = current.get(key)
    both = f"candidate {label} {value:.4f}, current " + ("none" if now is None else f"{now:.4f}")
    if kind == "retraining" and value < min_f1:
        return GateDecision(False, "BelowMinF1", f"{both}: below monitoring.minF1 {min_f1:g}")
    if now is not None and value < now - tolerance - 1e-12:
        return GateDecision(
            False, "Regressed", f"{both}: more than {tolerance:g} below the current ({kind} tolerance)"
        )
    return GateDecision(True, "Passed", f"{both}: promoted")


@dataclass(frozen=True)
class QualityOutcome:
    quality: QualityStatus | None
    #: (type, reason, message) Events.
    events: list[tuple[str, str, str]]
    #: A report that could not be read this pass, for the QualityMeasured condition.
    error: str | None = None


def apply_reports(
    spec: PhoenixDeploymentSpec,
    previous: QualityStatus | None,
    jobs: Mapping[JobKind, FinishedJob],
    now: str,
) -> QualityOutcome:
    """Fold newly finished jobs into status.quality; each job is read once (``seenJobs``)."""
    quality = (previous or QualityStatus()).model_copy(deep=True)
    events: list[tuple[str, str, str]] = []
    error: str | None = None
    for kind in KINDS:
        job = jobs.get(kind)
        if job is None or quality.seen_jobs.get(kind) == job.job_name:
            continue
        quality.seen_jobs[kind] = job.job_name
        if not job.succeeded and not job.message:
            events.append(
                ("Warning", "QualityJobFailed", f"{kind} job {job.job_name} failed without a report")
            )
            continue
        if kind == "fineTuning":
            events.append(_decide_model(spec, quality, job, now))
            continue
        try:
            report = parse_report(job)
        except ReportError as exc:
            events.append(("Warning", "QualityReportInvalid", str(exc)))
            if kind == "evaluation":
                error = quality.last_error = str(exc)
            else:
                quality.gate = QualityGateStatus(
                    kind="retraining" if kind == "retraining" else "refresh",
                    job_name=job.job_name,
                    passed=False,
                    reason="InvalidReport",
                    message=f"{exc}; the current model stays",
                    decided_at=now,
                )
            continue
        if kind == "evaluation":
            quality.last_error = None
            quality.macro_f1 = report.figures.get("macro_f1")
            quality.accuracy = report.figures.get("accuracy")
            quality.urgent_recall = report.figures.get("urgent_recall")
            quality.urgent_precision = report.figures.get("urgent_precision")
            quality.hit_at_k = report.figures.get("hit_at_k", quality.hit_at_k)
            quality.examples = report.examples
            quality.evaluated_at = report.finished_at or now
            quality.job_name = report.job_name
            quality.source = _data_source(spec)
            events.append(("Normal", "QualityMeasured", f"job {report.job_name}: {_figures(report.figures)}"))
            continue
        events.append(_decide(spec, quality, report, kind, now))
    changed = quality != (previous or QualityStatus())
    return QualityOutcome(quality if changed or previous is not None else None, events, error)


def _decide(
    spec: PhoenixDeploymentSpec, quality: QualityStatus, report: Report, kind: str, now: str
) -> tuple[str, str, str]:
    current = {
        k: v for k, v in (("macro_f1", quality.macro_f1), ("hit_at_k", quality.hit_at_k)) if v is not None
    }
    if kind == "retraining":
        retraining = spec.maintenance.retraining if spec.maintenance else None
        tolerance = retraining.max_f1_drop if retraining else 0.02
        decision = gate("retraining", report.figures, current, spec.monitoring.min_f1, tolerance)
    elif report.promoted is not None:
        # The ingest judged itself before moving the alias: report its verdict, never re-judge.
        if report.current_hit_at_k is not None:
            current["hit_at_k"] = report.current_hit_at_k
        if report.unchanged:
            if "hit_at_k" in report.figures:
                quality.hit_at_k = report.figures["hit_at_k"]
            return ("Normal", "QualityRefreshUnchanged", f"refresh job {report.job_name}: source unchanged")
        hit = report.figures.get("hit_at_k")
        now_hit = current.get("hit_at_k")
        both = f"candidate hit@k {'none' if hit is None else f'{hit:.4f}'}, current " + (
            "none" if now_hit is None else f"{now_hit:.4f}"
        )
        verdict = "promoted by the ingest's gate" if report.promoted else "rejected by the ingest's gate"
        decision = GateDecision(
            report.promoted,
            "Passed" if report.promoted else (report.reason or "Rejected"),
            f"{both}: {verdict}",
        )
    else:
        refresh = spec.retrieval.refresh if spec.retrieval else None
        tolerance = refresh.max_hit_at_k_drop if refresh else 0.02
        decision = gate("refresh", report.figures, current, spec.monitoring.min_f1, tolerance)
    quality.gate = QualityGateStatus(
        kind="retraining" if kind == "retraining" else "refresh",
        job_name=report.job_name,
        candidate=report.candidate,
        passed=decision.passed,
        reason=decision.reason,
        message=decision.message,
        candidate_macro_f1=report.figures.get("macro_f1"),
        current_macro_f1=current.get("macro_f1"),
        candidate_hit_at_k=report.figures.get("hit_at_k"),
        current_hit_at_k=current.get("hit_at_k"),
        decided_at=now,
    )
    if decision.passed and kind == "retraining" and spec.gateway.classifier.pvc is not None:
        quality.classifier = report.candidate
        # The promoted classifier is the current one now: the next evaluation measures it.
        quality.macro_f1 = report.figures["macro_f1"]
    if decision.passed and kind == "refresh" and "hit_at_k" in report.figures:
        quality.hit_at_k = report.figures["hit_at_k"]
    what = f"{kind} job {report.job_name}" + (f" (candidate {report.candidate})" if report.candidate else "")
    if decision.passed:
        return ("Normal", "QualityGatePassed", f"{what}: {decision.message}")
    return ("Warning", "QualityGateFailed", f"{what}: {decision.message}; the current model stays")


def _figures(figures: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in figures.items())


def _data_source(spec: PhoenixDeploymentSpec) -> str | None:
    evaluation = spec.monitoring.evaluation
    if evaluation is None:
        return None
    data = evaluation.data
    if data.url is not None:
        return data.url
    return f"pvc://{data.pvc.claim_name}{data.pvc.path}" if data.pvc else None


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def measured_condition(
    spec: PhoenixDeploymentSpec,
    quality: QualityStatus | None,
    now: datetime,
    scheduled_since: str | None,
    error: str | None = None,
) -> dict[str, str] | None:
    """QualityMeasured: True with figures, False Stale/InvalidReport, Unknown before any run.

    ``scheduled_since`` is when the evaluation CronJob was created: no run within the bound since
    then is Stale too. None when the spec schedules no evaluation.
    """
    evaluation = spec.monitoring.evaluation
    if evaluation is None:
        return None
    bound = evaluation.max_age()
    evaluated = parse_time(quality.evaluated_at if quality else None)
    error = error or (quality.last_error if quality else None)

    def cond(status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": "QualityMeasured", "status": status, "reason": reason, "message": message}

    if error is not None:
        # Kept until a readable report arrives; the figures before it stay in status.quality.
        return cond("False", "InvalidReport", error)
    if evaluated is None or quality is None or quality.macro_f1 is None:
        since = parse_time(scheduled_since)
        if since is not None and (now - since).total_seconds() > bound:
            return cond("False", "Stale", f"no evaluation reported within {bound}s of scheduling it")
        return cond("Unknown", "NotYetMeasured", "no evaluation has reported yet")
    age = (now - evaluated).total_seconds()
    figures = f"macro-F1 {quality.macro_f1:.4f}" + (
        f", accuracy {quality.accuracy:.4f}" if quality.accuracy is not None else ""
    )
    if age > bound:
        return cond(
            "False",
            "Stale",
            f"last evaluation ({quality.job_name}) is {math.floor(age)}s old (bound {bound}s)",
        )
    return cond("True", "Measured", f"{figures} by {quality.job_name} at {quality.evaluated_at}")


def gate_condition(quality: QualityStatus | None) -> dict[str, str] | None:
    """QualityGate: the last retraining/refresh decision, both figures in the message."""
    if quality is None or quality.gate is None:
        return None
    g = quality.gate
    return {
        "type": "QualityGate",
        "status": "True" if g.passed else "False",
        "reason": g.reason,
        "message": f"{g.kind} job {g.job_name}: {g.message}",
    }


# --------------------------------------------------------------------------------------------
# fine-tuned LLM versions: report → gate → status.quality.model → live rollout


@dataclass(frozen=True)
class ModelReport:
    """A fine-tuning job's report: the version directory it wrote and how well it answers."""

    job_name: str
    finished_at: str
    candidate_version: int
    metrics: dict[str, float]
    #: The version the job measured beside the candidate (the serving one), with its figures.
    baseline_version: int | None = None
    baseline_metrics: dict[str, float] | None = None
    examples: int | None = None


def _version(job: FinishedJob, data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise ReportError(f"job {job.job_name}: {key} must be a model version number ≥ 1, got {value!r}")
    return value


def _scores(job: FinishedJob, data: Mapping[str, Any], key: str) -> dict[str, float] | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > 32:
        raise ReportError(f"job {job.job_name}: {key} must be an object of figures, got {value!r}")
    out: dict[str, float] = {}
    for name, figure in value.items():
        if not isinstance(name, str) or not 1 <= len(name) <= 64:
            raise ReportError(f"job {job.job_name}: {key} has a figure without a short name: {name!r}")
        if isinstance(figure, bool) or not isinstance(figure, int | float) or not 0 <= figure <= 1:
            raise ReportError(f"job {job.job_name}: {key}.{name} must be a number in [0, 1], got {figure!r}")
        out[name] = float(figure)
    return out


def parse_model_report(job: FinishedJob) -> ModelReport:
    """``{"candidate_version": N, "metrics": {...}}`` plus optional ``baseline_version``,
    ``baseline_metrics`` and ``examples``, strictly."""
    if not job.message or not job.message.strip():
        raise ReportError(f"job {job.job_name} left no termination message")
    try:
        data = json.loads(job.message)
    except ValueError as exc:
        raise ReportError(f"job {job.job_name}: termination message is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"job {job.job_name}: termination message is not a JSON object")
    candidate = _version(job, data, "candidate_version")
    metrics = _scores(job, data, "metrics")
    if candidate is None or not metrics:
        raise ReportError(f"job {job.job_name}: a fine-tuning report needs candidate_version and metrics")
    examples = data.get("examples")
    if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 0):
        raise ReportError(f"job {job.job_name}: examples must be a count, got {examples!r}")
    return ModelReport(
        job.job_name,
        job.finished_at,
        candidate,
        metrics,
        _version(job, data, "baseline_version"),
        _scores(job, data, "baseline_metrics"),
        examples,
    )


def _decide_model(
    spec: PhoenixDeploymentSpec, quality: QualityStatus, job: FinishedJob, now: str
) -> tuple[str, str, str]:
    """Judge a fine-tuning candidate; a pass moves ``servingVersion``, anything else pins the old one."""
    fine_tuning = spec.maintenance.fine_tuning if spec.maintenance else None
    metric = fine_tuning.metric if fine_tuning else "answer_f1"
    min_score = fine_tuning.min_score if fine_tuning else 0.0
    max_drop = fine_tuning.max_score_drop if fine_tuning else 0.02
    model = quality.model = (quality.model or ModelVersionStatus()).model_copy(deep=True)

    def refuse(reason: str, why: str, report: ModelReport | None = None) -> tuple[str, str, str]:
        keeps = _keeps(model.serving_version)
        model.gate = ModelGateStatus(
            job_name=job.job_name,
            candidate_version=report.candidate_version if report else None,
            serving_version=model.serving_version,
            metric=metric,
            passed=False,
            reason=reason,
            message=f"{why}; {keeps}",
            decided_at=now,
        )
        return ("Warning", "QualityReportInvalid", f"fine-tuning job {job.job_name}: {why}; {keeps}")

    try:
        report = parse_model_report(job)
    except ReportError as exc:
        return refuse("InvalidReport", str(exc))
    serving = model.serving_version if model.serving_version is not None else report.baseline_version
    if serving is None:
        return refuse(
            "InvalidReport",
            "the first fine-tuning report must name baseline_version (the version serving now), "
            "so the operator can keep serving it if the candidate is rejected",
            report,
        )
    if report.candidate_version <= serving:
        return refuse(
            "InvalidReport",
            f"candidate_version {report.candidate_version} is not newer than the serving version {serving}",
            report,
        )
    # Figures measured in the same run on the same held-out set compare best; else the serving
    # version's figure from when it was judged.
    if report.baseline_version == serving and report.baseline_metrics and metric in report.baseline_metrics:
        serving_score: float | None = report.baseline_metrics[metric]
    else:
        serving_score = model.score if model.metric == metric and model.serving_version == serving else None
    verdict = quality_gates.model_gate(metric, report.metrics, serving_score, min_score, max_drop)
    model.gate = ModelGateStatus(
        job_name=job.job_name,
        candidate_version=report.candidate_version,
        serving_version=serving,
        metric=metric,
        passed=verdict.promote,
        reason=verdict.reason,
        message=f"version {report.candidate_version} vs {serving}: {verdict.message}",
        candidate_score=verdict.candidate_score,
        serving_score=verdict.serving_score,
        decided_at=now,
    )
    what = f"fine-tuning job {job.job_name}: version {report.candidate_version} vs serving {serving}"
    if not verdict.promote:
        model.serving_version = serving
        if model.score is None and serving_score is not None:
            model.metric, model.score = metric, serving_score
        return ("Warning", "ModelRejected", f"{what}: {verdict.message}; {_keeps(serving)}")
    model.previous_version = serving
    model.serving_version = report.candidate_version
    model.metric, model.score = metric, verdict.candidate_score
    model.job_name, model.promoted_at = job.job_name, now
    model.apply_message = None
    return ("Normal", "ModelPromoted", f"{what}: {verdict.message}; loading it on Triton")


def _keeps(serving: int | None) -> str:
    if serving is None:
        return "the current model keeps serving"
    return f"version {serving} keeps serving"


def pending_version(quality: QualityStatus | None) -> int | None:
    """The version Triton must be pinned to live, when it is not confirmed there yet."""
    model = quality.model if quality else None
    if model is None or model.serving_version is None or model.serving_version == model.applied_version:
        return None
    return model.serving_version


def record_rollout(
    quality: QualityStatus, version: int, loaded: bool, detail: str, now: str
) -> tuple[QualityStatus, tuple[str, str, str]]:
    """Fold a live apply's result in: confirmed, or the promotion undone (the old version serves).

    A candidate Triton cannot load is no better than one the gate rejected, so a failed apply
    reverts ``servingVersion`` to the previous one (the actuator has already rolled the endpoints
    back to it) instead of retrying a version that may never load.
    """
    quality = quality.model_copy(deep=True)
    model = quality.model = (quality.model or ModelVersionStatus()).model_copy(deep=True)
    if loaded:
        model.applied_version = version
        model.apply_message = f"version {version} at {now}: {detail}"
        return quality, ("Normal", "ModelLoaded", f"Triton serves version {version}: {detail}")
    previous, gate_status = model.previous_version, model.gate
    model.apply_message = f"version {version} at {now}: {detail}"
    if model.serving_version == version and previous is not None and previous != version:
        model.serving_version, model.previous_version = previous, None
        if gate_status is not None and gate_status.candidate_version == version:
            model.score = gate_status.serving_score
            model.job_name = None
            gate_status.passed = False
            gate_status.reason = "LoadFailed"
            gate_status.message = f"version {version} passed the gate but did not load: {detail}"
            gate_status.decided_at = now
    return quality, (
        "Warning",
        "ModelLoadFailed",
        f"version {version} did not load on Triton ({detail}); {_keeps(model.serving_version)}",
    )


def model_condition(quality: QualityStatus | None) -> dict[str, str] | None:
    """ModelPromoted: True once the promoted version is live, Unknown while loading, False with why."""
    model = quality.model if quality else None
    if model is None or model.gate is None:
        return None
    g = model.gate

    def cond(status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": "ModelPromoted", "status": status, "reason": reason, "message": message}

    if not g.passed:
        return cond("False", g.reason, f"fine-tuning job {g.job_name}: {g.message}")
    if model.serving_version is not None and model.applied_version == model.serving_version:
        return cond(
            "True", "Promoted", f"version {model.serving_version} serving; job {g.job_name}: {g.message}"
        )
    return cond(
        "Unknown", "Loading", f"version {model.serving_version} promoted, loading on Triton: {g.message}"
    )


def serving_version(status: Mapping[str, Any] | None) -> int | None:
    """``status.quality.model.servingVersion`` from a raw status: the version every model config pins.

    Everything that renders or reloads the Triton config (the ConfigMap, the control loop's
    batching reloads) must pass this on, or a reload falls back to Triton's latest-version policy.
    """
    model = ((status or {}).get("quality") or {}).get("model") or {}
    version = model.get("servingVersion")
    return version if isinstance(version, int) and not isinstance(version, bool) and version >= 1 else None
