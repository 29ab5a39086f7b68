"""Renderer tests: golden files (spec → exact YAML) plus the properties reviews rely on.

Regenerate the golden files after an intended change with
`PHOENIX_UPDATE_GOLDEN=1 pytest tests/test_render.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from phoenix_operator import yamlio
from phoenix_operator.api.cli import parse_phoenix_deployments
from phoenix_operator.api.models import PhoenixDeployment
from phoenix_operator.render.objects import Capabilities, Target, render_all
from phoenix_operator.render.tritonconfig import (
    BatchingConfig,
    batching_of,
    model_config_dict,
    normalize_config,
    to_load_json,
    to_pbtxt,
)

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
SOURCES = sorted((ROOT / "examples").glob("*.yaml")) + sorted((Path(__file__).parent / "data").glob("*.yaml"))


def _load(path: Path) -> PhoenixDeployment:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (pd,) = parse_phoenix_deployments(docs)
    return pd


def _render(pd: PhoenixDeployment, **caps: bool) -> list[dict[str, Any]]:
    target = Target(name=pd.metadata["name"], namespace=pd.metadata.get("namespace", "default"), uid="uid-1")
    return render_all(target, pd.spec, capabilities=Capabilities(**caps))


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.stem)
def test_golden(source: Path) -> None:
    rendered = yamlio.dump_all(_render(_load(source), prometheus_operator=True))
    golden = GOLDEN / f"{source.stem}.yaml"
    if os.environ.get("PHOENIX_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"missing {golden}; run with PHOENIX_UPDATE_GOLDEN=1"
    assert rendered == golden.read_text()


def _by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_pbtxt_parses_back_to_the_same_config() -> None:
    pd = _load(Path(__file__).parent / "data" / "cpu-pvc.yaml")
    config = model_config_dict(pd.spec)
    parsed = text_format.Parse(to_pbtxt(config), model_config_pb2.ModelConfig())
    assert parsed.max_batch_size == 16
    assert list(parsed.dynamic_batching.preferred_batch_size) == [4, 8]
    assert parsed.dynamic_batching.priority_levels == 3
    assert parsed.dynamic_batching.default_priority_level == 2
    delay = parsed.dynamic_batching.priority_queue_policy[2]
    assert delay.timeout_action == model_config_pb2.ModelQueuePolicy.DELAY
    assert delay.default_timeout_microseconds == 2_000_000
    bulk = parsed.dynamic_batching.priority_queue_policy[3]
    assert bulk.max_queue_size == 100
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert not parsed.HasField("model_metrics")


def test_load_json_round_trips_the_batching() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    tuned = BatchingConfig(preferred_batch_sizes=(16, 32), max_queue_delay_us=7000, instance_count=1)
    import json

    served = json.loads(to_load_json(model_config_dict(pd.spec, tuned)))
    assert batching_of(served) == tuned
    assert served["dynamic_batching"]["max_queue_delay_microseconds"] == 7000  # an int, not "7000"


def test_normalize_config_turns_int64_strings_into_ints() -> None:
    grpc_style = {"dynamic_batching": {"max_queue_delay_microseconds": "100", "priority_levels": "3"}}
    assert normalize_config(grpc_style) == {
        "dynamic_batching": {"max_queue_delay_microseconds": 100, "priority_levels": 3}
    }


def test_auto_mode_leaves_replicas_to_the_autoscaler() -> None:
    auto = _by_kind(_render(_load(ROOT / "examples" / "production.yaml")))["Deployment"]
    assert "replicas" not in auto["spec"]
    off = _by_kind(_render(_load(Path(__file__).parent / "data" / "cpu-pvc.yaml")))["Deployment"]
    assert off["spec"]["replicas"] == 3


def test_every_child_is_owned_and_labelled() -> None:
    for obj in _render(_load(ROOT / "examples" / "production.yaml"), prometheus_operator=True):
        meta = obj["metadata"]
        assert meta["ownerReferences"][0]["uid"] == "uid-1", obj["kind"]
        assert meta["ownerReferences"][0]["controller"] is True
        assert meta["labels"]["app.kubernetes.io/instance"] == "chat-prod"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "phoenix-operator"


def test_gpu_requests_and_limits_follow_gpus_per_replica() -> None:
    deployment = _by_kind(_render(_load(ROOT / "examples" / "production.yaml")))["Deployment"]
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == "1" == resources["limits"]["nvidia.com/gpu"]
    cpu = _by_kind(_render(_load(Path(__file__).parent / "data" / "cpu-pvc.yaml")))["Deployment"]
    assert "nvidia.com/gpu" not in cpu["spec"]["template"]["spec"]["containers"][0]["resources"].get(
        "requests", {}
    )


def test_batching_change_does_not_roll_pods_but_a_model_change_does() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    base = _by_kind(_render(pd))["Deployment"]["spec"]["template"]
    target = Target(name="chat-prod", namespace="default", uid="uid-1")
    retuned = render_all(target, pd.spec, BatchingConfig((16, 32), 9000, 1))
    assert _by_kind(retuned)["Deployment"]["spec"]["template"] == base
    changed = pd.spec.model_copy(deep=True)
    changed.model.max_batch_size = 32
    changed.batching.preferred_batch_sizes = [8, 16]
    assert _by_kind(render_all(target, changed))["Deployment"]["spec"]["template"] != base


def test_milvus_operator_present_renders_a_milvus_cr_instead_of_a_statefulset() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    without = _by_kind(_render(pd))
    with_operator = _by_kind(_render(pd, milvus_operator=True))
    assert "StatefulSet" in without and "Milvus" not in without
    assert "Milvus" in with_operator and "StatefulSet" not in with_operator
    assert with_operator["Milvus"]["spec"]["dependencies"]["etcd"]["inCluster"]["deletionPolicy"] == "Retain"
    assert without["StatefulSet"]["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"


def test_external_milvus_renders_no_workload_and_passes_the_token_by_reference() -> None:
    pd = _load(ROOT / "examples" / "external-milvus.yaml")
    kinds = [o["kind"] for o in _render(pd)]
    assert "StatefulSet" not in kinds and "Milvus" not in kinds
    cron = _by_kind(_render(pd)).get("CronJob")
    assert cron is None  # no refresh job in that example
