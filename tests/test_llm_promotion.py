"""Fine-tuned LLM versions through the quality gate: report → gate → status → Triton serves it.

Pure parts (the gate, report parsing, status folding, the version pin in the rendered config,
answer F1) run as plain tests. The promotion itself runs against a real ``tritonserver`` (CPU,
explicit model control) with a two-version model whose versions answer differently: a rejected
candidate leaves the serving version (even across a restart, although the candidate's directory
is the newest), a passing one is loaded live and answers, one that cannot load is rolled back.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from kubernetes import client

from api_cases import valid_doc
from fixtures.jobs import finished_job_pod
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.models import ModelVersionStatus, PhoenixDeploymentSpec, QualityStatus
from phoenix_operator.clients.kube import Kube
from phoenix_operator.clients.triton import TritonModelControl
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.intents import WriteStatus
from phoenix_operator.local.models.versioned import (
    ANSWER_MODEL,
    UNKNOWN_ANSWER,
    answer_model_spec,
    lookup_answer,
    write_model_config,
    write_model_version,
)
from phoenix_operator.local.triton import LocalTriton
from phoenix_operator.quality.evaluate import DataError, answer_scores, token_f1
from phoenix_operator.quality.gate import model_gate
from phoenix_operator.reconcile import promotion
from phoenix_operator.reconcile.reconciler import Reconciler
from phoenix_operator.render.objects import Target, config_map_name, fine_tune_cron_job, render_all
from phoenix_operator.render.tritonconfig import (
    BatchingConfig,
    model_config_dict,
    served_versions_of,
    to_load_json,
    to_pbtxt,
)
from phoenix_operator.settings import OperatorSettings
from phoenix_operator.status.quality import (
    QUALITY_COMPONENTS,
    FinishedJob,
    ReportError,
    apply_reports,
    finished_jobs,
    model_condition,
    parse_model_report,
    pending_version,
    record_rollout,
    serving_version,
)

NOW = "2026-12-04T12:00:00Z"


def _spec(min_score: float = 0.5, max_drop: float = 0.02, metric: str = "answer_f1") -> PhoenixDeploymentSpec:
    doc = copy.deepcopy(valid_doc())["spec"]
    doc["maintenance"] = {
        "fineTuning": {
            "schedule": "@weekly",
            "image": "registry.example.com/acme/llm-finetune:1.4",
            "metric": metric,
            "minScore": min_score,
            "maxScoreDrop": max_drop,
        }
    }
    return PhoenixDeploymentSpec.model_validate(doc)


def _job(message: str | None, name: str = "chat-fine-tune-1", ok: bool = True) -> FinishedJob:
    return FinishedJob("fineTuning", name, NOW, message, ok)


def _report(candidate: int, f1: float, baseline: int | None = None, baseline_f1: float | None = None) -> str:
    data: dict[str, Any] = {"candidate_version": candidate, "metrics": {"answer_f1": f1, "exact_match": 0.1}}
    if baseline is not None:
        data["baseline_version"] = baseline
    if baseline_f1 is not None:
        data["baseline_metrics"] = {"answer_f1": baseline_f1}
    return json.dumps(data)


# --------------------------------------------------------------------------------------------
# pure: the gate, the report, status


GATE_CASES = [
    # candidate, serving, floor, tolerance, promote, reason
    ({"answer_f1": 0.71}, 0.69, 0.5, 0.02, True, "Passed"),
    ({"answer_f1": 0.675}, 0.69, 0.5, 0.02, True, "Passed"),
    ({"answer_f1": 0.66}, 0.69, 0.5, 0.02, False, "Regressed"),
    ({"answer_f1": 0.45}, None, 0.5, 0.02, False, "BelowMinScore"),
    ({"answer_f1": 0.45}, 0.30, 0.5, 0.02, False, "BelowMinScore"),
    ({"answer_f1": 0.55}, None, 0.5, 0.02, True, "Passed"),
    ({"exact_match": 0.9}, 0.69, 0.5, 0.02, False, "NoFigure"),
]


@pytest.mark.parametrize(("candidate", "serving", "floor", "tolerance", "promote", "reason"), GATE_CASES)
def test_model_gate(
    candidate: dict[str, float],
    serving: float | None,
    floor: float,
    tolerance: float,
    promote: bool,
    reason: str,
) -> None:
    verdict = model_gate("answer_f1", candidate, serving, floor, tolerance)
    assert (verdict.promote, verdict.reason) == (promote, reason), verdict.message
    if "answer_f1" in candidate:
        assert f"{candidate['answer_f1']:.4f}" in verdict.message
        assert ("unmeasured" if serving is None else f"{serving:.4f}") in verdict.message


def test_model_gate_refuses_figures_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match="serving score"):
        model_gate("answer_f1", {"answer_f1": 0.5}, 1.5, 0.0, 0.02)


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("", "no termination message"),
        ("Traceback (most recent call last)", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"metrics": {"answer_f1": 0.7}}', "needs candidate_version and metrics"),
        ('{"candidate_version": 2}', "needs candidate_version and metrics"),
        ('{"candidate_version": 0, "metrics": {"answer_f1": 0.7}}', "version number"),
        ('{"candidate_version": true, "metrics": {"answer_f1": 0.7}}', "version number"),
        ('{"candidate_version": "2", "metrics": {"answer_f1": 0.7}}', "version number"),
        ('{"candidate_version": 2, "metrics": {"answer_f1": 1.7}}', r"metrics.answer_f1 must be a number"),
        ('{"candidate_version": 2, "metrics": [0.7]}', "object of figures"),
        ('{"candidate_version": 2, "metrics": {"answer_f1": 0.7}, "baseline_version": -1}', "version number"),
        ('{"candidate_version": 2, "metrics": {"answer_f1": 0.7}, "examples": -3}', "examples"),
    ],
)
def test_bad_fine_tuning_reports_are_refused_naming_why(message: str, why: str) -> None:
    with pytest.raises(ReportError, match=why):
        parse_model_report(_job(message))


def test_fine_tuning_pods_are_found_by_their_component() -> None:
    assert "fine-tuning" in QUALITY_COMPONENTS
    pod = {
        "metadata": {
            "name": "chat-fine-tune-7-x",
            "labels": {"app.kubernetes.io/component": "fine-tuning", "job-name": "chat-fine-tune-7"},
        },
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"state": {"terminated": {"finishedAt": NOW, "message": _report(2, 0.7, 1)}}}
            ],
        },
    }
    found = finished_jobs([pod])["fineTuning"]
    assert (found.job_name, found.succeeded) == ("chat-fine-tune-7", True)


def test_promotion_then_rejection_then_an_invalid_report_keep_the_right_version() -> None:
    spec = _spec()
    # First report: names the version serving now (1) and both figures from one run.
    first = apply_reports(spec, None, {"fineTuning": _job(_report(2, 0.72, 1, 0.61), "ft-1")}, NOW)
    assert first.quality is not None and first.quality.model is not None
    model = first.quality.model
    assert (model.serving_version, model.previous_version, model.applied_version) == (2, 1, None)
    assert model.score == 0.72 and model.gate is not None and model.gate.serving_score == 0.61
    assert first.events[0][:2] == ("Normal", "ModelPromoted")
    assert "0.7200" in first.events[0][2] and "0.6100" in first.events[0][2]
    assert pending_version(first.quality) == 2
    loading = model_condition(first.quality)
    assert loading is not None and (loading["status"], loading["reason"]) == ("Unknown", "Loading")

    live, event = record_rollout(first.quality, 2, True, "1/1 endpoints reloaded", NOW)
    assert event[:2] == ("Normal", "ModelLoaded") and pending_version(live) is None
    promoted = model_condition(live)
    assert promoted is not None and (promoted["status"], promoted["reason"]) == ("True", "Promoted")

    # A worse candidate without baseline figures is judged against the serving version's recorded one.
    worse = apply_reports(spec, live, {"fineTuning": _job(_report(3, 0.65), "ft-2")}, NOW)
    assert worse.quality is not None and worse.quality.model is not None
    assert worse.quality.model.serving_version == 2 and pending_version(worse.quality) is None
    assert worse.events[0][:2] == ("Warning", "ModelRejected")
    assert "0.6500" in worse.events[0][2] and "0.7200" in worse.events[0][2]
    assert "version 2 keeps serving" in worse.events[0][2]
    rejected = model_condition(worse.quality)
    assert rejected is not None and (rejected["status"], rejected["reason"]) == ("False", "Regressed")

    # The same job is read once; a report proposing an old version is refused.
    again = apply_reports(spec, worse.quality, {"fineTuning": _job(_report(3, 0.65), "ft-2")}, NOW)
    assert again.events == []
    stale = apply_reports(spec, worse.quality, {"fineTuning": _job(_report(2, 0.99), "ft-3")}, NOW)
    assert stale.quality is not None and stale.quality.model is not None
    assert stale.quality.model.gate is not None and stale.quality.model.gate.reason == "InvalidReport"
    assert "not newer" in stale.quality.model.gate.message and stale.quality.model.serving_version == 2


def test_a_first_rejection_pins_the_baseline_so_the_candidate_never_serves() -> None:
    out = apply_reports(_spec(min_score=0.5), None, {"fineTuning": _job(_report(2, 0.3, 1), "ft-1")}, NOW)
    assert out.quality is not None and out.quality.model is not None
    assert out.quality.model.serving_version == 1 and out.quality.model.gate is not None
    assert out.quality.model.gate.reason == "BelowMinScore"
    # Triton ran on its default (latest) policy until now: the pin on version 1 must be loaded.
    assert pending_version(out.quality) == 1


def test_a_first_report_without_a_baseline_is_refused() -> None:
    out = apply_reports(_spec(), None, {"fineTuning": _job(_report(2, 0.9), "ft-1")}, NOW)
    assert out.quality is not None and out.quality.model is not None
    assert out.quality.model.serving_version is None and out.quality.model.gate is not None
    assert out.quality.model.gate.reason == "InvalidReport" and "baseline_version" in out.events[0][2]


def test_a_version_that_does_not_load_is_undone() -> None:
    out = apply_reports(_spec(), None, {"fineTuning": _job(_report(2, 0.8, 1, 0.6), "ft-1")}, NOW)
    assert out.quality is not None
    undone, event = record_rollout(out.quality, 2, False, "endpoint 10.0.0.1:8000: load failed", NOW)
    assert undone.model is not None and undone.model.gate is not None
    assert (undone.model.serving_version, undone.model.score) == (1, 0.6)
    assert undone.model.gate.reason == "LoadFailed" and event[:2] == ("Warning", "ModelLoadFailed")
    assert "version 1 keeps serving" in event[2]
    condition = model_condition(undone)
    assert condition is not None and (condition["status"], condition["reason"]) == ("False", "LoadFailed")
    assert pending_version(undone) == 1  # Triton never had the pin on version 1 applied


def test_serving_version_is_read_from_a_raw_status() -> None:
    quality = QualityStatus(model=ModelVersionStatus(serving_version=4))
    status = {"quality": quality.model_dump(by_alias=True, exclude_none=True)}
    assert serving_version(status) == 4
    assert (
        serving_version({}) is None
        and serving_version({"quality": {"model": {"servingVersion": "4"}}}) is None
    )


def test_the_rendered_config_pins_the_promoted_version() -> None:
    spec = _spec()
    assert "version_policy" not in model_config_dict(spec)
    config = model_config_dict(spec, version=3)
    assert served_versions_of(config) == (3,)
    assert "version_policy {\n  specific {\n    versions: 3\n  }\n}" in to_pbtxt(config)
    assert served_versions_of(json.loads(to_load_json(config))) == (3,)
    with pytest.raises(ValueError, match="positive integer"):
        model_config_dict(spec, version=0)


def test_fine_tuning_needs_its_own_image() -> None:
    doc = copy.deepcopy(valid_doc())["spec"]
    doc["maintenance"] = {"fineTuning": {"schedule": "@weekly"}}
    with pytest.raises(ValueError, match=r"fineTuning\.image is required"):
        PhoenixDeploymentSpec.model_validate(doc)


def test_answer_scores() -> None:
    assert token_f1("The card arrives in 5 days.", "card arrives in five days") == pytest.approx(0.8)
    figures = answer_scores(["Paris", "no idea", "blue"], ["paris.", ["London", "UK"], "the blue one"])
    assert figures.exact_match == pytest.approx(1 / 3)
    assert figures.answer_f1 == pytest.approx((1 + 0 + 2 / 3) / 3)
    with pytest.raises(DataError):
        answer_scores(["a"], [])


# --------------------------------------------------------------------------------------------
# real Triton: the versioned model, promoted and kept out

HELD_OUT = {
    "How long does a card delivery take?": "Your card arrives within 5 working days.",
    "How do I reset my PIN?": "Reset your PIN in the app under Card settings.",
    "Is there a fee for top ups?": "Top ups by bank transfer are free.",
}
BASE = {q: "Please contact support." for q in HELD_OUT}
TUNED = dict(HELD_OUT)
#: A fine-tune that went wrong: every answer belongs to another question.
SHUFFLED = dict(zip(HELD_OUT, list(HELD_OUT.values())[1:] + list(HELD_OUT.values())[:1], strict=True))


def _offline(answers: dict[str, str]) -> dict[str, float]:
    """What the fine-tuning job measures on its own checkpoint before reporting it."""
    questions = list(HELD_OUT)
    return answer_scores(
        [lookup_answer(answers, q) for q in questions], [HELD_OUT[q] for q in questions]
    ).as_metrics()


def _ask(url: str, questions: list[str]) -> list[str]:
    client = httpclient.InferenceServerClient(url)
    try:
        prompts = np.array([[q.encode()] for q in questions], dtype=object)
        tensor = httpclient.InferInput("PROMPT", list(prompts.shape), "BYTES")
        tensor.set_data_from_numpy(prompts)
        result = client.infer(ANSWER_MODEL, [tensor])
        return [a.decode() for a in result.as_numpy("TEXT_OUTPUT").reshape(-1)]
    finally:
        client.close()


def _ready_versions(url: str) -> set[int]:
    return {v for v in range(1, 6) if promotion.version_ready(url, ANSWER_MODEL, v)}


def _pass(
    spec: PhoenixDeploymentSpec, quality: QualityStatus | None, job: str, report: str, url: str
) -> tuple[QualityStatus, list[tuple[str, str, str]]]:
    """One reconcile pass on the model's part: fold the report, then load what status pins."""
    outcome = apply_reports(spec, quality, {"fineTuning": _job(report, job)}, NOW)
    assert outcome.quality is not None
    events = list(outcome.events)
    version = pending_version(outcome.quality)
    if version is None:
        return outcome.quality, events
    loaded, detail = promotion.load_version(
        TritonModelControl(timeout_s=60).load, [url], spec, BatchingConfig.from_spec(spec), version
    )
    updated, event = record_rollout(outcome.quality, version, loaded, detail, NOW)
    return updated, [*events, event]


@pytest.mark.triton
@pytest.mark.slow
def test_triton_serves_the_promoted_version_and_never_a_rejected_one(tmp_path: Path) -> None:
    spec = answer_model_spec(_spec(min_score=0.5, max_drop=0.02))
    repo = tmp_path / "models"
    write_model_version(repo, ANSWER_MODEL, 1, BASE)
    write_model_config(repo, ANSWER_MODEL, to_pbtxt(model_config_dict(spec, version=1)))
    questions = list(HELD_OUT)
    server = LocalTriton(repo, [ANSWER_MODEL], log_path=tmp_path / "triton.log").start()
    try:
        assert _ask(server.http_url, questions) == [BASE[q] for q in questions]

        # A bad candidate (answers shuffled): below the floor, version 1 keeps serving.
        write_model_version(repo, ANSWER_MODEL, 2, SHUFFLED)
        bad = _offline(SHUFFLED) | {}
        assert bad["answer_f1"] < 0.5
        quality, events = _pass(
            spec, None, "ft-1", _report(2, bad["answer_f1"], 1, _offline(BASE)["answer_f1"]), server.http_url
        )
        assert quality.model is not None and quality.model.serving_version == 1
        assert [e[1] for e in events] == ["ModelRejected", "ModelLoaded"]
        assert _ask(server.http_url, questions) == [BASE[q] for q in questions]
        assert _ready_versions(server.http_url) == {1}

        # A pod restarting from the ConfigMap (rendered from status) still serves 1, although 2
        # is now the newest directory and Triton's default policy would pick it.
        write_model_config(
            repo, ANSWER_MODEL, to_pbtxt(model_config_dict(spec, version=quality.model.serving_version))
        )
        server.stop()
        server.start()
        assert _ask(server.http_url, questions) == [BASE[q] for q in questions]

        # A good candidate: promoted, loaded live, and the served answers score what was reported.
        write_model_version(repo, ANSWER_MODEL, 3, TUNED)
        good = _offline(TUNED)
        quality, events = _pass(spec, quality, "ft-2", _report(3, good["answer_f1"]), server.http_url)
        assert [e[1] for e in events] == ["ModelPromoted", "ModelLoaded"], events
        assert quality.model is not None
        assert (quality.model.serving_version, quality.model.previous_version) == (3, 1)
        assert quality.model.applied_version == 3
        served = _ask(server.http_url, questions)
        assert served == [TUNED[q] for q in questions]
        assert answer_scores(served, [HELD_OUT[q] for q in questions]).answer_f1 == pytest.approx(
            good["answer_f1"]
        )
        assert _ready_versions(server.http_url) == {3}
        condition = model_condition(quality)
        assert condition is not None and condition["status"] == "True" and "1.0000" in condition["message"]

        # A candidate that reports well but cannot load (its checkpoint is missing): undone,
        # Triton keeps serving version 3.
        broken = write_model_version(repo, ANSWER_MODEL, 4, TUNED)
        (broken / "answers.json").unlink()
        quality, events = _pass(spec, quality, "ft-3", _report(4, 1.0), server.http_url)
        assert [e[1] for e in events] == ["ModelPromoted", "ModelLoadFailed"], events
        assert quality.model is not None and quality.model.serving_version == 3
        assert quality.model.gate is not None and quality.model.gate.reason == "LoadFailed"
        assert _ask(server.http_url, questions) == [TUNED[q] for q in questions]
        assert UNKNOWN_ANSWER not in served
    finally:
        server.stop()


def test_a_promoted_version_changes_the_config_map_and_the_fine_tune_job_only() -> None:
    """Live reloads make the version change: the Triton pods must not roll, new pods start pinned."""
    spec = _spec()
    target = Target(name="chat", namespace="team")
    before = render_all(target, spec)
    after = render_all(target, spec, serving_version=3)
    changed = {a["kind"] for a, b in zip(before, after, strict=True) if a != b}
    assert changed == {"ConfigMap", "CronJob"}
    config_map = next(o for o in after if o["metadata"]["name"] == config_map_name("chat"))
    assert served_versions_of(json.loads(config_map["data"]["config.json"])) == (3,)
    cron = next(o for o in after if o["metadata"]["name"] == "chat-fine-tune")
    container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/acme/llm-finetune:1.4"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "PHOENIX_MODEL_NAME": "llama-chat",
        "PHOENIX_MODEL_REPOSITORY": "s3://models/llama",
        "PHOENIX_SERVING_VERSION": "3",
    }
    labels_ = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels_["app.kubernetes.io/component"] in QUALITY_COMPONENTS


def test_a_fine_tune_job_writes_into_a_pvc_repository_where_triton_reads_it() -> None:
    doc = copy.deepcopy(valid_doc())["spec"]
    doc["model"]["repository"] = {"pvc": {"claimName": "models", "path": "/llm", "readOnly": True}}
    doc["maintenance"] = {"fineTuning": {"schedule": "@weekly", "image": "acme/ft:1"}}
    spec = PhoenixDeploymentSpec.model_validate(doc)
    pod = fine_tune_cron_job(Target(name="chat", namespace="team"), spec, None)["spec"]["jobTemplate"]
    pod_spec = pod["spec"]["template"]["spec"]
    assert pod_spec["volumes"] == [
        {"name": "model-repository", "persistentVolumeClaim": {"claimName": "models"}}
    ]
    container = pod_spec["containers"][0]
    assert container["volumeMounts"] == [{"name": "model-repository", "mountPath": "/models"}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PHOENIX_MODEL_REPOSITORY"] == "/models/llm" and "PHOENIX_SERVING_VERSION" not in env


# --------------------------------------------------------------------------------------------
# the operator's side on the local cluster: finished job pod → status → live Triton → ConfigMap


def _model_events(outcome: Any) -> list[str]:
    """The promotion's Events, then the condition changes, in the order the reconciler emits them."""
    return [reason for _, reason, _ in outcome.events if reason.startswith("Model")]


def _config_map_version(kube: Kube, name: str, ns: str) -> tuple[int, ...] | None:
    config_map = kube.get("v1", "ConfigMap", config_map_name(name), ns)
    assert config_map is not None
    return served_versions_of(json.loads(config_map["data"]["config.json"]))


@pytest.mark.integration
@pytest.mark.triton
@pytest.mark.slow
def test_the_reconciler_promotes_a_fine_tuned_version_on_the_cluster(
    kube_cluster: Any,
    crds_installed: None,
    kube_namespace: str,
    session_operator_paused: None,
    tmp_path: Path,
) -> None:
    """The reconciler reads the fine-tuning job's pod, gates, loads on Triton, pins the ConfigMap.

    The Triton pods are kwok's; their EndpointSlice addresses are sent to one real tritonserver
    through the operator's endpoint overrides, as in the control-loop tests.
    """
    ns, name = kube_namespace, "tuned"
    spec = answer_model_spec(_spec(min_score=0.5, max_drop=0.02))
    repo = tmp_path / "models"
    write_model_version(repo, ANSWER_MODEL, 1, BASE)
    write_model_config(repo, ANSWER_MODEL, to_pbtxt(model_config_dict(spec)))
    server = LocalTriton(repo, [ANSWER_MODEL], log_path=tmp_path / "triton.log").start()
    kube = Kube(kube_cluster.api_client)
    custom = client.CustomObjectsApi(kube_cluster.api_client)
    doc = valid_doc(name)
    doc["spec"] = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc["spec"].pop("retrieval", None)
    doc["spec"]["autoscaling"] = {"mode": "off"}
    reconciler = Reconciler(
        kube,
        OperatorSettings(endpoint_overrides={"*:8000": server.http_url}),
        TritonModelControl(timeout_s=60),
    )

    def reconcile() -> Any:
        body = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
        outcome = reconciler.reconcile(body)
        if outcome.status_patch:  # as the runtime does: through the writer, checked against the model
            current = body.get("status") or {}
            reconciler.writer.perform([WriteStatus(name, ns, current, outcome.status_patch)])
        return outcome

    def status() -> dict[str, Any]:
        body: Any = custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)
        return dict(body.get("status") or {})

    def condition() -> dict[str, Any] | None:
        return next((c for c in status().get("conditions") or [] if c["type"] == "ModelPromoted"), None)

    try:
        custom.create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)
        reconcile()
        apps = client.AppsV1Api(kube_cluster.api_client)
        wait_for(
            lambda: (apps.read_namespaced_deployment(f"{name}-triton", ns).status.ready_replicas or 0) >= 1,
            timeout=60,
            description="the Triton Deployment's pod ready (kwok)",
        )
        assert condition() is None and _config_map_version(kube, name, ns) is None
        cron = kube.get("batch/v1", "CronJob", f"{name}-fine-tune", ns)
        assert cron is not None
        questions = list(HELD_OUT)

        # A bad candidate: rejected, version 1 pinned live and in the ConfigMap.
        write_model_version(repo, ANSWER_MODEL, 2, SHUFFLED)
        bad = _report(2, _offline(SHUFFLED)["answer_f1"], 1, _offline(BASE)["answer_f1"])
        finished_job_pod(kube_cluster, ns, name, "fine-tuning", f"{name}-fine-tune-1", bad)
        outcome = reconcile()
        assert _model_events(outcome) == ["ModelRejected", "ModelLoaded", "ModelPromotedFalse"]
        rejected = condition()
        assert rejected is not None and (rejected["status"], rejected["reason"]) == ("False", "BelowMinScore")
        assert status()["quality"]["model"]["servingVersion"] == 1
        assert _config_map_version(kube, name, ns) == (1,)
        assert _ask(server.http_url, questions) == [BASE[q] for q in questions]
        assert _ready_versions(server.http_url) == {1}

        # A good one: loaded live on the endpoint, then pinned for new pods and told to the job.
        write_model_version(repo, ANSWER_MODEL, 3, TUNED)
        good = _report(3, _offline(TUNED)["answer_f1"])
        finished_job_pod(kube_cluster, ns, name, "fine-tuning", f"{name}-fine-tune-2", good)
        outcome = reconcile()
        assert _model_events(outcome) == ["ModelPromoted", "ModelLoaded", "ModelPromotedTrue"]
        promoted = condition()
        assert promoted is not None and (promoted["status"], promoted["reason"]) == ("True", "Promoted")
        model = status()["quality"]["model"]
        assert (model["servingVersion"], model["previousVersion"], model["appliedVersion"]) == (3, 1, 3)
        assert _ask(server.http_url, questions) == [TUNED[q] for q in questions]
        assert _config_map_version(kube, name, ns) == (3,)
        cron = kube.get("batch/v1", "CronJob", f"{name}-fine-tune", ns)
        assert cron is not None
        env = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "PHOENIX_SERVING_VERSION", "value": "3"} in env

        # Converged: the next pass loads nothing and writes nothing.
        outcome = reconcile()
        assert _model_events(outcome) == [] and outcome.writes == []
    finally:
        server.stop()
