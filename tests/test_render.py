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
from phoenix_operator.api.documents import parse_phoenix_deployments
from phoenix_operator.api.models import (
    ClassifierSource,
    PhoenixDeployment,
    PhoenixDeploymentSpec,
    PvcSource,
    TritonSpec,
)
from phoenix_operator.reconcile.reconciler import event_type
from phoenix_operator.render.objects import (
    COMPONENT_LABEL,
    SPEC_HASH_ANNOTATION,
    Capabilities,
    NetworkAccess,
    Target,
    generated_secret_manifest,
    generated_secrets,
    render_all,
)
from phoenix_operator.render.secrets import milvus_token, triton_control_headers
from phoenix_operator.render.tritonconfig import (
    BatchingConfig,
    batching_of,
    model_config_dict,
    normalize_config,
    to_load_json,
    to_pbtxt,
)
from phoenix_operator.status.conditions import (
    DeploymentState,
    Problem,
    Snapshot,
    changed_conditions,
    desired_conditions,
    embedder_state,
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


def _by_kind(objects: list[dict[str, Any]], component: str | None = None) -> dict[str, dict[str, Any]]:
    """Objects by kind; without ``component``, everything but the gateway's (Triton's Deployment...)."""
    return {
        o["kind"]: o
        for o in objects
        if (o["metadata"]["labels"][COMPONENT_LABEL] == component)
        or (component is None and o["metadata"]["labels"][COMPONENT_LABEL] != "gateway")
    }


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


# --------------------------------------------------------------------------------------------
# gateway


def _gateway(pd: PhoenixDeployment, **caps: bool) -> dict[str, dict[str, Any]]:
    return _by_kind(_render(pd, **caps), component="gateway")


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_gateway_args_point_at_this_deployments_triton_and_managed_milvus() -> None:
    gateway = _gateway(_load(ROOT / "examples" / "production.yaml"))
    container = _container(gateway["Deployment"])
    assert container["command"] == ["phoenix", "gateway"]
    assert container["args"] == [
        "--spec=/etc/phoenix/spec.yaml",
        "--triton-url=chat-prod-triton.default.svc:8001",
        "--milvus-uri=http://chat-prod-milvus.default.svc:19530",
        "--host=0.0.0.0",
        "--port=8000",
        "--shutdown-timeout=120",
    ]
    # The Triton address is the Triton Service's gRPC port.
    triton_service = _by_kind(_render(_load(ROOT / "examples" / "production.yaml")), component="triton")[
        "Service"
    ]
    assert triton_service["metadata"]["name"] == "chat-prod-triton"
    assert {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP"} in triton_service["spec"][
        "ports"
    ]


def test_gateway_without_retrieval_gets_no_milvus_and_external_milvus_gets_its_uri_and_token() -> None:
    minimal = _container(_gateway(_load(ROOT / "examples" / "minimal.yaml"))["Deployment"])
    assert not any(a.startswith("--milvus-uri") for a in minimal["args"])
    assert not any(e["name"] == "PHOENIX_MILVUS_TOKEN" for e in minimal["env"])

    external = _container(_gateway(_load(ROOT / "examples" / "external-milvus.yaml"))["Deployment"])
    assert "--milvus-uri=http://milvus.vector-db.svc:19530" in external["args"]
    (token,) = [e for e in external["env"] if e["name"] == "PHOENIX_MILVUS_TOKEN"]
    assert token == {
        "name": "PHOENIX_MILVUS_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "milvus-credentials", "key": "token"}},
    }
    assert "root:Milvus" not in yamlio.dump_all(_render(_load(ROOT / "examples" / "external-milvus.yaml")))


def test_gateway_classifier_from_a_pvc_is_mounted_and_from_a_uri_is_passed() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    pd.spec.gateway.classifier = ClassifierSource(pvc=PvcSource(claim_name="intents", path="/v3/"))
    deployment = _gateway(pd)["Deployment"]
    container = _container(deployment)
    assert "--classifier=/var/lib/phoenix/classifier/v3" in container["args"]
    assert {"name": "classifier", "mountPath": "/var/lib/phoenix/classifier", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {
        "name": "classifier",
        "persistentVolumeClaim": {"claimName": "intents", "readOnly": True},
    } in deployment["spec"]["template"]["spec"]["volumes"]

    pd.spec.gateway.classifier = ClassifierSource(uri="https://example.com/c.tar.gz")
    container = _container(_gateway(pd)["Deployment"])
    assert "--classifier-uri=https://example.com/c.tar.gz" in container["args"]
    assert not any(a.startswith("--classifier=") for a in container["args"])
    assert all(m["name"] != "classifier" for m in container["volumeMounts"])


def test_gateway_spec_file_parses_back_to_the_deployments_spec() -> None:
    for source in SOURCES:
        pd = _load(source)
        text = _gateway(pd)["ConfigMap"]["data"]["spec.yaml"]
        served = PhoenixDeploymentSpec.model_validate(yaml.safe_load(text))
        expected = pd.spec.model_copy(deep=True)
        expected.triton.replicas = TritonSpec().replicas  # left out: scaling Triton must not roll the gateway
        assert served == expected, source.stem


def test_gateway_rolls_on_a_spec_change_but_not_on_triton_scaling_or_tuned_batching() -> None:
    pd = _load(Path(__file__).parent / "data" / "cpu-pvc.yaml")
    target = Target(name="cpu-pvc", namespace="team-a", uid="uid-1")

    def template(spec: PhoenixDeploymentSpec, batching: BatchingConfig | None = None) -> Any:
        return _by_kind(render_all(target, spec, batching), component="gateway")["Deployment"]["spec"][
            "template"
        ]

    base = template(pd.spec)
    scaled = pd.spec.model_copy(deep=True)
    scaled.triton.replicas = 7
    assert template(scaled) == base
    assert template(pd.spec, BatchingConfig((16,), 9000, 1)) == base
    routed = pd.spec.model_copy(deep=True)
    routed.gateway.top_k = 8
    changed = template(routed)
    assert (
        changed["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
        != base["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    )
    assert changed["spec"] == base["spec"]


def test_gateway_pods_are_restricted_with_writable_tmp_and_cache_only() -> None:
    deployment = _gateway(_load(ROOT / "examples" / "production.yaml"))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = _container(deployment)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    ctx = container["securityContext"]
    assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty_dirs}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert writable == {"/tmp", env["PHOENIX_CACHE_DIR"]}
    readonly = [m for m in container["volumeMounts"] if m["name"] not in empty_dirs]
    assert all(m["readOnly"] for m in readonly)
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == {
        "requests": {"cpu": "500m", "memory": "768Mi"},
        "limits": {"memory": "1536Mi"},
    }
    assert deployment["spec"]["replicas"] == 2
    # The kubelet must not kill the pod before the gateway's own drain (--shutdown-timeout) ends.
    (drain,) = [a for a in container["args"] if a.startswith("--shutdown-timeout=")]
    assert pod["terminationGracePeriodSeconds"] > float(drain.split("=", 1)[1])


def test_gateway_service_forwards_port_80_to_the_containers_http_port() -> None:
    gateway = _gateway(_load(ROOT / "examples" / "production.yaml"))
    (port,) = gateway["Service"]["spec"]["ports"]
    assert port["port"] == 80 and port["name"] == "http"
    named = {p["name"]: p["containerPort"] for p in _container(gateway["Deployment"])["ports"]}
    assert named[port["targetPort"]] == 8000
    pod_labels = gateway["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert gateway["Service"]["spec"]["selector"].items() <= pod_labels.items()
    # Triton's Service must not select gateway pods (nor the reverse).
    triton_selector = _by_kind(_render(_load(ROOT / "examples" / "production.yaml")), component="triton")[
        "Service"
    ]["spec"]["selector"]
    assert not triton_selector.items() <= pod_labels.items()


def test_gateway_pod_monitor_only_with_the_prometheus_operator_and_disabled_gateway_renders_nothing() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    assert "PodMonitor" not in _gateway(pd)
    monitor = _gateway(pd, prometheus_operator=True)["PodMonitor"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    pd.spec.gateway.enabled = False
    rendered = _render(pd, prometheus_operator=True)
    # Only the spec file stays: the refresh and evaluation jobs of the operator's image read it.
    assert [o["metadata"]["name"] for o in rendered if "gateway" in o["metadata"]["name"]] == [
        "chat-prod-gateway-spec"
    ]
    assert _by_kind(rendered)["Deployment"]["metadata"]["name"] == "chat-prod-triton"


# --------------------------------------------------------------------------------------------
# gateway conditions (pure: spec and observed Deployments -> conditions)


def _conditions(snap: Snapshot) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in desired_conditions(snap)}


def test_embedder_dimension_mismatch_names_both_numbers_and_only_exists_with_gateway_and_retrieval() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    assert pd.spec.retrieval is not None
    match = embedder_state(pd.spec)
    assert match is not None and match.compatible
    pd.spec.retrieval.collection.dimension = 768
    mismatch = embedder_state(pd.spec)
    assert mismatch is not None and not mismatch.compatible
    assert mismatch.reason == "DimensionMismatch"
    assert "768" in mismatch.message and "384" in mismatch.message
    pd.spec.gateway.enabled = False
    assert embedder_state(pd.spec) is None
    assert embedder_state(_load(ROOT / "examples" / "minimal.yaml").spec) is None


def test_gateway_ready_follows_availability_and_gates_ready() -> None:
    triton = DeploymentState(exists=True, desired=2, replicas=2, ready=2, available=2, updated=2)
    # Rolling: the old pods still serve, so the gateway stays available.
    rolling = DeploymentState(exists=True, desired=2, replicas=3, ready=3, available=2, updated=1)
    conds = _conditions(Snapshot(triton=triton, gateway=rolling))
    assert conds["GatewayReady"]["status"] == "True" and conds["GatewayReady"]["reason"] == "Available"
    assert (
        conds["Ready"]["status"] == "True" and "2/2 gateway replicas available" in conds["Ready"]["message"]
    )

    short = DeploymentState(exists=True, desired=2, replicas=2, ready=1, available=1, updated=2)
    pending = [Problem("Unschedulable", "pod chat-gateway-x cannot be scheduled: 0/5 nodes")]
    conds = _conditions(Snapshot(triton=triton, gateway=short, gateway_unschedulable=pending))
    assert conds["GatewayReady"]["status"] == "False" and conds["GatewayReady"]["reason"] == "Unschedulable"
    assert conds["Ready"]["reason"] == "GatewayNotReady"
    assert conds["Degraded"]["status"] == "True" and "chat-gateway-x" in conds["Degraded"]["message"]

    conds = _conditions(Snapshot(triton=triton, gateway=DeploymentState(exists=False)))
    assert conds["GatewayReady"]["reason"] == "Creating"
    assert "GatewayReady" not in _conditions(Snapshot(triton=triton))


def test_embedder_mismatch_degrades_but_leaves_ready_alone() -> None:
    triton = DeploymentState(exists=True, desired=1, replicas=1, ready=1, available=1, updated=1)
    gateway = DeploymentState(exists=True, desired=2, replicas=2, ready=2, available=2, updated=2)
    pd = _load(ROOT / "examples" / "production.yaml")
    assert pd.spec.retrieval is not None
    pd.spec.retrieval.collection.dimension = 768
    conds = _conditions(Snapshot(triton=triton, gateway=gateway, embedder=embedder_state(pd.spec)))
    assert conds["EmbedderCompatible"]["status"] == "False"
    assert conds["Degraded"]["reason"] == "DimensionMismatch"
    assert conds["Ready"]["status"] == "True"
    assert event_type(conds["EmbedderCompatible"]) == "Warning"


# ------------------------------------------------------------------------------------------------
# hardening: security contexts and NetworkPolicies


def _pod_templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod spec of every workload, by ``Kind/name``."""
    pods = {}
    for obj in objects:
        spec = obj.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template is not None:
            pods[f"{obj['kind']}/{obj['metadata']['name']}"] = template["spec"]
    return pods


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    return container.get("securityContext", {}).get(key, pod.get("securityContext", {}).get(key))


def test_every_container_drops_capabilities_and_escalation_under_runtime_default_seccomp() -> None:
    objects = _render(_load(ROOT / "examples" / "production.yaml"))
    pods = _pod_templates(objects)
    assert {
        "StatefulSet/chat-prod-milvus",
        "CronJob/chat-prod-retrain",
        "Deployment/chat-prod-triton",
    } <= set(pods)
    for name, pod in pods.items():
        for container in pod["containers"]:
            assert _effective(pod, container, "allowPrivilegeEscalation") is False, name
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, name
            assert _effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, name


def test_only_milvus_and_bring_your_own_image_jobs_may_run_as_root() -> None:
    pods = _pod_templates(_render(_load(ROOT / "examples" / "production.yaml")))
    may_be_root = {
        name
        for name, pod in pods.items()
        if not all(_effective(pod, c, "runAsNonRoot") for c in pod["containers"])
    }
    # retrain runs ghcr.io/example/finetune (the user's image); refresh and evaluate run ours.
    assert may_be_root == {"StatefulSet/chat-prod-milvus", "CronJob/chat-prod-retrain"}
    triton = pods["Deployment/chat-prod-triton"]
    assert triton["securityContext"]["runAsUser"] == 1000 == triton["securityContext"]["fsGroup"]


def test_read_only_roots_have_writable_empty_dirs_where_the_images_write() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    pods = _pod_templates(_render(pd))
    expected = {
        "Deployment/chat-prod-triton": {"/tmp", "/dev/shm"},
        "StatefulSet/chat-prod-milvus": {"/tmp", "/run/milvus"},
        "CronJob/chat-prod-kb-refresh": {"/tmp", "/var/cache/phoenix"},
    }
    for name, writable in expected.items():
        pod = pods[name]
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        assert {m["mountPath"] for m in container["volumeMounts"] if m["name"] in empty} == writable, name
    triton_env = {
        e["name"]: e.get("value") for e in pods["Deployment/chat-prod-triton"]["containers"][0]["env"]
    }
    assert triton_env["HOME"] == "/tmp"
    # The model is downloaded (s3://) into /tmp: no size limit that would evict the pod.
    tmp = [v for v in pods["Deployment/chat-prod-triton"]["volumes"] if v["name"] == "tmp"]
    assert tmp == [{"name": "tmp", "emptyDir": {}}]
    # The user's image may write anywhere in its own filesystem.
    (user,) = pods["CronJob/chat-prod-retrain"]["containers"]
    assert user["securityContext"]["readOnlyRootFilesystem"] is False


def test_a_users_home_for_triton_is_kept() -> None:
    pd = _load(Path(__file__).parent / "data" / "cpu-pvc.yaml")
    data = pd.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["triton"]["env"] = [{"name": "HOME", "value": "/models"}]
    spec = PhoenixDeploymentSpec.model_validate(data)
    triton = _by_kind(render_all(Target("x", "ns"), spec))["Deployment"]
    env = triton["spec"]["template"]["spec"]["containers"][0]["env"]
    assert [e for e in env if e["name"] == "HOME"] == [{"name": "HOME", "value": "/models"}]


def _policies(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "NetworkPolicy"}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and In/NotIn/Exists expressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        match expr["operator"]:
            case "In":
                ok = value in expr["values"]
            case "NotIn":
                ok = value not in expr["values"]
            case "Exists":
                ok = value is not None
            case _:
                ok = value is None
        if not ok:
            return False
    return True


def _allowed(policy: dict[str, Any], pod_labels: dict[str, str], port: int) -> bool:
    """Whether a pod of this namespace with ``pod_labels`` may reach ``port`` under ``policy``."""
    return any(
        any(p["port"] == port for p in rule["ports"])
        and any(
            "namespaceSelector" not in peer and _selects(peer["podSelector"], pod_labels)
            for peer in rule["from"]
        )
        for rule in policy["spec"]["ingress"]
    )


def test_network_policies_admit_the_gateway_and_milvus_clients_only() -> None:
    objects = _render(_load(ROOT / "examples" / "production.yaml"))
    policies = _policies(objects)
    assert set(policies) == {"chat-prod-triton", "chat-prod-milvus"}
    pod_labels = {
        f"{o['kind']}/{o['metadata']['name']}": (
            o["spec"].get("template") or o["spec"]["jobTemplate"]["spec"]["template"]
        )["metadata"]["labels"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "CronJob")
    }
    triton, milvus = policies["chat-prod-triton"], policies["chat-prod-milvus"]
    assert _selects(triton["spec"]["podSelector"], pod_labels["Deployment/chat-prod-triton"])
    assert _selects(milvus["spec"]["podSelector"], pod_labels["StatefulSet/chat-prod-milvus"])
    assert not _selects(milvus["spec"]["podSelector"], pod_labels["Deployment/chat-prod-triton"])
    # Every pod of ours given the Milvus address may reach Milvus; the rest may not.
    for name, obj in ((f"{o['kind']}/{o['metadata']['name']}", o) for o in objects):
        if name not in pod_labels:
            continue
        talks_to_milvus = "chat-prod-milvus.default.svc:19530" in str(obj["spec"])
        assert _allowed(milvus, pod_labels[name], 19530) == talks_to_milvus, name
    assert _allowed(triton, pod_labels["Deployment/chat-prod-gateway"], 8001)
    assert not _allowed(triton, pod_labels["CronJob/chat-prod-evaluate"], 8001)
    assert not _allowed(triton, pod_labels["Deployment/chat-prod-gateway"], 8002)


def test_network_policy_peers_follow_the_operator_settings_and_can_be_turned_off() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    target = Target("chat-prod", "default", uid="u")
    access = NetworkAccess(
        operator_namespaces={"kubernetes.io/metadata.name": "phoenix-system"},
        operator_pods={"app.kubernetes.io/instance": "phx"},
        prometheus_namespaces={"team": "observability"},
    )
    policies = _policies(render_all(target, pd.spec, network=access))
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "phoenix-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "phx"}},
    }
    for policy in policies.values():
        assert any(operator_peer in rule["from"] for rule in policy["spec"]["ingress"])
    scrape = [
        r
        for r in policies["chat-prod-triton"]["spec"]["ingress"]
        if r["ports"] == [{"protocol": "TCP", "port": 8002}]
    ]
    assert scrape == [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}],
            "ports": scrape[0]["ports"],
        }
    ]
    off = NetworkAccess(enabled=False)
    assert _policies(render_all(target, pd.spec, network=off)) == {}


def test_no_triton_policy_without_gateway_and_no_milvus_policy_without_its_statefulset() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    target = Target("chat-prod", "default", uid="u")
    spec = pd.spec.model_copy(update={"gateway": pd.spec.gateway.model_copy(update={"enabled": False})})
    # Without the gateway, clients call Triton itself: isolating it would cut them off.
    assert set(_policies(render_all(target, spec))) == {"chat-prod-milvus"}
    with_operator = render_all(target, pd.spec, capabilities=Capabilities(milvus_operator=True))
    assert set(_policies(with_operator)) == {"chat-prod-triton"}
    external = _load(ROOT / "examples" / "external-milvus.yaml")
    assert external.spec.gateway.enabled and "StatefulSet" not in {o["kind"] for o in _render(external)}
    assert set(_policies(_render(external))) == {f"{external.metadata['name']}-triton"}


def test_evaluation_reaches_milvus_only_when_it_measures_hit_at_k() -> None:
    data = _load(ROOT / "examples" / "production.yaml").spec.model_dump(mode="json", by_alias=True)
    target = Target("chat-prod", "default", uid="u")
    evaluation = render_all(target, PhoenixDeploymentSpec.model_validate(data))
    labels = _by_kind(evaluation, "evaluation")["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]
    pod_labels = labels["metadata"]["labels"]
    assert not _allowed(_policies(evaluation)["chat-prod-milvus"], pod_labels, 19530)
    data["monitoring"]["evaluation"]["hitAtK"] = True
    measured = render_all(target, PhoenixDeploymentSpec.model_validate(data))
    assert "--milvus-uri=http://chat-prod-milvus.default.svc:19530" in str(measured)
    assert _allowed(_policies(measured)["chat-prod-milvus"], pod_labels, 19530)


# --------------------------------------------------------------------------------------------
# generated Secrets: referenced by the children, never carried in them


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _secret_ref(entry: dict[str, Any]) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_triton_model_control_needs_the_generated_key_from_its_secret() -> None:
    triton = _by_kind(_render(_load(ROOT / "examples" / "minimal.yaml")))["Deployment"]
    container = _container(triton)
    restricted = [a for a in container["args"] if "restricted" in a]
    assert restricted == [
        f"--{flag}=model-repository,model-config,shared-memory,trace,logging:"
        "phoenix-control-key=$(PHOENIX_TRITON_CONTROL_KEY)"
        for flag in ("http-restricted-api", "grpc-restricted-protocol")
    ]
    assert _secret_ref(_env(container)["PHOENIX_TRITON_CONTROL_KEY"]) == (
        "chat-minimal-triton-control",
        "key",
    )
    # The postStart load is a model-control call too: it sends the key from the same variable.
    hook = container["lifecycle"]["postStart"]["exec"]["command"][2]
    assert "{'phoenix-control-key': os.environ.get('PHOENIX_TRITON_CONTROL_KEY', '')}" in hook


def test_managed_milvus_runs_with_auth_and_the_generated_root_password() -> None:
    pd = _load(ROOT / "examples" / "production.yaml")
    statefulset = _by_kind(_render(pd))["StatefulSet"]
    env = _env(statefulset["spec"]["template"]["spec"]["containers"][0])
    assert env["COMMON_SECURITY_AUTHORIZATIONENABLED"]["value"] == "true"
    assert _secret_ref(env["COMMON_SECURITY_DEFAULTROOTPASSWORD"]) == ("chat-prod-milvus-root", "password")
    milvus = _by_kind(_render(pd, milvus_operator=True))["Milvus"]["spec"]
    assert milvus["config"]["common"]["security"]["authorizationEnabled"] is True
    (password,) = [
        e for e in milvus["components"]["env"] if e["name"] == "COMMON_SECURITY_DEFAULTROOTPASSWORD"
    ]
    assert _secret_ref(password) == ("chat-prod-milvus-root", "password")


def test_every_managed_milvus_client_composes_its_token_from_the_root_secret() -> None:
    data = _load(ROOT / "examples" / "production.yaml").spec.model_dump(mode="json", by_alias=True)
    data["monitoring"]["evaluation"]["hitAtK"] = True
    objects = render_all(Target("chat-prod", "default", uid="u"), PhoenixDeploymentSpec.model_validate(data))
    containers = {
        f"{o['kind']}/{o['metadata']['name']}": (
            o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            if o["kind"] == "CronJob"
            else o["spec"]["template"]["spec"]
        )["containers"][0]
        for o in objects
        if o["kind"] in {"Deployment", "CronJob"}
    }
    clients = {"Deployment/chat-prod-gateway", "CronJob/chat-prod-kb-refresh", "CronJob/chat-prod-evaluate"}
    for name, container in containers.items():
        env = _env(container)
        if name not in clients:
            assert "PHOENIX_MILVUS_TOKEN" not in env, name
            continue
        assert _secret_ref(env["PHOENIX_MILVUS_USER"]) == ("chat-prod-milvus-root", "username"), name
        assert _secret_ref(env["PHOENIX_MILVUS_PASSWORD"]) == ("chat-prod-milvus-root", "password"), name
        assert env["PHOENIX_MILVUS_TOKEN"]["value"] == "$(PHOENIX_MILVUS_USER):$(PHOENIX_MILVUS_PASSWORD)"
        # Kubernetes expands $(VAR) only from variables defined earlier in the list.
        names = [e["name"] for e in container["env"]]
        assert names.index("PHOENIX_MILVUS_TOKEN") > names.index("PHOENIX_MILVUS_PASSWORD"), name
        if name.startswith("CronJob/"):
            assert "--token-env=PHOENIX_MILVUS_TOKEN" in container["args"], name


def test_generated_secrets_are_owned_immutable_and_only_what_the_spec_needs() -> None:
    target = Target("chat-prod", "ns", uid="uid-9")
    production = _load(ROOT / "examples" / "production.yaml").spec
    external = _load(ROOT / "examples" / "external-milvus.yaml").spec
    assert [s.name for s in generated_secrets(target, production)] == [
        "chat-prod-triton-control",
        "chat-prod-milvus-root",
    ]
    assert [s.name for s in generated_secrets(target, external)] == ["chat-prod-triton-control"]
    control, root = generated_secrets(target, production)
    manifest = generated_secret_manifest(target, root, {"password": "p4ss"})
    assert manifest["immutable"] is True
    assert manifest["stringData"] == {"username": "root", "password": "p4ss"}
    (owner,) = manifest["metadata"]["ownerReferences"]
    assert owner["uid"] == "uid-9" and owner["controller"] is True
    with pytest.raises(ValueError, match="key"):
        generated_secret_manifest(target, control, {})


def test_secret_helpers_turn_secret_data_into_credentials() -> None:
    assert milvus_token({"username": "root", "password": "p4ss\n"}) == "root:p4ss"
    assert milvus_token({"username": "root", "password": " "}) is None
    assert milvus_token(None) is None
    assert triton_control_headers({"key": "k"}) == {"phoenix-control-key": "k"}
    assert triton_control_headers({"key": "k"}, grpc=True) == {
        "triton-grpc-protocol-phoenix-control-key": "k"
    }
    assert triton_control_headers({}) == {} and triton_control_headers(None) == {}


def test_yaml_is_emitted_by_libyaml_where_pyyaml_has_it() -> None:
    """The goldens above were written by PyYAML's pure-Python emitter: same text, five times faster."""
    assert not yaml.__with_libyaml__ or issubclass(yamlio._BlockDumper, yaml.CSafeDumper)


def test_a_condition_first_appearing_quiet_posts_no_event_but_every_later_change_does() -> None:
    def cond(type_: str, status: str, reason: str) -> dict[str, str]:
        return {"type": type_, "status": status, "reason": reason, "message": ""}

    first = [
        cond("Ready", "False", "Creating"),
        cond("Degraded", "False", "AsExpected"),
        cond("Progressing", "False", "Stable"),
    ]
    assert [c["type"] for c in changed_conditions([], first)] == ["Ready"]
    rolling = [cond("Progressing", "True", "RollingOut"), cond("Degraded", "True", "Unschedulable")]
    assert [c["type"] for c in changed_conditions([], rolling)] == ["Progressing", "Degraded"]
    assert [c["type"] for c in changed_conditions(rolling, first)] == ["Ready", "Degraded", "Progressing"]
