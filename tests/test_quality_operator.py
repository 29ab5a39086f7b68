"""Quality in the loop, the operator's part: reports → status.quality, the QualityGate, metrics, alerts.

Pure parts (report parsing, the gate, QualityMeasured, rendering) run as plain tests; the alerts
run through ``promtool test rules``; the loop end to end runs against the local API server with
the session's operator process, the finished job pods written through the pods/status subresource
(kwok plays the kubelets of scheduled pods only; these pods are never scheduled).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from api_cases import valid_doc
from fixtures.jobs import finished_job_pod
from fixtures.operator import OperatorProcess
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.models import PhoenixDeploymentSpec, QualityStatus
from phoenix_operator.cluster.ports import pick_ports
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.render.objects import (
    DEPLOYMENT_LABEL,
    Target,
    evaluation_cron_job,
    gateway_deployment,
    prometheus_rule,
    refresh_cron_job,
    render_all,
    retrain_cron_job,
)
from phoenix_operator.status.quality import (
    FinishedJob,
    Report,
    ReportError,
    apply_reports,
    finished_jobs,
    gate,
    gate_condition,
    measured_condition,
    parse_report,
)

NOW = "2026-12-04T12:00:00Z"


def _spec(**overrides: Any) -> PhoenixDeploymentSpec:
    doc = copy.deepcopy(valid_doc())["spec"]
    doc["autoscaling"] = {"mode": "off"}
    doc["gateway"]["classifier"] = {"pvc": {"claimName": "classifier", "readOnly": False}}
    doc["monitoring"] = {
        "minF1": 0.8,
        "evaluation": {"schedule": "@daily", "data": {"url": "https://data.example.com/held-out.csv"}},
    }
    doc["maintenance"] = {
        "retraining": {
            "schedule": "@weekly",
            "data": {"pvc": {"claimName": "conversations", "path": "/labelled/train.csv"}},
        }
    }
    doc["retrieval"]["refresh"] = {
        "schedule": "0 3 * * *",
        "source": {"url": "https://kb.example.com/articles.jsonl"},
    }
    doc.update(overrides)
    return PhoenixDeploymentSpec.model_validate(doc)


def _job(kind: str, message: str | None, name: str = "job-1", at: str = NOW, ok: bool = True) -> FinishedJob:
    return FinishedJob(kind, name, at, message, ok)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# the gate (pure, table-driven)

GATE_CASES = [
    # kind, candidate, current, minF1, tolerance, passed, reason
    ("retraining", {"macro_f1": 0.93}, {"macro_f1": 0.92}, 0.8, 0.02, True, "Passed"),
    ("retraining", {"macro_f1": 0.90}, {"macro_f1": 0.92}, 0.8, 0.02, True, "Passed"),
    ("retraining", {"macro_f1": 0.899}, {"macro_f1": 0.92}, 0.8, 0.02, False, "Regressed"),
    ("retraining", {"macro_f1": 0.79}, {}, 0.8, 0.02, False, "BelowMinF1"),
    ("retraining", {"macro_f1": 0.85}, {}, 0.8, 0.02, True, "Passed"),
    ("retraining", {"macro_f1": 0.79}, {"macro_f1": 0.70}, 0.8, 0.02, False, "BelowMinF1"),
    ("retraining", {"accuracy": 0.95}, {"macro_f1": 0.9}, 0.8, 0.02, False, "NoFigures"),
    ("retraining", {"macro_f1": 0.85}, {"macro_f1": 0.92}, 0.8, 0.1, True, "Passed"),
    ("refresh", {"hit_at_k": 0.95}, {"hit_at_k": 0.96}, 0.8, 0.02, True, "Passed"),
    ("refresh", {"hit_at_k": 0.90}, {"hit_at_k": 0.96}, 0.8, 0.02, False, "Regressed"),
    ("refresh", {"hit_at_k": 0.5}, {}, 0.8, 0.02, True, "Passed"),
    ("refresh", {"macro_f1": 0.95}, {"hit_at_k": 0.9}, 0.8, 0.02, False, "NoFigures"),
]


@pytest.mark.parametrize(
    ("kind", "candidate", "current", "min_f1", "tolerance", "passed", "reason"), GATE_CASES
)
def test_gate(
    kind: Any,
    candidate: dict[str, float],
    current: dict[str, float],
    min_f1: float,
    tolerance: float,
    passed: bool,
    reason: str,
) -> None:
    decision = gate(kind, candidate, current, min_f1, tolerance)
    assert (decision.passed, decision.reason) == (passed, reason), decision.message
    key = "macro_f1" if kind == "retraining" else "hit_at_k"
    if key in candidate:
        assert f"{candidate[key]:.4f}" in decision.message
    if key in current and key in candidate:
        assert f"{current[key]:.4f}" in decision.message


# --------------------------------------------------------------------------------------------
# reports (pure)

BAD_MESSAGES = [
    ("", "no termination message"),
    ("not json{", "not JSON"),
    ("[0.9]", "not a JSON object"),
    ('{"macro_f1": 1.5}', "macro_f1 must be a number in [0, 1]"),
    ('{"macro_f1": "0.9"}', "macro_f1 must be a number"),
    ('{"accuracy": true}', "accuracy must be a number"),
    ('{"examples": 3}', "none of"),
    ('{"macro_f1": 0.9, "examples": -1}', "examples must be a count"),
]


@pytest.mark.parametrize(("message", "why"), BAD_MESSAGES)
def test_bad_reports_are_refused_naming_why(message: str, why: str) -> None:
    with pytest.raises(ReportError, match="job-1") as info:
        parse_report(_job("evaluation", message))
    assert why in str(info.value)


@pytest.mark.parametrize(
    "message",
    [
        '{"macro_f1": 0.9}',
        '{"candidate": "../etc", "macro_f1": 0.9}',
        '{"candidate": "a/b", "macro_f1": 0.9}',
    ],
)
def test_retraining_report_needs_a_safe_candidate(message: str) -> None:
    with pytest.raises(ReportError, match="candidate"):
        parse_report(_job("retraining", message))


def test_report_of_phoenix_eval_is_read() -> None:
    message = (
        '{"accuracy":0.9377,"examples":3080,"macro_f1":0.9376,"urgent_class":"urgent",'
        '"urgent_precision":0.9342,"urgent_recall":0.9861,"k":4,"hit_at_k":0.961}'
    )
    report = parse_report(_job("evaluation", message))
    assert report.figures == {
        "macro_f1": 0.9376,
        "accuracy": 0.9377,
        "urgent_recall": 0.9861,
        "urgent_precision": 0.9342,
        "hit_at_k": 0.961,
    }
    assert report.examples == 3080


def _pod(component: str, job: str, phase: str, finished: str, message: str | None) -> dict[str, Any]:
    terminated = {"exitCode": 0, "finishedAt": finished} | ({"message": message} if message else {})
    return {
        "metadata": {
            "name": f"{job}-abcde",
            "labels": {"app.kubernetes.io/component": component, "batch.kubernetes.io/job-name": job},
        },
        "status": {"phase": phase, "containerStatuses": [{"name": "x", "state": {"terminated": terminated}}]},
    }


def test_finished_jobs_takes_the_newest_finished_pod_per_kind() -> None:
    pods = [
        _pod("evaluation", "q-evaluate-1", "Succeeded", "2026-12-04T10:00:00Z", "{}"),
        _pod("evaluation", "q-evaluate-2", "Succeeded", "2026-12-04T11:00:00Z", "{}"),
        _pod("evaluation", "q-evaluate-3", "Running", "", None) | {"status": {"phase": "Running"}},
        _pod("maintenance", "q-retrain-1", "Failed", "2026-12-04T09:00:00Z", None),
        _pod("triton", "q-triton", "Succeeded", "2026-12-04T12:00:00Z", "{}"),
    ]
    jobs = finished_jobs(pods)
    assert set(jobs) == {"evaluation", "retraining"}
    assert jobs["evaluation"].job_name == "q-evaluate-2"
    assert jobs["retraining"].succeeded is False


def test_evaluation_then_bad_report_then_failing_and_passing_gate() -> None:
    spec = _spec()
    good = '{"macro_f1": 0.91, "accuracy": 0.92, "urgent_recall": 0.97, "examples": 100}'
    first = apply_reports(spec, None, {"evaluation": _job("evaluation", good, "q-evaluate-1")}, NOW)
    assert first.quality is not None and first.quality.macro_f1 == 0.91
    assert first.quality.source == "https://data.example.com/held-out.csv"
    assert [e[1] for e in first.events] == ["QualityMeasured"]
    # The same job again: read once only.
    again = apply_reports(spec, first.quality, {"evaluation": _job("evaluation", good, "q-evaluate-1")}, NOW)
    assert again.events == [] and again.quality == first.quality

    bad = apply_reports(spec, first.quality, {"evaluation": _job("evaluation", "oops", "q-evaluate-2")}, NOW)
    assert bad.quality is not None
    assert bad.quality.macro_f1 == 0.91 and bad.quality.job_name == "q-evaluate-1"  # nothing lost
    assert [e[:2] for e in bad.events] == [("Warning", "QualityReportInvalid")]
    cond = measured_condition(spec, bad.quality, datetime(2026, 12, 4, 12, tzinfo=UTC), None)
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "InvalidReport")

    worse = '{"candidate": "q-retrain-1", "macro_f1": 0.85}'
    failed = apply_reports(spec, bad.quality, {"retraining": _job("retraining", worse, "q-retrain-1")}, NOW)
    assert failed.quality is not None and failed.quality.classifier is None
    gate_cond = gate_condition(failed.quality)
    assert gate_cond is not None and gate_cond["status"] == "False"
    assert "0.8500" in gate_cond["message"] and "0.9100" in gate_cond["message"]
    assert failed.events[0][:2] == ("Warning", "QualityGateFailed")
    assert "current model stays" in failed.events[0][2]

    better = '{"candidate": "q-retrain-2", "macro_f1": 0.93}'
    passed = apply_reports(
        spec, failed.quality, {"retraining": _job("retraining", better, "q-retrain-2")}, NOW
    )
    assert passed.quality is not None and passed.quality.classifier == "q-retrain-2"
    assert passed.quality.gate is not None and passed.quality.gate.passed


def test_quality_measured_unknown_true_and_stale() -> None:
    spec = _spec()
    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    unknown = measured_condition(spec, None, now, "2026-12-04T00:00:00Z")
    assert unknown is not None and unknown["status"] == "Unknown"
    never = measured_condition(spec, None, now, "2026-12-01T00:00:00Z")  # @daily: bound 2 days
    assert never is not None and (never["status"], never["reason"]) == ("False", "Stale")
    quality = QualityStatus(macro_f1=0.9, evaluated_at="2026-12-04T04:30:00Z", job_name="q-evaluate-1")
    fresh = measured_condition(spec, quality, now, None)
    assert fresh is not None and fresh["status"] == "True" and "0.9000" in fresh["message"]
    old = measured_condition(spec, quality, now + timedelta(days=3), None)
    assert old is not None and (old["status"], old["reason"]) == ("False", "Stale")
    no_eval = _spec(monitoring={"minF1": 0.8}, maintenance=None)
    assert measured_condition(no_eval, quality, now, None) is None


# --------------------------------------------------------------------------------------------
# rendering (pure)

TARGET = Target(name="q", namespace="team", uid="uid-1")


def _container(cron: Mapping[str, Any]) -> dict[str, Any]:
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return dict(container)


def test_evaluation_cron_job_is_restricted_and_reads_the_served_classifier() -> None:
    spec = _spec()
    cron = evaluation_cron_job(TARGET, spec)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"] == "@daily"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = _container(cron)
    assert container["image"] == spec.gateway.image
    assert container["terminationMessagePolicy"] == "File"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert container["command"] == ["phoenix", "eval"]
    assert "--data=https://data.example.com/held-out.csv" in container["args"]
    assert "--spec=/etc/phoenix/spec.yaml" in container["args"]
    assert "--classifier=/var/lib/phoenix/classifier" in container["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["spec"]["configMap"]["name"] == "q-gateway-spec"
    assert volumes["classifier"]["persistentVolumeClaim"]["readOnly"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        "/tmp",
        "/var/cache/phoenix",
        "/etc/phoenix",
    }
    promoted = _container(evaluation_cron_job(TARGET, spec, "q-retrain-2"))
    assert "--classifier=/var/lib/phoenix/classifier/phoenix-candidates/q-retrain-2" in promoted["args"]


def test_default_retraining_trains_into_a_candidate_on_the_classifier_volume() -> None:
    spec = _spec()
    cron = retrain_cron_job(TARGET, spec)
    container = _container(cron)
    env = {e["name"]: e for e in container["env"]}
    assert env["TRAIN_DATA"]["value"] == "/var/lib/phoenix/data/train/labelled/train.csv"
    assert env["EVAL_DATA"]["value"] == "https://data.example.com/held-out.csv"  # the evaluation's set
    assert env["CANDIDATES"]["value"] == "/var/lib/phoenix/classifier/phoenix-candidates"
    assert "job-name" in env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "--candidate" in container["command"][2] and "phoenix classifier train" in container["command"][2]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["classifier"]["persistentVolumeClaim"] == {"claimName": "classifier", "readOnly": False}
    assert volumes["data-train"]["persistentVolumeClaim"] == {"claimName": "conversations", "readOnly": True}


def test_default_refresh_ingests_the_source_and_own_images_keep_their_contract() -> None:
    spec = _spec()
    container = _container(refresh_cron_job(TARGET, spec))
    assert container["command"] == ["phoenix", "kb", "ingest"]
    assert container["args"][:3] == [
        "--source=https://kb.example.com/articles.jsonl",
        "--milvus-uri=http://q-milvus.team.svc:19530",
        "--spec=/etc/phoenix/spec.yaml",
    ]
    assert spec.retrieval is not None and spec.retrieval.refresh is not None
    spec.retrieval.refresh.image = "ghcr.io/example/kb-ingest:1"
    own = _container(refresh_cron_job(TARGET, spec))
    assert own["image"] == "ghcr.io/example/kb-ingest:1" and "command" not in own
    env = {e["name"]: e for e in own["env"]}
    # Managed Milvus runs with auth: an own image gets the generated root credential by reference.
    assert set(env) == {
        "PHOENIX_MILVUS_URI",
        "PHOENIX_COLLECTION",
        "PHOENIX_MILVUS_USER",
        "PHOENIX_MILVUS_PASSWORD",
        "PHOENIX_MILVUS_TOKEN",
    }
    assert "secretKeyRef" in env["PHOENIX_MILVUS_PASSWORD"]["valueFrom"]
    assert "value" not in env["PHOENIX_MILVUS_PASSWORD"]


def test_promotion_rolls_the_gateway_and_nothing_else_changes() -> None:
    spec = _spec()
    before = render_all(TARGET, spec)
    after = render_all(TARGET, spec, promoted_classifier="q-retrain-2")
    changed = [a["metadata"]["name"] for a, b in zip(before, after, strict=True) if a != b]
    assert changed == ["q-gateway", "q-evaluate"]
    args = gateway_deployment(TARGET, spec, "q-retrain-2")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert "--classifier=/var/lib/phoenix/classifier/phoenix-candidates/q-retrain-2" in args


# --------------------------------------------------------------------------------------------
# alerts (promtool)


def _series(name: str, labels: Mapping[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


@pytest.mark.prometheus
def test_quality_alerts_fire_exactly_when_they_should(tmp_path: Path) -> None:
    spec = _spec(
        monitoring={
            "minF1": 0.8,
            "evaluation": {
                "schedule": "@daily",
                "data": {"url": "https://data.example.com/e.csv"},
                "maxAgeSeconds": 600,
            },
        }
    )
    groups = [
        group
        for name in ("low", "good", "old", "never")
        for group in prometheus_rule(Target(name=name, namespace="a"), spec)["spec"]["groups"]
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}))
    a = {"namespace": "a"}
    series = [
        _series("phoenix_eval_f1", a | {"deployment": "low"}, "0.7x30"),
        _series("phoenix_eval_f1", a | {"deployment": "good"}, "0.9x30"),
        _series("phoenix_eval_f1", a | {"deployment": "old"}, "0.9x30"),
        # Evaluated "now" at every step, except "old", whose only evaluation was at time 0.
        _series("phoenix_eval_timestamp_seconds", a | {"deployment": "low"}, "0+60x30"),
        _series("phoenix_eval_timestamp_seconds", a | {"deployment": "good"}, "0+60x30"),
        _series("phoenix_eval_timestamp_seconds", a | {"deployment": "old"}, "0x30"),
    ]

    def fired(summary: str, **extra: str) -> dict[str, Any]:
        return {"exp_labels": {"severity": "warning"} | extra, "exp_annotations": {"summary": summary}}

    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {
                        "eval_time": "5m",
                        "alertname": "PhoenixF1BelowSLA",
                        "exp_alerts": [fired("Offline-evaluation F1 of low below 0.8")],
                    },
                    {"eval_time": "5m", "alertname": "PhoenixEvaluationStale", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixEvaluationStale",
                        "exp_alerts": [fired("Last offline evaluation of old is older than 600s")],
                    },
                    {"eval_time": "5m", "alertname": "PhoenixEvaluationMissing", "exp_alerts": []},
                    {
                        "eval_time": "15m",
                        "alertname": "PhoenixEvaluationMissing",
                        "exp_alerts": [
                            fired(
                                "No offline evaluation of never reported for 600s",
                                deployment="never",
                                namespace="a",
                            )
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        ["promtool", "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------------------------
# the loop on the local cluster


class _OperatorWithMetrics(OperatorProcess):
    """`phoenix run` for one namespace, its own /metrics on a free 127.0.0.1 port."""

    namespace: str = ""
    metrics_url: str = ""

    def start(self) -> None:
        liveness_port, metrics_port = pick_ports(2)
        self.liveness_url = f"http://127.0.0.1:{liveness_port}/healthz"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "phoenix_operator.cli",
                "run",
                f"--namespace={self.namespace}",
                "--standalone",
                f"--liveness={self.liveness_url}",
                f"--metrics-port={metrics_port}",
            ],
            env=self.env | {"PHOENIX_METRICS_ADDRESS": "127.0.0.1"},
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._alive, timeout=60, interval=0.2, description="operator liveness endpoint")


@pytest.fixture
def operator_with_metrics(
    kube_cluster: Any, crds_installed: None, kube_namespace: str, tmp_path: Path
) -> Iterator[_OperatorWithMetrics]:
    env = kube_cluster.env() | {"PHOENIX_RESYNC_SECONDS": "2", "PYTHONUNBUFFERED": "1"}
    runner = _OperatorWithMetrics(env=env, log_path=tmp_path / "operator.log")
    runner.namespace = kube_namespace
    runner.start()
    yield runner
    runner.stop()


def _custom(kube_cluster: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_cluster.api_client)


def _get_pd(kube_cluster: Any, ns: str, name: str) -> dict[str, Any]:
    obj: Any = _custom(kube_cluster).get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
    return dict(obj)


def _condition(kube_cluster: Any, ns: str, name: str, type_: str) -> dict[str, Any] | None:
    for cond in (_get_pd(kube_cluster, ns, name).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def _wait_condition(
    kube_cluster: Any, ns: str, name: str, type_: str, status: str, reason: str
) -> dict[str, Any]:
    def check() -> Any:
        cond = _condition(kube_cluster, ns, name, type_)
        return cond if cond and (cond["status"], cond["reason"]) == (status, reason) else None

    return wait_for(check, timeout=60, interval=0.5, description=f"{name} {type_}={status}/{reason}")


def _events(kube_cluster: Any, ns: str, name: str) -> list[tuple[Any, Any, str]]:
    core = client.CoreV1Api(kube_cluster.api_client)
    items = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name}").items
    return [(e.type, e.reason, e.message or "") for e in items]


def _wait_event(kube_cluster: Any, ns: str, name: str, type_: str, reason: str) -> Any:
    def check() -> Any:
        return next((e for e in _events(kube_cluster, ns, name) if e[:2] == (type_, reason)), None)

    return wait_for(check, timeout=60, interval=0.5, description=f"{type_} Event {reason} on {name}")


def _metric(url: str, name: str, labels_: Mapping[str, str]) -> float | None:
    """One sample of the operator's own /metrics."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == dict(labels_):
                return float(sample.value)
    return None


def _gateway_args(kube_cluster: Any, ns: str, name: str) -> list[str]:
    apps = client.AppsV1Api(kube_cluster.api_client)
    deployment: Any = apps.read_namespaced_deployment(f"{name}-gateway", ns)
    return list(deployment.spec.template.spec.containers[0].args)


@pytest.mark.integration
def test_quality_loop_on_the_cluster(
    kube_cluster: Any, operator_with_metrics: _OperatorWithMetrics, kube_namespace: str
) -> None:
    ns, name, url = kube_namespace, "quality", operator_with_metrics.metrics_url
    doc = copy.deepcopy(valid_doc(name))
    spec = _spec().model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"] = {
        k: spec[k]
        for k in ("model", "batching", "priority", "gateway", "retrieval", "maintenance", "monitoring")
    }
    doc["spec"]["retrieval"].pop("refresh")
    doc["spec"]["autoscaling"] = {"mode": "off"}
    _custom(kube_cluster).create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)
    _wait_condition(kube_cluster, ns, name, "QualityMeasured", "Unknown", "NotYetMeasured")
    assert "--classifier=/var/lib/phoenix/classifier" in _gateway_args(kube_cluster, ns, name)

    # A finished evaluation → status.quality, QualityMeasured, an Event, the operator's metrics.
    report = {"accuracy": 0.92, "examples": 154, "macro_f1": 0.91, "urgent_recall": 0.97, "hit_at_k": 0.96}
    finished_job_pod(kube_cluster, ns, name, "evaluation", f"{name}-evaluate-1", json.dumps(report))
    measured = _wait_condition(kube_cluster, ns, name, "QualityMeasured", "True", "Measured")
    assert "0.9100" in measured["message"]
    quality = _get_pd(kube_cluster, ns, name)["status"]["quality"]
    assert quality["macroF1"] == 0.91 and quality["accuracy"] == 0.92 and quality["hitAtK"] == 0.96
    assert quality["jobName"] == f"{name}-evaluate-1"
    assert quality["source"] == "https://data.example.com/held-out.csv"
    _wait_event(kube_cluster, ns, name, "Normal", "QualityMeasured")
    who = {"namespace": ns, "deployment": name}
    assert wait_for(
        lambda: _metric(url, "phoenix_eval_f1", who) == 0.91,
        timeout=30,
        interval=0.5,
        description="phoenix_eval_f1",
    )
    assert _metric(url, "phoenix_eval_hit_at_k", who) == 0.96
    timestamp = _metric(url, "phoenix_eval_timestamp_seconds", who)
    assert timestamp is not None and abs(timestamp - datetime.now(UTC).timestamp()) < 120

    # A bad report: a Warning Event and a condition, the figures kept.
    traceback = "Traceback (most recent call"
    finished_job_pod(kube_cluster, ns, name, "evaluation", f"{name}-evaluate-2", traceback)
    _wait_event(kube_cluster, ns, name, "Warning", "QualityReportInvalid")
    invalid = _wait_condition(kube_cluster, ns, name, "QualityMeasured", "False", "InvalidReport")
    assert f"{name}-evaluate-2" in invalid["message"]
    quality = _get_pd(kube_cluster, ns, name)["status"]["quality"]
    assert quality["macroF1"] == 0.91 and quality["jobName"] == f"{name}-evaluate-1"
    assert _metric(url, "phoenix_eval_f1", who) == 0.91

    # A retraining candidate worse than the current model: gate closed, both figures, nothing rolls.
    worse = {"candidate": f"{name}-retrain-1", "macro_f1": 0.85, "accuracy": 0.86}
    finished_job_pod(kube_cluster, ns, name, "maintenance", f"{name}-retrain-1", json.dumps(worse))
    closed = _wait_condition(kube_cluster, ns, name, "QualityGate", "False", "Regressed")
    assert "0.8500" in closed["message"] and "0.9100" in closed["message"]
    warning = _wait_event(kube_cluster, ns, name, "Warning", "QualityGateFailed")
    assert "0.8500" in warning[2] and "0.9100" in warning[2]
    assert "classifier" not in _get_pd(kube_cluster, ns, name)["status"]["quality"]
    assert "--classifier=/var/lib/phoenix/classifier" in _gateway_args(kube_cluster, ns, name)

    # A better one: promoted, the gateway now loads it.
    better = {"candidate": f"{name}-retrain-2", "macro_f1": 0.93}
    finished_job_pod(kube_cluster, ns, name, "maintenance", f"{name}-retrain-2", json.dumps(better))
    _wait_condition(kube_cluster, ns, name, "QualityGate", "True", "Passed")
    promoted = f"--classifier=/var/lib/phoenix/classifier/phoenix-candidates/{name}-retrain-2"
    wait_for(
        lambda: promoted in _gateway_args(kube_cluster, ns, name),
        timeout=60,
        interval=0.5,
        description="gateway rolled to the promoted classifier",
    )
    assert _get_pd(kube_cluster, ns, name)["status"]["quality"]["classifier"] == f"{name}-retrain-2"

    # The next evaluation clears the invalid report (a merge patch must remove lastError).
    fresh = {"accuracy": 0.94, "macro_f1": 0.935}
    finished_job_pod(kube_cluster, ns, name, "evaluation", f"{name}-evaluate-3", json.dumps(fresh))
    _wait_condition(kube_cluster, ns, name, "QualityMeasured", "True", "Measured")
    quality = _get_pd(kube_cluster, ns, name)["status"]["quality"]
    assert "lastError" not in quality and quality["macroF1"] == 0.935
    assert "hitAtK" in quality  # kept from before: this report measured no retrieval
    assert wait_for(
        lambda: _metric(url, "phoenix_eval_f1", who) == 0.935, timeout=30, interval=0.5, description="new F1"
    )
    pods = client.CoreV1Api(kube_cluster.api_client).list_namespaced_pod(
        ns, label_selector=f"{DEPLOYMENT_LABEL}={name}"
    )
    assert len(pods.items) >= 4


# --------------------------------------------------------------------------------------------
# the default retraining job's script, run for real (phoenix classifier train + phoenix eval)


RETRAIN_INTENTS = ["card_arrival", "lost_or_stolen_card", "top_up_failed", "exchange_rate", "pin_blocked"]


def _run_default_retraining(
    tmp_path: Path, job_name: str, shuffle_labels: bool = False
) -> tuple[Report, str]:
    """Run the default retraining Job's script for real on a BANKING77 subset.

    Returns the parsed report and the termination message it was parsed from.

    With ``shuffle_labels`` the training labels are permuted across the texts (a deliberately
    bad candidate); the held-out set keeps its true labels.
    """
    import csv
    import os
    import random

    from phoenix_operator.data import banking77
    from phoenix_operator.render.objects import RETRAIN_SCRIPT, gateway_spec_yaml

    def subset(split: str, per_intent: int, path: Path, shuffle: bool) -> None:
        seen: dict[str, int] = {}
        rows: list[tuple[str, str]] = []
        with banking77(split).open() as src:
            for row in csv.DictReader(src):
                label = row["category"]
                if label in RETRAIN_INTENTS and seen.get(label, 0) < per_intent:
                    seen[label] = seen.get(label, 0) + 1
                    rows.append((row["text"], label))
        if shuffle:
            labels = [label for _, label in rows]
            random.Random(7).shuffle(labels)
            rows = [(text, label) for (text, _), label in zip(rows, labels, strict=True)]
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["text", "label"])
            writer.writerows(rows)

    work = tmp_path / job_name
    work.mkdir()
    subset("train", 40, work / "train.csv", shuffle_labels)
    subset("test", 10, work / "held-out.csv", False)
    # The spec file exactly as the operator mounts it: a bare spec, not a PhoenixDeployment.
    (work / "spec.yaml").write_text(gateway_spec_yaml(_spec()))
    termination = work / "termination-log"
    script = RETRAIN_SCRIPT.replace("/dev/termination-log", str(termination))
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "CANDIDATES": str(tmp_path / "phoenix-candidates"),
        "JOB_NAME": job_name,
        "TRAIN_DATA": str(work / "train.csv"),
        "EVAL_DATA": str(work / "held-out.csv"),
        "SPEC": str(work / "spec.yaml"),
    }
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "phoenix-candidates" / job_name / "metadata.json").is_file()
    message = termination.read_text()
    return parse_report(_job("retraining", message, job_name)), message


@pytest.mark.slow
def test_default_retraining_script_reports_a_candidate_the_operator_reads(tmp_path: Path) -> None:
    report, _ = _run_default_retraining(tmp_path, "quality-retrain-29000001")
    assert report.candidate == "quality-retrain-29000001"
    assert report.examples == 50
    assert 0.6 <= report.figures["macro_f1"] <= 1.0


@pytest.mark.slow
def test_a_candidate_trained_on_shuffled_labels_is_rejected_and_the_current_one_keeps_serving(
    tmp_path: Path,
) -> None:
    """Both candidates are trained and evaluated by the real script; the gate sees their reports."""
    spec = _spec()
    good, good_message = _run_default_retraining(tmp_path, "q-retrain-1")
    bad, bad_message = _run_default_retraining(tmp_path, "q-retrain-2", shuffle_labels=True)
    assert bad.figures["macro_f1"] < good.figures["macro_f1"] - 0.2

    promoted = apply_reports(spec, None, {"retraining": _job("retraining", good_message, "q-retrain-1")}, NOW)
    assert promoted.quality is not None and promoted.quality.classifier == "q-retrain-1"

    rejected = apply_reports(
        spec, promoted.quality, {"retraining": _job("retraining", bad_message, "q-retrain-2")}, NOW
    )
    assert rejected.quality is not None and rejected.quality.classifier == "q-retrain-1"
    gate_cond = gate_condition(rejected.quality)
    assert gate_cond is not None and gate_cond["status"] == "False"
    assert f"{bad.figures['macro_f1']:.4f}" in gate_cond["message"]
    assert rejected.events[0][:2] == ("Warning", "QualityGateFailed")
    serving = render_all(TARGET, spec, promoted_classifier=rejected.quality.classifier)
    gateway = next(m for m in serving if m["kind"] == "Deployment" and m["metadata"]["name"] == "q-gateway")
    args = gateway["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--classifier=/var/lib/phoenix/classifier/phoenix-candidates/q-retrain-1" in args


def test_a_refresh_the_ingest_judged_is_reported_as_judged_never_re_judged() -> None:
    """``phoenix kb ingest --eval`` reports its own verdict; the operator keeps the live figure."""
    spec = _spec()
    start = apply_reports(
        spec, None, {"evaluation": _job("evaluation", '{"macro_f1": 0.91, "hit_at_k": 0.95}', "ev-1")}, NOW
    )
    rejected = (
        '{"hit_at_k": 0.175, "current_hit_at_k": 0.95, "promoted": false, "reason": "Regressed", "k": 4}'
    )
    after = apply_reports(spec, start.quality, {"refresh": _job("refresh", rejected, "kb-1", ok=False)}, NOW)
    assert after.quality is not None and after.quality.hit_at_k == 0.95  # the live version's figure stays
    gate_cond = gate_condition(after.quality)
    assert gate_cond is not None and (gate_cond["status"], gate_cond["reason"]) == ("False", "Regressed")
    assert "0.1750" in gate_cond["message"] and "0.9500" in gate_cond["message"]
    assert after.events[0][:2] == ("Warning", "QualityGateFailed")

    promoted = '{"hit_at_k": 0.97, "current_hit_at_k": 0.95, "promoted": true, "k": 4}'
    passed = apply_reports(spec, after.quality, {"refresh": _job("refresh", promoted, "kb-2")}, NOW)
    assert passed.quality is not None and passed.quality.hit_at_k == 0.97
    assert passed.quality.gate is not None and passed.quality.gate.passed

    same = '{"hit_at_k": 0.97, "current_hit_at_k": 0.97, "promoted": false, "unchanged": true}'
    unchanged = apply_reports(spec, passed.quality, {"refresh": _job("refresh", same, "kb-3")}, NOW)
    assert unchanged.quality is not None and unchanged.quality.gate == passed.quality.gate
    assert [e[1] for e in unchanged.events] == ["QualityRefreshUnchanged"]

    with pytest.raises(ReportError, match="promoted"):
        parse_report(_job("refresh", '{"hit_at_k": 0.9, "promoted": "yes"}'))


def test_default_refresh_is_gated_on_the_evaluation_set_and_a_rejection_is_not_retried() -> None:
    from phoenix_operator.quality.gate import EXIT_REJECTED
    from phoenix_operator.render.objects import REFRESH_REJECTED, Target, refresh_cron_job

    target = Target(name="q", namespace="ns", uid="u")
    gated = refresh_cron_job(target, _spec())
    job = gated["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert "--eval=https://data.example.com/held-out.csv" in container["args"]
    assert "--max-hit-at-k-drop=0.02" in container["args"]
    (rule,) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [REFRESH_REJECTED] == [
        EXIT_REJECTED
    ]
    assert rule["onExitCodes"]["containerName"] == container["name"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"  # podFailurePolicy requires it

    ungated = refresh_cron_job(target, _spec(monitoring={"minF1": 0.8}, maintenance=None))
    assert not any(
        a.startswith("--eval")
        for a in ungated["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )
    assert "podFailurePolicy" not in ungated["spec"]["jobTemplate"]["spec"]
