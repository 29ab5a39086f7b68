"""Quality in the loop (pure): job reports → status.quality, the QualityGate, QualityMeasured.

The evaluation, retraining and refresh jobs report one line of JSON as their container's
termination message (``phoenix eval --termination-log``). The reconciler hands the finished pods
it found to `read_reports`; everything here is decided from data, without I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from phoenix_operator.api.models import PhoenixDeploymentSpec, QualityGateStatus, QualityStatus
from phoenix_operator.render.objects import EVALUATION_JOB, REFRESH_JOB, RETRAIN_JOB

JobKind = Literal["evaluation", "retraining", "refresh"]
#: The pod label (``app.kubernetes.io/component``) of each kind's job.
COMPONENT_KIND: dict[str, JobKind] = {
    EVALUATION_JOB[1]: "evaluation",
    RETRAIN_JOB[1]: "retraining",
    REFRESH_JOB[1]: "refresh",
}
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
    for kind in ("evaluation", "retraining", "refresh"):
        job = jobs.get(kind)
        if job is None or quality.seen_jobs.get(kind) == job.job_name:
            continue
        quality.seen_jobs[kind] = job.job_name
        if not job.succeeded and not job.message:
            events.append(
                ("Warning", "QualityJobFailed", f"{kind} job {job.job_name} failed without a report")
            )
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
