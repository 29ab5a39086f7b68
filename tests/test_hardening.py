"""Hardened children against the local cluster's admission: Pod Security `restricted` and NetworkPolicies.

The reconciler applies production.yaml's children through its real path (server-side apply, prune);
each workload's pod template, as the API server stored it, is then created with ``dryRun=All`` in
a namespace that enforces the `restricted` Pod Security level, which is what the kubelet would be
asked to run. NetworkPolicies are accepted without a CNI (no enforcement here); what is checked is
that the API server takes them and that the reconciler applies and prunes them.

The generated Secrets (Triton's model-control key, managed Milvus' root password) are checked in a
namespace that enforces `restricted`, where the ReplicaSet controller's pods meet real admission;
the restriction the key guards is checked against a real ``tritonserver``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import tritonclient.grpc as triton_grpc
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from tritonclient.utils import InferenceServerException

from phoenix_operator import API_GROUP, API_VERSION, PLURAL
from phoenix_operator.api.models import PhoenixDeploymentSpec
from phoenix_operator.clients.kube import Kube
from phoenix_operator.cluster.waiting import wait_for
from phoenix_operator.local.models import (
    emulated_chat_config,
    emulated_chat_model_source,
    emulated_chat_spec,
    write_model_repository,
)
from phoenix_operator.local.triton import LocalTriton
from phoenix_operator.reconcile.reconciler import Reconciler
from phoenix_operator.render.objects import (
    DEPLOYMENT_LABEL,
    MODEL_CONFIG_DIR,
    NetworkAccess,
    Target,
    triton_config_map,
    triton_deployment,
)
from phoenix_operator.render.secrets import (
    TRITON_CONTROL_KEY_ENV,
    milvus_root_secret_name,
    triton_control_headers,
    triton_control_secret_name,
)
from phoenix_operator.render.tritonconfig import BatchingConfig
from phoenix_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parent.parent
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
#: Children that keep root on purpose (docs/operator.md, "Security"): their refusal must name only that.
MAY_RUN_AS_ROOT = {"StatefulSet/chat-prod-milvus", "CronJob/chat-prod-retrain"}


def _production_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ROOT / "examples" / "production.yaml").read_text()) if d]


def _settings(network: NetworkAccess | None = None) -> OperatorSettings:
    """No Milvus is reachable here: fail its connection at once instead of waiting for a timeout."""
    return OperatorSettings(
        endpoint_overrides={"*:19530": "127.0.0.1:1"},
        milvus_timeout_seconds=1.0,
        network=network or NetworkAccess(),
    )


class Deployed:
    """production.yaml's PhoenixDeployment in a fresh namespace, reconciled by a real Reconciler."""

    def __init__(self, kube_cluster: Any, namespace: str) -> None:
        self.api = kube_cluster.api_client
        self.namespace = namespace
        self.kube = Kube(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        docs = _production_docs()
        (secret,) = [d for d in docs if d["kind"] == "Secret"]
        (pd,) = [d for d in docs if d["kind"] == "PhoenixDeployment"]
        self.kube.apply(secret | {"metadata": secret["metadata"] | {"namespace": namespace}})
        pd = copy.deepcopy(pd)
        pd["spec"]["autoscaling"] = {"mode": "off"}
        self.name = pd["metadata"]["name"]
        self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, pd)

    def reconcile(self, settings: OperatorSettings) -> list[str]:
        body: Any = self.custom.get_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, PLURAL, self.name
        )
        outcome = Reconciler(self.kube, settings).reconcile(body)
        return outcome.writes

    def patch_spec(self, spec: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            API_GROUP, API_VERSION, self.namespace, PLURAL, self.name, {"spec": spec}
        )

    def _list(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        return self.kube.list(api_version, kind, self.namespace, f"{DEPLOYMENT_LABEL}={self.name}")

    def network_policies(self) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p for p in self._list("networking.k8s.io/v1", "NetworkPolicy")}

    def pod_specs(self) -> dict[str, dict[str, Any]]:
        """Pod templates of the workloads as the API server stored them, by ``Kind/name``."""
        pods = {
            f"Deployment/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in self._list("apps/v1", "Deployment")
        }
        for sts in self._list("apps/v1", "StatefulSet"):
            pod = sts["spec"]["template"]["spec"]
            # The StatefulSet controller adds a volume per claim template (claim <template>-<set>-<ordinal>).
            for template in sts["spec"].get("volumeClaimTemplates") or []:
                claim = f"{template['metadata']['name']}-{sts['metadata']['name']}-0"
                volume = {"name": template["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim}}
                pod["volumes"] = [*(pod.get("volumes") or []), volume]
            pods[f"StatefulSet/{sts['metadata']['name']}"] = pod
        pods |= {
            f"CronJob/{c['metadata']['name']}": c["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            for c in self._list("batch/v1", "CronJob")
        }
        return pods


@pytest.fixture
def deployed(kube_cluster: Any, crds_installed: None, kube_namespace: str) -> Deployed:
    return Deployed(kube_cluster, kube_namespace)


@pytest.fixture
def restricted_namespace(kube_cluster: Any) -> Iterator[str]:
    core = client.CoreV1Api(kube_cluster.api_client)
    name = f"restricted-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED)))
    yield name
    core.delete_namespace(name)


def _refusal(api: Any, namespace: str, pod_spec: dict[str, Any]) -> str | None:
    """Why `restricted` admission refuses a pod with ``pod_spec`` (dry run), or None when it admits it."""
    pod: Any = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": pod_spec}
    try:
        client.CoreV1Api(api).create_namespaced_pod(namespace, pod, dry_run="All")
    except ApiException as exc:
        assert exc.status == 403, exc.body
        message: str = json.loads(str(exc.body))["message"]
        return message
    return None


@pytest.mark.integration
def test_restricted_admits_every_child_but_milvus_and_the_users_own_job_image(
    kube_cluster: Any, deployed: Deployed, restricted_namespace: str
) -> None:
    assert deployed.reconcile(_settings())
    pods = deployed.pod_specs()
    assert set(pods) == {
        "Deployment/chat-prod-triton",
        "Deployment/chat-prod-gateway",
        "StatefulSet/chat-prod-milvus",
        "CronJob/chat-prod-kb-refresh",
        "CronJob/chat-prod-retrain",
        "CronJob/chat-prod-evaluate",
    }
    refusals = {
        name: _refusal(kube_cluster.api_client, restricted_namespace, pod) for name, pod in pods.items()
    }
    admitted = {name for name, why in refusals.items() if why is None}
    assert admitted == set(pods) - MAY_RUN_AS_ROOT, refusals
    for name in MAY_RUN_AS_ROOT:
        why = refusals[name]
        assert why is not None and 'violates PodSecurity "restricted:latest"' in why, why
        # Root is the only thing left: escalation, capabilities and seccomp already meet `restricted`.
        violations = why.split('restricted:latest": ', 1)[1]
        assert re.fullmatch(r"runAsNonRoot != true \([^()]*\)", violations), why


@pytest.mark.integration
def test_network_policies_are_applied_with_the_settings_peers_and_pruned(
    session_operator_paused: None, deployed: Deployed
) -> None:
    access = NetworkAccess(
        operator_namespaces={"kubernetes.io/metadata.name": "phoenix-system"},
        operator_pods={"app.kubernetes.io/instance": "phx"},
    )
    deployed.reconcile(_settings(access))
    policies = deployed.network_policies()
    assert set(policies) == {"chat-prod-triton", "chat-prod-milvus"}
    triton = policies["chat-prod-triton"]["spec"]
    assert triton["podSelector"]["matchLabels"] == {
        "serving.phoenixoperator.io/deployment": "chat-prod",
        "app.kubernetes.io/component": "triton",
    }
    operator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "phoenix-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/instance": "phx"}},
    }
    (rule,) = [r for r in triton["ingress"] if operator_peer in r["from"]]
    assert sorted(p["port"] for p in rule["ports"]) == [8000, 8001, 8002]
    milvus = policies["chat-prod-milvus"]["spec"]
    (milvus_rule,) = milvus["ingress"]
    assert milvus_rule["from"][-1] == operator_peer

    # Without the gateway clients call Triton directly: its policy goes, Milvus' stays.
    deployed.patch_spec({"gateway": {"enabled": False}})
    writes = deployed.reconcile(_settings(access))
    assert "deleted NetworkPolicy/chat-prod-triton" in writes
    assert set(deployed.network_policies()) == {"chat-prod-milvus"}

    writes = deployed.reconcile(_settings(NetworkAccess(enabled=False)))
    assert "deleted NetworkPolicy/chat-prod-milvus" in writes
    assert deployed.network_policies() == {}


def test_selector_settings_parse_and_name_the_variable_on_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PHOENIX_OPERATOR_POD_SELECTOR",
        "app.kubernetes.io/name=phoenix-operator, app.kubernetes.io/instance=phx",
    )
    monkeypatch.setenv("PHOENIX_OPERATOR_NAMESPACE_SELECTOR", "")
    monkeypatch.setenv("PHOENIX_PROMETHEUS_NAMESPACE_SELECTOR", "team=observability")
    network = OperatorSettings.from_env().network
    assert network.operator_pods == {
        "app.kubernetes.io/name": "phoenix-operator",
        "app.kubernetes.io/instance": "phx",
    }
    assert network.operator_namespaces == {} and network.enabled
    assert network.prometheus_namespaces == {"team": "observability"}
    monkeypatch.setenv("PHOENIX_PROMETHEUS_NAMESPACE_SELECTOR", "observability")
    with pytest.raises(ValueError, match="PHOENIX_PROMETHEUS_NAMESPACE_SELECTOR"):
        OperatorSettings.from_env()
    monkeypatch.delenv("PHOENIX_PROMETHEUS_NAMESPACE_SELECTOR")
    monkeypatch.setenv("PHOENIX_NETWORK_POLICIES", "no")
    with pytest.raises(ValueError, match="PHOENIX_NETWORK_POLICIES"):
        OperatorSettings.from_env()
    monkeypatch.setenv("PHOENIX_NETWORK_POLICIES", "false")
    assert not OperatorSettings.from_env().network.enabled


def _secret(api: Any, namespace: str, name: str) -> Any:
    return client.CoreV1Api(api).read_namespaced_secret(name, namespace)


def _decoded(secret: Any) -> dict[str, str]:
    import base64

    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def _secret_refs(container: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env") or []
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }


@pytest.mark.integration
def test_generated_secrets_are_created_once_owned_and_referenced_in_a_restricted_namespace(
    kube_cluster: Any, crds_installed: None, session_operator_paused: None, restricted_namespace: str
) -> None:
    deployed = Deployed(kube_cluster, restricted_namespace)
    api, ns = kube_cluster.api_client, restricted_namespace
    writes = deployed.reconcile(_settings())
    control_name, root_name = triton_control_secret_name("chat-prod"), milvus_root_secret_name("chat-prod")
    assert {f"Secret/{control_name}", f"Secret/{root_name}"} <= set(writes)
    pd: Any = deployed.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, ns, PLURAL, "chat-prod")
    pd_uid = pd["metadata"]["uid"]
    first = {name: _secret(api, ns, name) for name in (control_name, root_name)}
    for secret in first.values():
        (owner,) = secret.metadata.owner_references
        assert (owner.uid, owner.kind, owner.controller) == (pd_uid, "PhoenixDeployment", True)
        assert secret.immutable is True
    control, root = _decoded(first[control_name]), _decoded(first[root_name])
    assert set(control) == {"key"} and len(control["key"]) >= 40
    assert root["username"] == "root" and len(root["password"]) >= 40 and root["password"] != "Milvus"

    # A second pass (a resync) neither rewrites nor rotates them.
    again = deployed.reconcile(_settings())
    assert not [w for w in again if w.startswith("Secret/")], again
    for name, before in first.items():
        after = _secret(api, ns, name)
        assert after.metadata.resource_version == before.metadata.resource_version
        assert _decoded(after) == _decoded(before)

    pods = deployed.pod_specs()
    triton = pods["Deployment/chat-prod-triton"]["containers"][0]
    assert any(f"phoenix-control-key=$({TRITON_CONTROL_KEY_ENV})" in a for a in triton["args"])
    assert _secret_refs(triton)[TRITON_CONTROL_KEY_ENV] == (control_name, "key")
    milvus_clients = ["Deployment/chat-prod-gateway", "CronJob/chat-prod-kb-refresh"]
    for name in milvus_clients:
        refs = _secret_refs(pods[name]["containers"][0])
        assert refs["PHOENIX_MILVUS_USER"] == (root_name, "username"), name
        assert refs["PHOENIX_MILVUS_PASSWORD"] == (root_name, "password"), name
    milvus = _secret_refs(pods["StatefulSet/chat-prod-milvus"]["containers"][0])
    assert milvus["COMMON_SECURITY_DEFAULTROOTPASSWORD"] == (root_name, "password")
    # No credential in any manifest: only references.
    stored = json.dumps(pods)
    assert control["key"] not in stored and root["password"] not in stored

    # Real admission: the ReplicaSet controller's pods enter the restricted namespace.
    core = client.CoreV1Api(api)

    def admitted(component: str) -> bool:
        selector = f"{DEPLOYMENT_LABEL}=chat-prod,app.kubernetes.io/component={component}"
        return bool(core.list_namespaced_pod(ns, label_selector=selector).items)

    for component in ("triton", "gateway"):
        wait_for(partial(admitted, component), timeout=60, interval=0.5, description=f"{component} pod")


def _emulated_triton(tmp_path: Path, key: str) -> tuple[LocalTriton, dict[str, Any], PhoenixDeploymentSpec]:
    """The rendered Triton container's restriction flags, with ``$(…)`` expanded as the kubelet does."""
    docs = yaml.safe_load_all((ROOT / "examples" / "minimal.yaml").read_text())
    (pd,) = [d for d in docs if d and d["kind"] == "PhoenixDeployment"]
    spec = emulated_chat_spec(PhoenixDeploymentSpec.model_validate(pd["spec"]))
    target = Target("chat", "ns")
    container = triton_deployment(target, spec, BatchingConfig.from_spec(spec))["spec"]["template"]["spec"][
        "containers"
    ][0]
    restricted = [
        a.replace(f"$({TRITON_CONTROL_KEY_ENV})", key) for a in container["args"] if "-restricted-" in a
    ]
    assert len(restricted) == 2
    repo = tmp_path / "models"
    write_model_repository(
        repo, spec.model.name, emulated_chat_config(spec), model_source=emulated_chat_model_source()
    )
    server = LocalTriton(repo, [spec.model.name], log_path=tmp_path / "triton.log", extra_args=restricted)
    return server, container, spec


@pytest.mark.triton
def test_triton_model_control_takes_only_the_generated_key(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    server, container, spec = _emulated_triton(tmp_path, key)
    model = spec.model.name
    with server.start():
        load = f"http://{server.http_url}/v2/repository/models/{model}/load"

        def post(headers: dict[str, str]) -> int:
            request = urllib.request.Request(load, data=b"{}", headers=headers, method="POST")
            try:
                return int(urllib.request.urlopen(request, timeout=60).status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post({}) == 403
        assert post({"phoenix-control-key": "wrong"}) == 403
        assert post(triton_control_headers({"key": key})) == 200
        grpc = triton_grpc.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException, match="restricted"):
            grpc.get_model_config(model)
        assert grpc.get_model_config(model, headers=triton_control_headers({"key": key}, grpc=True))
        # Inference-side APIs stay open to the clients the NetworkPolicy admits.
        assert grpc.is_model_ready(model) and grpc.get_model_metadata(model).name == model

        # The pod's postStart hook loads the operator's config with the key from its env.
        config_dir = tmp_path / "config"
        config_dir.mkdir()
        config = triton_config_map(Target("chat", "ns"), spec, BatchingConfig.from_spec(spec))
        (config_dir / "config.json").write_text(config["data"]["config.json"])
        hook = container["lifecycle"]["postStart"]["exec"]["command"][2]
        hook = hook.replace(MODEL_CONFIG_DIR, str(config_dir)).replace("127.0.0.1:8000", server.http_url)
        env = dict(os.environ) | {TRITON_CONTROL_KEY_ENV: key}
        done = subprocess.run(
            [sys.executable, "-c", hook], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
