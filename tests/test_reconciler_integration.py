"""The reconciler against a real API server (local cluster), a real operator process and Milvus Lite."""

from __future__ import annotations

import copy
import secrets
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from api_cases import INVALID_CASES, Case, invalid_doc, valid_doc
from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.cluster.waiting import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _custom(kube_cluster: Any) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube_cluster.api_client)


def _get_pd(kube_cluster: Any, ns: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = _custom(kube_cluster).get_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, name
    )
    return obj


def _condition(pd: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (pd.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def _wait_condition(
    kube_cluster: Any, ns: str, name: str, type_: str, status: str, timeout: float = 90
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        cond = _condition(_get_pd(kube_cluster, ns, name), type_)
        return cond if cond and cond["status"] == status else None

    return wait_for(check, timeout=timeout, interval=0.5, description=f"{name} {type_}={status}")


def _create(kube_cluster: Any, ns: str, doc: dict[str, Any]) -> None:
    _custom(kube_cluster).create_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, doc)


def _off_mode(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["spec"]["autoscaling"] = {"mode": "off"}
    return doc


@pytest.mark.parametrize("case", INVALID_CASES, ids=lambda c: c.id)
def test_api_server_rejects_invalid_naming_the_field(
    kube_cluster: Any, crds_installed: None, kube_namespace: str, case: Case
) -> None:
    with pytest.raises(ApiException) as info:
        _custom(kube_cluster).create_namespaced_custom_object(
            API_GROUP, API_VERSION, kube_namespace, PLURAL, invalid_doc(case), field_validation="Strict"
        )
    assert info.value.status in (400, 422), info.value.body
    assert case.field in info.value.body, info.value.body


def test_valid_document_is_accepted_and_defaulted(
    kube_cluster: Any, crds_installed: None, kube_namespace: str
) -> None:
    _create(kube_cluster, kube_namespace, _off_mode(valid_doc("defaults")))
    spec = _get_pd(kube_cluster, kube_namespace, "defaults")["spec"]
    assert spec["triton"]["gpusPerReplica"] == 1
    assert spec["batching"]["bounds"]["maxQueueDelayMicroseconds"] == 50_000
    assert spec["triton"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def create_named_token_secrets(kube_cluster: Any, ns: str, example: Path) -> list[str]:
    """The external-Milvus token Secrets an example names but (holding credentials) does not carry."""
    created = []
    for doc in yaml.safe_load_all(example.read_text()):
        if not doc or doc["kind"] != "PhoenixDeployment":
            continue
        external = ((doc["spec"].get("retrieval") or {}).get("milvus") or {}).get("external") or {}
        ref = external.get("tokenSecretRef")
        if ref:
            token = f"phoenix:{secrets.token_urlsafe(16)}"
            client.CoreV1Api(kube_cluster.api_client).create_namespaced_secret(
                ns,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name=ref["name"]), string_data={ref["key"]: token}
                ),
            )
            created.append(ref["name"])
    return created


def test_no_example_carries_a_credential() -> None:
    """Examples are applied as they are (GitOps points at the folder): a password there is a leak."""
    for example in EXAMPLES:
        text = example.read_text()
        assert "root:Milvus" not in text and 'Milvus"' not in text, example
        for doc in yaml.safe_load_all(text):
            if doc and doc["kind"] == "Secret":
                values = {**(doc.get("stringData") or {}), **(doc.get("data") or {})}
                assert all(v == "replace-me" for v in values.values()), (example, sorted(values))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_reaches_ready(
    kube_cluster: Any, operator_process: Any, kube_namespace: str, example: Path
) -> None:
    create_named_token_secrets(kube_cluster, kube_namespace, example)
    kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", str(example))
    names = [
        d["metadata"]["name"]
        for d in yaml.safe_load_all(example.read_text())
        if d and d["kind"] == "PhoenixDeployment"
    ]
    for name in names:
        ready = _wait_condition(kube_cluster, kube_namespace, name, "Ready", "True", timeout=120)
        assert ready["reason"] == "AllReady"
        pd = _get_pd(kube_cluster, kube_namespace, name)
        status = pd["status"]
        assert status["observedGeneration"] == pd["metadata"]["generation"]
        assert status["readyReplicas"] >= 1
        assert status["selector"]
        assert status["gpusAllocated"] == status["readyReplicas"] * pd["spec"]["triton"]["gpusPerReplica"]
        assert status["batching"]["preferredBatchSizes"] == sorted(
            pd["spec"]["batching"]["preferredBatchSizes"]
        )
        if pd["spec"].get("retrieval"):
            assert _condition(pd, "RetrievalReady")["status"] == "True"  # type: ignore[index]
            assert status["retrieval"]["collection"] == pd["spec"]["retrieval"]["collection"]["name"]
            assert status["retrieval"]["loaded"] is True


def _deployment(kube_cluster: Any, ns: str, name: str) -> client.V1Deployment:
    return client.AppsV1Api(kube_cluster.api_client).read_namespaced_deployment(f"{name}-triton", ns)


def test_spec_change_rolls_the_deployment_and_scale_subresource_works(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "rolling"
    doc = _off_mode(valid_doc(name))
    del doc["spec"]["retrieval"]
    _create(kube_cluster, ns, doc)
    _wait_condition(kube_cluster, ns, name, "Ready", "True")
    before = _deployment(kube_cluster, ns, name).spec.template.metadata.annotations

    _custom(kube_cluster).patch_namespaced_custom_object(
        API_GROUP,
        API_VERSION,
        ns,
        PLURAL,
        name,
        {"spec": {"model": {"maxBatchSize": 32}, "batching": {"preferredBatchSizes": [8, 16]}}},
    )
    wait_for(
        lambda: _deployment(kube_cluster, ns, name).spec.template.metadata.annotations != before,
        timeout=60,
        description="pod template to change",
    )
    _wait_condition(kube_cluster, ns, name, "Ready", "True")

    kube_cluster.kubectl("scale", "-n", ns, f"phx/{name}", "--replicas=3")
    wait_for(
        lambda: _deployment(kube_cluster, ns, name).spec.replicas == 3, timeout=60, description="replicas=3"
    )
    wait_for(
        lambda: (_get_pd(kube_cluster, ns, name).get("status") or {}).get("readyReplicas") == 3,
        timeout=90,
        description="status.readyReplicas=3",
    )
    scale = kube_cluster.kubectl("get", "-n", ns, f"phx/{name}", "--subresource=scale", "-o", "yaml").stdout
    assert yaml.safe_load(scale)["status"]["replicas"] == 3


def test_delete_garbage_collects_children(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "doomed"
    _create(kube_cluster, ns, _off_mode(valid_doc(name)))
    _wait_condition(kube_cluster, ns, name, "Ready", "True", timeout=120)
    core, apps = client.CoreV1Api(kube_cluster.api_client), client.AppsV1Api(kube_cluster.api_client)
    assert core.read_namespaced_config_map(f"{name}-triton-config", ns)
    # The generated Secrets are owned by the PhoenixDeployment too.
    control: Any = core.read_namespaced_secret(f"{name}-triton-control", ns)
    assert control.metadata.owner_references
    _custom(kube_cluster).delete_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, name)

    def gone() -> bool:
        selector = f"{API_GROUP}/deployment={name}"
        return not (
            apps.list_namespaced_deployment(ns, label_selector=selector).items
            or apps.list_namespaced_stateful_set(ns, label_selector=selector).items
            or core.list_namespaced_config_map(ns, label_selector=selector).items
            or core.list_namespaced_service(ns, label_selector=selector).items
            or core.list_namespaced_secret(ns, label_selector=selector).items
            or client.BatchV1Api(kube_cluster.api_client)
            .list_namespaced_cron_job(ns, label_selector=selector)
            .items
        )

    wait_for(gone, timeout=90, description="children garbage-collected")


def test_more_gpus_than_nodes_have_is_degraded_with_the_reason(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "greedy"
    doc = _off_mode(valid_doc(name))
    del doc["spec"]["retrieval"]
    doc["spec"]["triton"] = {"gpusPerReplica": 16}
    _create(kube_cluster, ns, doc)
    degraded = _wait_condition(kube_cluster, ns, name, "Degraded", "True")
    assert degraded["reason"] == "InsufficientGPU"
    assert "nvidia.com/gpu" in degraded["message"]
    ready = _condition(_get_pd(kube_cluster, ns, name), "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "InsufficientGPU"

    def warned() -> bool:
        # Kopf posts Events from a background queue, so one can land just after the status patch.
        events = (
            client.CoreV1Api(kube_cluster.api_client)
            .list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
            .items
        )
        return any(e.reason == "DegradedTrue" and e.type == "Warning" for e in events)

    wait_for(warned, timeout=30, interval=0.5, description="a DegradedTrue Warning Event")


def test_missing_secret_is_reported_and_children_stay(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "nosecret"
    doc = _off_mode(valid_doc(name))
    del doc["spec"]["retrieval"]
    _create(kube_cluster, ns, doc)
    _wait_condition(kube_cluster, ns, name, "Ready", "True")
    template_before = _deployment(kube_cluster, ns, name).spec.template.to_dict()
    _custom(kube_cluster).patch_namespaced_custom_object(
        API_GROUP,
        API_VERSION,
        ns,
        PLURAL,
        name,
        {"spec": {"model": {"repository": {"uri": "s3://models/other", "credentialsSecret": "absent"}}}},
    )
    degraded = _wait_condition(kube_cluster, ns, name, "Degraded", "True")
    assert degraded["reason"] == "SecretNotFound" and "absent" in degraded["message"]
    assert _deployment(kube_cluster, ns, name).spec.template.to_dict() == template_before
    # Fixing it (creating the Secret) lets the change through.
    client.CoreV1Api(kube_cluster.api_client).create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="absent"), string_data={"AWS_ACCESS_KEY_ID": "x"}),
    )
    _wait_condition(kube_cluster, ns, name, "Degraded", "False")
    assert "s3://models/other" in " ".join(
        _deployment(kube_cluster, ns, name).spec.template.spec.containers[0].args
    )


def test_operator_restart_mid_reconcile_converges_without_duplicates(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "restarted"
    _create(kube_cluster, ns, _off_mode(valid_doc(name)))
    # Kill the operator as soon as it started writing children, then start a new one.
    wait_for(
        lambda: client.CoreV1Api(kube_cluster.api_client).read_namespaced_config_map(
            f"{name}-triton-config", ns
        ),
        timeout=60,
        interval=0.05,
        description="first child",
    )
    operator_process.restart(signal.SIGKILL)
    _wait_condition(kube_cluster, ns, name, "Ready", "True", timeout=120)
    selector = f"{API_GROUP}/deployment={name}"
    apps = client.AppsV1Api(kube_cluster.api_client)
    deployments = apps.list_namespaced_deployment(ns, label_selector=selector).items
    assert sorted(d.metadata.name for d in deployments) == [f"{name}-gateway", f"{name}-triton"]
    assert len(apps.list_namespaced_replica_set(ns, label_selector=selector).items) == 2
    assert len(apps.list_namespaced_stateful_set(ns, label_selector=selector).items) == 1
    services = client.CoreV1Api(kube_cluster.api_client).list_namespaced_service(ns, label_selector=selector)
    assert sorted(s.metadata.name for s in services.items) == [
        f"{name}-gateway",
        f"{name}-milvus",
        f"{name}-triton",
    ]


def test_kubectl_get_shows_printer_columns(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "columns"
    doc = _off_mode(valid_doc(name))
    del doc["spec"]["retrieval"]
    _create(kube_cluster, ns, doc)
    _wait_condition(kube_cluster, ns, name, "Ready", "True")
    out = kube_cluster.kubectl("get", "phx", "-n", ns).stdout
    header, row = out.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "READY", "REPLICAS", "AVAILABLE", "GPUS"]
    assert row.split()[:5] == [name, "True", "1", "1", "1"]
    explained = kube_cluster.kubectl("explain", "phx.spec.batching.maxQueueDelayMicroseconds").stdout
    assert "Triton" in explained or "delay" in explained.lower()


def _operator_writes(kube_cluster: Any, namespace: str, since: float) -> list[str]:
    """Write requests the operator (the admin identity in these tests) made in ``namespace`` after ``since``.

    Scoped to the test's namespace: other tests' objects (and Kopf retrying Events into their
    terminating namespaces) are not this deployment's writes.
    """
    import json
    from datetime import datetime

    writes = []
    for line in kube_cluster.local.audit_log.read_text().splitlines():
        entry = json.loads(line)
        stamp = datetime.fromisoformat(entry["stageTimestamp"].replace("Z", "+00:00")).timestamp()
        ref = entry.get("objectRef") or {}
        if (
            stamp >= since
            and entry["user"]["username"] == "kubernetes-admin"
            and ref.get("namespace") == namespace
        ):
            writes.append(
                f"{entry['verb']} {ref.get('resource')}/{ref.get('name')} {ref.get('subresource') or ''}"
            )
    return writes


def test_converged_operator_makes_no_writes(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    import time

    ns, name = kube_namespace, "quiet"
    doc = _off_mode(valid_doc(name))
    # Every gateway child and option that renders differently: routes, a classifier URI, a model name.
    doc["spec"]["gateway"] |= {
        "classifier": {"uri": "https://artifacts.example.com/classifier.tar.gz"},
        "servedModelName": "llama-3-8b",
        "replicas": 3,
    }
    _create(kube_cluster, ns, doc)
    _wait_condition(kube_cluster, ns, name, "Ready", "True", timeout=120)
    _wait_condition(kube_cluster, ns, name, "GatewayReady", "True")
    core = client.CoreV1Api(kube_cluster.api_client)
    assert core.read_namespaced_config_map(f"{name}-gateway-spec", ns)
    assert core.read_namespaced_service(f"{name}-gateway", ns)
    assert _gateway_deployment(kube_cluster, ns, name).status.ready_replicas == 3
    # Let in-flight writes (the last status update, Events) land, then watch several resyncs.
    wait_for(
        lambda: not _operator_writes(kube_cluster, ns, time.time() - 4),
        timeout=60,
        interval=1,
        description="the operator to go quiet",
    )
    start = time.time()
    resync = float(operator_process.env["PHOENIX_RESYNC_SECONDS"])
    wait_for(
        lambda: time.time() - start > 5 * resync, timeout=60, interval=0.5, description="five resync periods"
    )
    assert _operator_writes(kube_cluster, ns, start) == []
    # Reads did happen: the status is still fresh (observedGeneration current) — the check ran.
    pd = _get_pd(kube_cluster, ns, name)
    assert pd["status"]["observedGeneration"] == pd["metadata"]["generation"]


def test_unreachable_milvus_is_reported_and_triton_still_serves(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "nomilvus"
    doc = _off_mode(valid_doc(name))
    doc["spec"]["retrieval"]["milvus"] = {"mode": "external", "external": {"uri": "http://127.0.0.1:1"}}
    del doc["spec"]["retrieval"]["refresh"]
    _create(kube_cluster, ns, doc)
    retrieval = _wait_condition(kube_cluster, ns, name, "RetrievalReady", "False")
    assert retrieval["reason"] == "MilvusUnreachable", retrieval
    degraded = _wait_condition(kube_cluster, ns, name, "Degraded", "True")
    assert degraded["reason"] == "MilvusUnreachable"
    # Once Triton's pods are up, retrieval is what keeps the stack from Ready.
    wait_for(
        lambda: (
            (_condition(_get_pd(kube_cluster, ns, name), "Ready") or {}).get("reason") == "RetrievalNotReady"
        ),
        timeout=60,
        description="Ready=False because of retrieval",
    )
    # The inference side is unaffected: its Deployment is up.
    assert _deployment(kube_cluster, ns, name).status.ready_replicas == 1
    events = (
        client.CoreV1Api(kube_cluster.api_client)
        .list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
        .items
    )
    assert any(e.type == "Warning" and "MilvusUnreachable" in (e.message or "") for e in events)


#: A stand-in for the Milvus Operator's CRD (same group/version/kind), enough for the API server
#: to serve `Milvus` objects; the Milvus Operator itself is not available here.
MILVUS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "milvuses.milvus.io"},
    "spec": {
        "group": "milvus.io",
        "scope": "Namespaced",
        "names": {"kind": "Milvus", "plural": "milvuses", "singular": "milvus", "listKind": "MilvusList"},
        "versions": [
            {
                "name": "v1beta1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def test_milvus_operator_present_gets_a_milvus_resource(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "withop"
    ext = client.ApiextensionsV1Api(kube_cluster.api_client)
    ext.create_custom_resource_definition(MILVUS_CRD)
    try:
        wait_for(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition("milvuses.milvus.io").status.conditions or []
            ),
            timeout=30,
            description="Milvus CRD established",
        )
        doc = _off_mode(valid_doc(name))
        _create(kube_cluster, ns, doc)
        custom = _custom(kube_cluster)
        cr = wait_for(
            lambda: custom.get_namespaced_custom_object("milvus.io", "v1beta1", ns, "milvuses", name),
            timeout=60,
            description="the Milvus resource",
        )
        assert cr["spec"]["mode"] == "standalone"
        assert cr["spec"]["dependencies"]["storage"]["inCluster"]["deletionPolicy"] == "Retain"
        waiting = _wait_condition(kube_cluster, ns, name, "RetrievalReady", "False")
        assert waiting["reason"] == "WaitingForMilvus"
        assert not client.AppsV1Api(kube_cluster.api_client).list_namespaced_stateful_set(ns).items
        # What the Milvus Operator would do once its pods are up:
        custom.patch_namespaced_custom_object_status(
            "milvus.io", "v1beta1", ns, "milvuses", name, {"status": {"status": "Healthy"}}
        )
        _wait_condition(kube_cluster, ns, name, "Ready", "True")
    finally:
        ext.delete_custom_resource_definition("milvuses.milvus.io")


# ------------------------------------------------------------------------------------------------
# gateway


def _gateway_deployment(kube_cluster: Any, ns: str, name: str) -> client.V1Deployment:
    return client.AppsV1Api(kube_cluster.api_client).read_namespaced_deployment(f"{name}-gateway", ns)


def _gateway_spec_file(kube_cluster: Any, ns: str, name: str) -> dict[str, Any]:
    cm = client.CoreV1Api(kube_cluster.api_client).read_namespaced_config_map(f"{name}-gateway-spec", ns)
    spec: dict[str, Any] = yaml.safe_load(cm.data["spec.yaml"])
    return spec


def _patch(kube_cluster: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    _custom(kube_cluster).patch_namespaced_custom_object(
        API_GROUP, API_VERSION, ns, PLURAL, name, {"spec": spec}
    )


def _admitted_as_restricted(kube_cluster: Any, deployment: client.V1Deployment) -> str | None:
    """Why the API server's Pod Security admission refuses the Deployment's pod as `restricted`, or None."""
    core = client.CoreV1Api(kube_cluster.api_client)
    ns = f"restricted-{uuid.uuid4().hex[:8]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns, labels=labels)))
    try:
        pod = client.V1Pod(metadata=client.V1ObjectMeta(name="probe"), spec=deployment.spec.template.spec)
        core.create_namespaced_pod(ns, pod, dry_run="All")
        return None
    except ApiException as exc:
        return str(exc.body)
    finally:
        core.delete_namespace(ns)


def test_gateway_children_are_applied_and_reported(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "gw"
    _create(kube_cluster, ns, _off_mode(valid_doc(name)))
    ready = _wait_condition(kube_cluster, ns, name, "GatewayReady", "True", timeout=120)
    assert ready["reason"] == "Available" and ready["message"] == "2/2 gateway replicas available"
    _wait_condition(kube_cluster, ns, name, "Ready", "True", timeout=120)

    container = _gateway_deployment(kube_cluster, ns, name).spec.template.spec.containers[0]
    assert container.args == [
        "--spec=/etc/phoenix/spec.yaml",
        f"--triton-url={name}-triton.{ns}.svc:8001",
        f"--milvus-uri=http://{name}-milvus.{ns}.svc:19530",
        "--host=0.0.0.0",
        "--port=8000",
        "--shutdown-timeout=120",
    ]
    service = client.CoreV1Api(kube_cluster.api_client).read_namespaced_service(f"{name}-gateway", ns)
    (port,) = service.spec.ports
    assert (port.name, port.port, port.target_port) == ("http", 80, "http")

    # The file the gateway reads is the spec as the API server stored it (defaults included).
    pd = _get_pd(kube_cluster, ns, name)
    served = PhoenixDeploymentSpec.model_validate(_gateway_spec_file(kube_cluster, ns, name))
    stored = PhoenixDeploymentSpec.model_validate(pd["spec"])
    assert served.gateway == stored.gateway and served.priority == stored.priority
    assert served.retrieval == stored.retrieval and served.model == stored.model

    status = pd["status"]["gateway"]
    assert status["endpoint"] == f"http://{name}-gateway.{ns}.svc:80"
    assert _admitted_as_restricted(kube_cluster, _gateway_deployment(kube_cluster, ns, name)) is None
    # Triton runs as triton-server (1000); the refused cases are in tests/test_hardening.py.
    assert _admitted_as_restricted(kube_cluster, _deployment(kube_cluster, ns, name)) is None
    assert status["readyReplicas"] == 2 and status["embedderDimension"] == 384
    compatible = _condition(pd, "EmbedderCompatible")
    assert compatible is not None and compatible["status"] == "True"


def test_gateway_spec_change_updates_its_file_and_rolls_it_but_triton_scaling_does_not(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "gwroll"
    doc = _off_mode(valid_doc(name))
    del doc["spec"]["retrieval"]
    _create(kube_cluster, ns, doc)
    _wait_condition(kube_cluster, ns, name, "GatewayReady", "True", timeout=120)
    before = _gateway_deployment(kube_cluster, ns, name).spec.template.metadata.annotations

    kube_cluster.kubectl("scale", "-n", ns, f"phx/{name}", "--replicas=2")
    wait_for(
        lambda: _deployment(kube_cluster, ns, name).spec.replicas == 2, timeout=60, description="Triton at 2"
    )
    assert _gateway_deployment(kube_cluster, ns, name).spec.template.metadata.annotations == before

    _patch(kube_cluster, ns, name, {"gateway": {"topK": 9, "maxOutputTokens": 256}})
    wait_for(
        lambda: _gateway_spec_file(kube_cluster, ns, name)["gateway"]["topK"] == 9,
        timeout=60,
        description="the gateway's spec file to change",
    )
    assert _gateway_spec_file(kube_cluster, ns, name)["gateway"]["maxOutputTokens"] == 256
    wait_for(
        lambda: _gateway_deployment(kube_cluster, ns, name).spec.template.metadata.annotations != before,
        timeout=60,
        description="the gateway's pod template to change",
    )
    selector = f"{API_GROUP}/deployment={name},app.kubernetes.io/component=gateway"
    apps = client.AppsV1Api(kube_cluster.api_client)
    wait_for(
        lambda: len(apps.list_namespaced_replica_set(ns, label_selector=selector).items) == 2,
        timeout=60,
        description="a second gateway ReplicaSet (the roll-out)",
    )
    _wait_condition(kube_cluster, ns, name, "GatewayReady", "True")


def test_disabling_the_gateway_prunes_its_children(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "gwoff"
    doc = _off_mode(valid_doc(name))
    del doc["spec"]["retrieval"]
    _create(kube_cluster, ns, doc)
    _wait_condition(kube_cluster, ns, name, "GatewayReady", "True", timeout=120)
    core, apps = client.CoreV1Api(kube_cluster.api_client), client.AppsV1Api(kube_cluster.api_client)
    selector = f"{API_GROUP}/deployment={name},app.kubernetes.io/component=gateway"

    def gateway_children() -> list[str]:
        return [
            f"{type(o).__name__}/{o.metadata.name}"
            for listing in (
                apps.list_namespaced_deployment(ns, label_selector=selector),
                core.list_namespaced_service(ns, label_selector=selector),
                core.list_namespaced_config_map(ns, label_selector=selector),
                client.PolicyV1Api(kube_cluster.api_client).list_namespaced_pod_disruption_budget(
                    ns, label_selector=selector
                ),
            )
            for o in listing.items
        ]

    assert len(gateway_children()) == 4
    _patch(kube_cluster, ns, name, {"gateway": {"enabled": False}})
    wait_for(lambda: not gateway_children(), timeout=60, description="gateway children pruned")
    wait_for(
        lambda: _condition(_get_pd(kube_cluster, ns, name), "GatewayReady") is None,
        timeout=30,
        description="GatewayReady dropped",
    )
    pd = _get_pd(kube_cluster, ns, name)
    assert "gateway" not in pd["status"]
    assert _condition(pd, "Ready")["status"] == "True"  # type: ignore[index]
    assert _deployment(kube_cluster, ns, name).status.ready_replicas == 1


def test_embedder_dimension_mismatch_is_reported_and_the_rest_still_applied(
    kube_cluster: Any, operator_process: Any, kube_namespace: str
) -> None:
    ns, name = kube_namespace, "gwdim"
    doc = _off_mode(valid_doc(name))
    doc["spec"]["retrieval"]["collection"] = {"name": f"kb_{ns.replace('-', '_')}", "dimension": 768}
    _create(kube_cluster, ns, doc)
    mismatch = _wait_condition(kube_cluster, ns, name, "EmbedderCompatible", "False", timeout=60)
    assert mismatch["reason"] == "DimensionMismatch"
    assert "768" in mismatch["message"] and "384" in mismatch["message"]
    degraded = _wait_condition(kube_cluster, ns, name, "Degraded", "True")
    assert "768" in degraded["message"]
    # Triton, Milvus and the gateway are all applied and come up regardless.
    wait_for(
        lambda: (_deployment(kube_cluster, ns, name).status.ready_replicas or 0) == 1,
        timeout=90,
        description="Triton ready",
    )
    assert client.CoreV1Api(kube_cluster.api_client).read_namespaced_config_map(f"{name}-triton-config", ns)
    assert client.AppsV1Api(kube_cluster.api_client).read_namespaced_stateful_set(f"{name}-milvus", ns)
    _wait_condition(kube_cluster, ns, name, "GatewayReady", "True")
    _wait_condition(kube_cluster, ns, name, "RetrievalReady", "True")
    events = (
        client.CoreV1Api(kube_cluster.api_client)
        .list_namespaced_event(ns, field_selector=f"involvedObject.name={name}")
        .items
    )
    warning = [e for e in events if e.reason == "EmbedderCompatibleFalse"]
    assert warning and warning[0].type == "Warning" and "768" in warning[0].message
