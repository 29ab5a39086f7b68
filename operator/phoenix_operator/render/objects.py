"""Spec → the exact Kubernetes objects of one PhoenixDeployment (pure; no I/O).

The operator server-side-applies exactly what these functions return, `phoenix render` prints
it, and golden files pin it, so a review of a diff here is a review of what lands in clusters.

Names are ``<pd-name>-<part>``; every object carries the ``app.kubernetes.io/*`` labels and an
ownerReference to the PhoenixDeployment (when its uid is known), so deleting the
PhoenixDeployment garbage-collects them through Kubernetes itself.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from phoenix_operator import API_GROUP, API_VERSION, KIND, yamlio
from phoenix_operator.api.models import (
    AutoscalingMode,
    FileSource,
    JobSpec,
    PhoenixDeploymentSpec,
    Resources,
)
from phoenix_operator.render.secrets import (
    MILVUS_PASSWORD_KEY,
    MILVUS_ROOT_USER,
    MILVUS_USERNAME_KEY,
    SECRET_VALUE_KEY,
    TRITON_CONTROL_HEADER,
    TRITON_CONTROL_KEY_ENV,
    TRITON_RESTRICTED_APIS,
    milvus_root_secret_name,
    triton_control_secret_name,
)
from phoenix_operator.render.tritonconfig import (
    BatchingConfig,
    model_config_dict,
    to_load_json,
    to_pbtxt,
)

Manifest = dict[str, Any]

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
MILVUS_PORT = 19530
MODEL_CONFIG_DIR = "/etc/phoenix/model"
MODEL_VOLUME_DIR = "/models"
#: Label every child carries; metric queries and selectors use it.
DEPLOYMENT_LABEL = f"{API_GROUP}/deployment"
COMPONENT_LABEL = "app.kubernetes.io/component"
CONFIG_HASH_ANNOTATION = f"{API_GROUP}/model-config-hash"
SPEC_HASH_ANNOTATION = f"{API_GROUP}/spec-hash"

GATEWAY_PORT = 8000
GATEWAY_SERVICE_PORT = 80
GATEWAY_SPEC_DIR = "/etc/phoenix"
GATEWAY_SPEC_KEY = "spec.yaml"
GATEWAY_CLASSIFIER_DIR = "/var/lib/phoenix/classifier"
GATEWAY_CACHE_DIR = "/var/cache/phoenix"
#: The user the operator image runs as (its Dockerfile's USER).
GATEWAY_UID = 10001
#: ``triton-server``, the user NVIDIA's Triton images create and own /opt/tritonserver with.
TRITON_UID = 1000
MILVUS_METRICS_PORT = 9091
#: Environment the gateway reads: its cache (classifier, downloads) and the external Milvus token.
CACHE_DIR_ENV = "PHOENIX_CACHE_DIR"
MILVUS_TOKEN_ENV = "PHOENIX_MILVUS_TOKEN"
#: The managed Milvus' root user and password, which the token variable is composed of.
MILVUS_USER_ENV = "PHOENIX_MILVUS_USER"
MILVUS_PASSWORD_ENV = "PHOENIX_MILVUS_PASSWORD"
#: Milvus reads its config from the environment too (``common.security.defaultRootPassword``).
MILVUS_AUTH_ENV = "COMMON_SECURITY_AUTHORIZATIONENABLED"
MILVUS_ROOT_PASSWORD_ENV = "COMMON_SECURITY_DEFAULTROOTPASSWORD"
#: Directory of retraining candidates at the root of the classifier volume (one per Job name).
CLASSIFIER_CANDIDATES_DIR = "phoenix-candidates"
#: Where the operator's jobs mount the PVCs of their data files.
JOB_DATA_DIR = "/var/lib/phoenix/data"
TERMINATION_LOG = "/dev/termination-log"
#: The operator's CronJobs: (name suffix, component label) — the reconciler finds their pods by these.
REFRESH_JOB = ("kb-refresh", "knowledge-base")
RETRAIN_JOB = ("retrain", "maintenance")
EVALUATION_JOB = ("evaluate", "evaluation")
FINE_TUNE_JOB = ("fine-tune", "fine-tuning")
#: What a fine-tuning job is told about the model it proposes a new version of.
MODEL_NAME_ENV = "PHOENIX_MODEL_NAME"
MODEL_REPOSITORY_ENV = "PHOENIX_MODEL_REPOSITORY"
SERVING_VERSION_ENV = "PHOENIX_SERVING_VERSION"
#: The sentence embedder every gateway image runs; collections it searches need its dimension.
EMBEDDER_NAME = "all-MiniLM-L6-v2"
EMBEDDER_DIMENSION = 384


@dataclass(frozen=True)
class Capabilities:
    """Optional APIs found in the cluster; objects of absent kinds are not rendered."""

    milvus_operator: bool = False
    prometheus_operator: bool = False


@dataclass(frozen=True)
class NetworkAccess:
    """Who besides this deployment's own pods may reach Triton and Milvus (operator settings).

    Each selector is ``matchLabels``; an empty namespace selector selects every namespace.
    """

    enabled: bool = True
    operator_namespaces: dict[str, str] = field(default_factory=dict)
    operator_pods: dict[str, str] = field(
        default_factory=lambda: {"app.kubernetes.io/name": "phoenix-operator", COMPONENT_LABEL: "operator"}
    )
    prometheus_namespaces: dict[str, str] = field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"}
    )

    def operator_peer(self) -> Manifest:
        return {
            "namespaceSelector": _label_selector(self.operator_namespaces),
            "podSelector": _label_selector(self.operator_pods),
        }

    def prometheus_peer(self) -> Manifest:
        return {"namespaceSelector": _label_selector(self.prometheus_namespaces)}


def _label_selector(match: dict[str, str]) -> Manifest:
    """A selector as the API server stores it: "every" is ``{}``, never an empty matchLabels,
    which the server drops (the rendered object would then differ from the live one for ever)."""
    return {"matchLabels": dict(match)} if match else {}


@dataclass(frozen=True)
class Target:
    """Identity of the PhoenixDeployment being rendered."""

    name: str
    namespace: str
    uid: str | None = None
    generation: int | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)


def triton_name(name: str) -> str:
    return f"{name}-triton"


def config_map_name(name: str) -> str:
    return f"{name}-triton-config"


def milvus_name(name: str) -> str:
    return f"{name}-milvus"


def gateway_name(name: str) -> str:
    return f"{name}-gateway"


def gateway_config_map_name(name: str) -> str:
    return f"{name}-gateway-spec"


def triton_grpc_address(name: str, namespace: str) -> str:
    """In-cluster host:port of Triton's gRPC endpoint (the Triton Service)."""
    return f"{triton_name(name)}.{namespace}.svc:{GRPC_PORT}"


def gateway_endpoint(name: str, namespace: str) -> str:
    """The chat endpoint clients inside the cluster call (the gateway Service)."""
    return f"http://{gateway_name(name)}.{namespace}.svc:{GATEWAY_SERVICE_PORT}"


def milvus_endpoint(name: str, namespace: str) -> str:
    """In-cluster address of a managed Milvus (Milvus Operator names its Service the same way)."""
    return f"http://{milvus_name(name)}.{namespace}.svc:{MILVUS_PORT}"


def labels(target: Target, component: str, name: str = "phoenix") -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": target.name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "phoenix",
        "app.kubernetes.io/managed-by": "phoenix-operator",
        DEPLOYMENT_LABEL: target.name,
    }


def selector_labels(target: Target, component: str) -> dict[str, str]:
    """The immutable part of the labels: what Deployment/Service selectors use."""
    return {DEPLOYMENT_LABEL: target.name, COMPONENT_LABEL: component}


def selector_string(target: Target, component: str = "triton") -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(target, component).items()))


def _metadata(target: Target, name: str, component: str) -> Manifest:
    meta: Manifest = {
        "name": name,
        "namespace": target.namespace,
        "labels": labels(target, component) | target.extra_labels,
    }
    if target.uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": f"{API_GROUP}/{API_VERSION}",
                "kind": KIND,
                "name": target.name,
                "uid": target.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def _resources(resources: Resources | None, gpus: int = 0) -> Manifest:
    out: Manifest = {}
    if resources is not None:
        if resources.requests:
            out["requests"] = dict(resources.requests)
        if resources.limits:
            out["limits"] = dict(resources.limits)
    if gpus > 0:
        out.setdefault("requests", {})["nvidia.com/gpu"] = str(gpus)
        out.setdefault("limits", {})["nvidia.com/gpu"] = str(gpus)
    return out


def _stable_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Triton


def model_repository_arg(spec: PhoenixDeploymentSpec) -> str:
    repo = spec.model.repository
    if repo.uri:
        return repo.uri
    assert repo.pvc is not None  # guaranteed by the CEL rule and the model
    return MODEL_VOLUME_DIR + ("" if repo.pvc.path == "/" else repo.pvc.path.rstrip("/"))


def triton_restricted_args() -> list[str]:
    """Model control only with the generated key; Kubernetes expands ``$(…)`` from the container's env."""
    restriction = f"{','.join(TRITON_RESTRICTED_APIS)}:{TRITON_CONTROL_HEADER}=$({TRITON_CONTROL_KEY_ENV})"
    return [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]


def triton_control_key_env(target: Target) -> Manifest:
    return {
        "name": TRITON_CONTROL_KEY_ENV,
        "valueFrom": {
            "secretKeyRef": {"name": triton_control_secret_name(target.name), "key": SECRET_VALUE_KEY}
        },
    }


def triton_args(spec: PhoenixDeploymentSpec) -> list[str]:
    args = [
        f"--model-repository={model_repository_arg(spec)}",
        "--model-control-mode=explicit",
        "--strict-readiness=true",
        "--exit-on-error=false",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if spec.triton.gpus_per_replica else 'false'}",
        f"--metrics-port={METRICS_PORT}",
        "--metrics-config=histogram_latencies=true",
        "--metrics-config=summary_latencies=true",
        "--metrics-config=summary_quantiles=0.5:0.05,0.9:0.01,0.95:0.005,0.99:0.001",
        *triton_restricted_args(),
    ]
    return args + list(spec.triton.args)


#: postStart hook: load the model with the operator's config (batching, priorities) from the
#: mounted ConfigMap. Triton only serves traffic (readiness) after it returns, so a new pod never
#: serves with the repository's stale config. Stdlib only: every Triton image ships Python. The
#: load is a model-control call, so it carries the generated key from the container's env.
LOAD_MODEL_SCRIPT = """\
import json, os, sys, time, urllib.request
cfg = open('{dir}/config.json').read()
body = json.dumps({{'parameters': {{'config': cfg}}}}).encode()
url = 'http://127.0.0.1:{port}/v2/repository/models/{model}/load'
headers = {{'{header}': os.environ.get('{key_env}', '')}}
deadline = time.time() + {timeout}
while True:
    try:
        request = urllib.request.Request(url, data=body, headers=headers, method='POST')
        urllib.request.urlopen(request, timeout=600)
        sys.exit(0)
    except Exception as exc:
        if time.time() > deadline:
            print('phoenix: loading {model} failed:', exc, file=sys.stderr)
            sys.exit(1)
        time.sleep(2)
"""


def triton_deployment(
    target: Target,
    spec: PhoenixDeploymentSpec,
    batching: BatchingConfig,
) -> Manifest:
    """The Triton Deployment. ``replicas`` is left out in auto mode: the autoscaler owns it."""
    triton = spec.triton
    config = model_config_dict(spec, batching)
    # Batching and instance count change live (load_model), so they must not roll the pods.
    static_part = {k: v for k, v in config.items() if k not in {"dynamic_batching", "instance_group"}}
    static_hash = _stable_hash({"config": static_part, "args": triton_args(spec)})

    pod_labels = labels(target, "triton", "triton") | triton.pod_labels
    annotations = {
        CONFIG_HASH_ANNOTATION: static_hash,
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    } | triton.pod_annotations

    repo = spec.model.repository
    # Read-only root: /tmp takes a model repository Triton downloads (uri) and, as HOME, the
    # caches of its Python backends; no size limit then, the model's size is not known here.
    tmp: Manifest = {} if repo.uri else {"sizeLimit": "1Gi"}
    volumes: list[Manifest] = [
        {"name": "model-config", "configMap": {"name": config_map_name(target.name)}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
        {"name": "tmp", "emptyDir": tmp},
    ]
    mounts: list[Manifest] = [
        {"name": "model-config", "mountPath": MODEL_CONFIG_DIR, "readOnly": True},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    if repo.pvc is not None:
        volumes.append(
            {
                "name": "model-repository",
                "persistentVolumeClaim": {"claimName": repo.pvc.claim_name, "readOnly": repo.pvc.read_only},
            }
        )
        mounts.append(
            {"name": "model-repository", "mountPath": MODEL_VOLUME_DIR, "readOnly": repo.pvc.read_only}
        )

    container: Manifest = {
        "name": "triton",
        "image": triton.image,
        "imagePullPolicy": triton.image_pull_policy,
        "command": ["tritonserver"],
        "args": triton_args(spec),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": _resources(triton.resources, triton.gpus_per_replica),
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": max(3, triton.startup_timeout_seconds // 10),
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "lifecycle": {
            "postStart": {
                "exec": {
                    "command": [
                        "python3",
                        "-c",
                        LOAD_MODEL_SCRIPT.format(
                            dir=MODEL_CONFIG_DIR,
                            port=HTTP_PORT,
                            model=spec.model.name,
                            timeout=triton.startup_timeout_seconds,
                            header=TRITON_CONTROL_HEADER,
                            key_env=TRITON_CONTROL_KEY_ENV,
                        ),
                    ]
                }
            }
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": mounts,
    }
    env = [{"name": e.name, "value": e.value} for e in triton.env]
    if not any(e["name"] == "HOME" for e in env):
        env.append({"name": "HOME", "value": "/tmp"})
    container["env"] = [triton_control_key_env(target), *env]
    if repo.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": repo.credentials_secret}}]

    pod_spec: Manifest = {
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 60,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(TRITON_UID)
        | {"fsGroup": TRITON_UID, "fsGroupChangePolicy": "OnRootMismatch"},
    }
    if triton.node_selector:
        pod_spec["nodeSelector"] = dict(triton.node_selector)
    if triton.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, exclude_none=True) for t in triton.tolerations]
    if triton.affinity:
        pod_spec["affinity"] = triton.affinity
    if triton.priority_class_name:
        pod_spec["priorityClassName"] = triton.priority_class_name
    if triton.service_account_name:
        pod_spec["serviceAccountName"] = triton.service_account_name
    if triton.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in triton.image_pull_secrets]

    deployment_spec: Manifest = {
        "selector": {"matchLabels": selector_labels(target, "triton")},
        # Surge one pod at a time and never drop below the serving capacity during a roll-out.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "revisionHistoryLimit": 5,
        "progressDeadlineSeconds": triton.startup_timeout_seconds + 300,
        "template": {"metadata": {"labels": pod_labels, "annotations": annotations}, "spec": pod_spec},
    }
    if spec.autoscaling.mode != AutoscalingMode.AUTO:
        deployment_spec = {"replicas": triton.replicas} | deployment_spec
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(target, triton_name(target.name), "triton"),
        "spec": deployment_spec,
    }


def triton_service(target: Target) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(target, triton_name(target.name), "triton"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(target, "triton"),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def triton_config_map(
    target: Target, spec: PhoenixDeploymentSpec, batching: BatchingConfig, serving_version: int | None = None
) -> Manifest:
    """The model config new pods load (``config.json``) and a readable copy (``config.pbtxt``).

    ``serving_version`` is the fine-tuned version the gate promoted: new pods start pinned to it.
    """
    config = model_config_dict(spec, batching, serving_version)
    data = {
        "config.pbtxt": to_pbtxt(config),
        "config.json": to_load_json(config),
        "batching.json": json.dumps(
            {
                "preferredBatchSizes": list(batching.preferred_batch_sizes),
                "maxQueueDelayMicroseconds": batching.max_queue_delay_us,
                "instanceCount": batching.instance_count,
            },
            sort_keys=True,
        ),
    }
    if spec.retrieval is not None:
        data["retrieval.json"] = json.dumps(
            {
                "collection": spec.retrieval.collection.name,
                "metric": spec.retrieval.collection.metric,
                "searchParams": spec.retrieval.collection.search_params,
                "endpoint": retrieval_endpoint(target, spec),
            },
            sort_keys=True,
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(target, config_map_name(target.name), "triton"),
        "data": data,
    }


def triton_pdb(target: Target) -> Manifest:
    # maxUnavailable (not minAvailable) so a fleet scaled to one replica can still be drained.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(target, triton_name(target.name), "triton"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(target, "triton")}},
    }


def triton_pod_monitor(target: Target) -> Manifest:
    """Scrape Triton's metrics with the deployment label the metric source selects on."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(target, triton_name(target.name), "triton"),
        "spec": {
            "selector": {"matchLabels": selector_labels(target, "triton")},
            "podMetricsEndpoints": [
                {
                    "port": "metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_" + _prom_label(DEPLOYMENT_LABEL)],
                            "targetLabel": "phoenix_deployment",
                        }
                    ],
                }
            ],
        },
    }


def _prom_label(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


# --------------------------------------------------------------------------------------------
# generated Secrets


@dataclass(frozen=True)
class GeneratedSecret:
    """A Secret the reconciler creates once: ``fixed`` data plus a random value per ``random_keys``."""

    name: str
    component: str
    random_keys: tuple[str, ...]
    fixed: dict[str, str] = field(default_factory=dict)


def generated_secrets(target: Target, spec: PhoenixDeploymentSpec) -> list[GeneratedSecret]:
    """The Secrets this deployment's children reference but nobody else provides."""
    out = [GeneratedSecret(triton_control_secret_name(target.name), "triton", (SECRET_VALUE_KEY,))]
    if spec.retrieval is not None and spec.retrieval.milvus.mode == "managed":
        out.append(
            GeneratedSecret(
                milvus_root_secret_name(target.name),
                "retrieval",
                (MILVUS_PASSWORD_KEY,),
                {MILVUS_USERNAME_KEY: MILVUS_ROOT_USER},
            )
        )
    return out


def generated_secret_manifest(target: Target, secret: GeneratedSecret, values: dict[str, str]) -> Manifest:
    """The Secret with its random ``values``; immutable, so nothing can rotate it by accident."""
    missing = set(secret.random_keys) - set(values)
    if missing:
        raise ValueError(f"no value for {sorted(missing)} of Secret {secret.name}")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(target, secret.name, secret.component),
        "type": "Opaque",
        "immutable": True,
        "stringData": secret.fixed | {key: values[key] for key in secret.random_keys},
    }


# --------------------------------------------------------------------------------------------
# Milvus


def retrieval_endpoint(target: Target, spec: PhoenixDeploymentSpec) -> str | None:
    if spec.retrieval is None:
        return None
    milvus = spec.retrieval.milvus
    if milvus.mode == "external":
        assert milvus.external is not None
        return milvus.external.uri
    return milvus_endpoint(target.name, target.namespace)


def _secret_env(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def milvus_token_env(target: Target, spec: PhoenixDeploymentSpec) -> list[Manifest]:
    """The Milvus token as env vars read from a Secret (never copied into a manifest).

    External: ``tokenSecretRef``. Managed: ``user:password`` composed from the generated root
    Secret (Kubernetes expands ``$(…)`` of variables defined before it in the same list).
    """
    retrieval = spec.retrieval
    if retrieval is None:
        return []
    if retrieval.milvus.mode == "managed":
        secret = milvus_root_secret_name(target.name)
        return [
            _secret_env(MILVUS_USER_ENV, secret, MILVUS_USERNAME_KEY),
            _secret_env(MILVUS_PASSWORD_ENV, secret, MILVUS_PASSWORD_KEY),
            {"name": MILVUS_TOKEN_ENV, "value": f"$({MILVUS_USER_ENV}):$({MILVUS_PASSWORD_ENV})"},
        ]
    if retrieval.milvus.external is None:
        return []
    ref = retrieval.milvus.external.token_secret_ref
    if ref is None:
        return []
    return [_secret_env(MILVUS_TOKEN_ENV, ref.name, ref.key)]


def milvus_auth_env(target: Target) -> list[Manifest]:
    """Managed Milvus with auth on and root's first password from the generated Secret.

    Milvus maps ``COMMON_SECURITY_*`` variables onto ``common.security.*`` and ranks them above
    milvus.yaml; ``defaultRootPassword`` only seeds root when its metadata has no root user yet.
    """
    return [
        {"name": MILVUS_AUTH_ENV, "value": "true"},
        _secret_env(MILVUS_ROOT_PASSWORD_ENV, milvus_root_secret_name(target.name), MILVUS_PASSWORD_KEY),
    ]


def milvus_custom_resource(target: Target, spec: PhoenixDeploymentSpec) -> Manifest:
    """A Milvus Operator ``Milvus`` (standalone); data kept when it is deleted (Retain)."""
    assert spec.retrieval is not None
    managed = spec.retrieval.milvus.managed
    persistence: Manifest = {
        "enabled": True,
        "pvcDeletion": False,
        "persistentVolumeClaim": {
            "spec": {"resources": {"requests": {"storage": managed.storage_size}}}
            | ({"storageClassName": managed.storage_class_name} if managed.storage_class_name else {})
        },
    }
    return {
        "apiVersion": "milvus.io/v1beta1",
        "kind": "Milvus",
        "metadata": _metadata(target, target.name, "retrieval"),
        "spec": {
            "mode": "standalone",
            "components": {
                "image": managed.image,
                "resources": _resources(managed.resources),
                "env": milvus_auth_env(target),
            },
            "dependencies": {
                "etcd": {"inCluster": {"deletionPolicy": "Retain", "pvcDeletion": False}},
                "storage": {"inCluster": {"deletionPolicy": "Retain", "pvcDeletion": False}},
            },
            "config": {"common": {"security": {"authorizationEnabled": True}}},
            "persistence": persistence,
        },
    }


def milvus_statefulset(target: Target, spec: PhoenixDeploymentSpec) -> Manifest:
    """Standalone Milvus with embedded etcd and local storage, for clusters without the operator.

    The data PVC comes from a volumeClaimTemplate with a Retain policy: deleting the
    PhoenixDeployment removes the pods but never the knowledge base.
    """
    assert spec.retrieval is not None
    managed = spec.retrieval.milvus.managed
    claim_spec: Manifest = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": managed.storage_size}},
    }
    if managed.storage_class_name:
        claim_spec["storageClassName"] = managed.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(target, milvus_name(target.name), "retrieval"),
        "spec": {
            "replicas": 1,
            "serviceName": milvus_name(target.name),
            "selector": {"matchLabels": selector_labels(target, "retrieval")},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": labels(target, "retrieval", "milvus")},
                "spec": {
                    "containers": [
                        {
                            "name": "milvus",
                            "image": managed.image,
                            "args": ["milvus", "run", "standalone"],
                            "env": [
                                {"name": "ETCD_USE_EMBED", "value": "true"},
                                {"name": "ETCD_DATA_DIR", "value": "/var/lib/milvus/etcd"},
                                {"name": "COMMON_STORAGETYPE", "value": "local"},
                                *milvus_auth_env(target),
                            ],
                            "ports": [
                                {"name": "grpc", "containerPort": MILVUS_PORT},
                                {"name": "metrics", "containerPort": MILVUS_METRICS_PORT},
                            ],
                            "resources": _resources(managed.resources),
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 9091},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": 9091},
                                "initialDelaySeconds": 90,
                                "periodSeconds": 30,
                            },
                            # Root (older images own their binaries as root, mode 0774), but
                            # without capabilities, escalation or a writable root filesystem.
                            "securityContext": unprivileged_container_security(read_only_root=True),
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/var/lib/milvus"},
                                {"name": "tmp", "mountPath": "/tmp"},
                                {"name": "run", "mountPath": "/run/milvus"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "run", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                    "enableServiceLinks": False,
                    "automountServiceAccountToken": False,
                    "securityContext": runtime_default_seccomp(),
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data", "labels": labels(target, "retrieval", "milvus")},
                    "spec": claim_spec,
                }
            ],
        },
    }


def milvus_service(target: Target) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(target, milvus_name(target.name), "retrieval"),
        "spec": {
            "selector": selector_labels(target, "retrieval"),
            "ports": [
                {"name": "grpc", "port": MILVUS_PORT, "targetPort": "grpc", "protocol": "TCP"},
                {"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


# --------------------------------------------------------------------------------------------
# gateway


def gateway_spec_yaml(spec: PhoenixDeploymentSpec) -> str:
    """The spec the gateway reads, every default filled in.

    ``triton.replicas`` is left out: it changes whenever the Triton fleet is scaled through the
    scale subresource, the gateway never reads it, and each change would roll the gateway.
    """
    data = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["triton"].pop("replicas", None)
    return yamlio.dump(data)


def promoted_classifier_dir(candidate: str) -> str:
    """Where a promoted retraining candidate lies in the gateway's classifier volume."""
    return f"{GATEWAY_CLASSIFIER_DIR}/{CLASSIFIER_CANDIDATES_DIR}/{candidate}"


def gateway_classifier_arg(spec: PhoenixDeploymentSpec, promoted: str | None = None) -> list[str]:
    """The classifier the gateway loads: a promoted candidate on the PVC, else the spec's source."""
    classifier = spec.gateway.classifier
    if classifier.pvc is not None and promoted:
        return [f"--classifier={promoted_classifier_dir(promoted)}"]
    if classifier.pvc is not None:
        path = classifier.pvc.path
        return [f"--classifier={GATEWAY_CLASSIFIER_DIR}" + ("" if path == "/" else path.rstrip("/"))]
    if classifier.uri is not None:
        return [f"--classifier-uri={classifier.uri}"]
    return []


def gateway_args(target: Target, spec: PhoenixDeploymentSpec, promoted: str | None = None) -> list[str]:
    """Arguments of ``phoenix gateway``; Milvus only when the spec has retrieval."""
    args = [
        f"--spec={GATEWAY_SPEC_DIR}/{GATEWAY_SPEC_KEY}",
        f"--triton-url={triton_grpc_address(target.name, target.namespace)}",
    ]
    endpoint = retrieval_endpoint(target, spec)
    if endpoint is not None:
        args.append(f"--milvus-uri={endpoint}")
    return [
        *args,
        *gateway_classifier_arg(spec, promoted),
        "--host=0.0.0.0",
        f"--port={GATEWAY_PORT}",
        # SIGTERM lets the longest request finish; the pod's grace period adds a margin to this.
        f"--shutdown-timeout={spec.gateway.request_timeout_seconds:g}",
    ]


def gateway_config_map(target: Target, spec: PhoenixDeploymentSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(target, gateway_config_map_name(target.name), "gateway"),
        "data": {GATEWAY_SPEC_KEY: gateway_spec_yaml(spec)},
    }


def gateway_deployment(target: Target, spec: PhoenixDeploymentSpec, promoted: str | None = None) -> Manifest:
    """The gateway pods: restricted Pod Security, read-only root, rolled when the spec file changes.

    ``promoted`` is the retraining candidate the QualityGate passed; changing it rolls the pods.
    """
    gateway = spec.gateway
    annotations = {
        # The spec is read once at start: a changed file must replace the pods.
        SPEC_HASH_ANNOTATION: _stable_hash(gateway_config_map(target, spec)["data"]),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(GATEWAY_PORT),
        "prometheus.io/path": "/metrics",
    }
    volumes: list[Manifest] = [
        {"name": "spec", "configMap": {"name": gateway_config_map_name(target.name)}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
        {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts: list[Manifest] = [
        {"name": "spec", "mountPath": GATEWAY_SPEC_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": GATEWAY_CACHE_DIR},
    ]
    pvc = gateway.classifier.pvc
    if pvc is not None:
        volumes.append(
            {
                "name": "classifier",
                "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": pvc.read_only},
            }
        )
        mounts.append({"name": "classifier", "mountPath": GATEWAY_CLASSIFIER_DIR, "readOnly": pvc.read_only})

    env: list[Manifest] = [
        {"name": CACHE_DIR_ENV, "value": GATEWAY_CACHE_DIR},
        {"name": "HOME", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        *milvus_token_env(target, spec),
    ]
    container: Manifest = {
        "name": "gateway",
        "image": gateway.image,
        "imagePullPolicy": gateway.image_pull_policy,
        "command": ["phoenix", "gateway"],
        "args": gateway_args(target, spec, promoted),
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": _resources(gateway.resources),
        # Loading the embedder (and training the built-in classifier into an empty cache) can take
        # minutes on a small CPU request; liveness only starts counting once this passes.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 60,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "securityContext": restricted_container_security(),
        "volumeMounts": mounts,
    }
    pod_spec: Manifest = {
        "containers": [container],
        "volumes": volumes,
        # The gateway never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        # Streams in flight may finish (--shutdown-timeout), plus a margin.
        "terminationGracePeriodSeconds": math.ceil(gateway.request_timeout_seconds) + 15,
        "securityContext": restricted_pod_security(),
    }
    if gateway.node_selector:
        pod_spec["nodeSelector"] = dict(gateway.node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(target, gateway_name(target.name), "gateway"),
        "spec": {
            "replicas": gateway.replicas,
            "selector": {"matchLabels": selector_labels(target, "gateway")},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {"labels": labels(target, "gateway", "gateway"), "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def restricted_container_security() -> Manifest:
    """Restricted Pod Security for a container of the operator's image (read-only root)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def restricted_pod_security(uid: int = GATEWAY_UID) -> Manifest:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def unprivileged_container_security(read_only_root: bool) -> Manifest:
    """Everything of restricted Pod Security except a non-root user, for images that may need root."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def runtime_default_seccomp() -> Manifest:
    return {"seccompProfile": {"type": "RuntimeDefault"}}


def gateway_service(target: Target) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(target, gateway_name(target.name), "gateway"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(target, "gateway"),
            "ports": [
                {"name": "http", "port": GATEWAY_SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def gateway_pdb(target: Target) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(target, gateway_name(target.name), "gateway"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(target, "gateway")}},
    }


def gateway_pod_monitor(target: Target) -> Manifest:
    """Scrape the gateway's request metrics (per-class TTFT) with the deployment label."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(target, gateway_name(target.name), "gateway"),
        "spec": {
            "selector": {"matchLabels": selector_labels(target, "gateway")},
            "podMetricsEndpoints": [
                {
                    "port": "http",
                    "path": "/metrics",
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": ["__meta_kubernetes_pod_label_" + _prom_label(DEPLOYMENT_LABEL)],
                            "targetLabel": "phoenix_deployment",
                        }
                    ],
                }
            ],
        },
    }


# --------------------------------------------------------------------------------------------
# jobs & alerts


def cron_job(
    target: Target, suffix: str, component: str, job: JobSpec, extra_env: list[Manifest]
) -> Manifest:
    """A bring-your-own-image job: the user's image, command and args, run on the schedule."""
    container: Manifest = {"name": suffix, "image": job.image}
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    env = [{"name": e.name, "value": e.value} for e in job.env] + extra_env
    if env:
        container["env"] = env
    if job.resources is not None:
        container["resources"] = _resources(job.resources)
    # The user's image may need root and a writable root filesystem: both stay allowed.
    container["securityContext"] = unprivileged_container_security(read_only_root=False)
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "containers": [container],
        "securityContext": runtime_default_seccomp(),
    }
    return _cron_manifest(target, suffix, component, job.schedule, job.suspend, job.time_zone, pod_spec)


def _cron_manifest(
    target: Target,
    suffix: str,
    component: str,
    schedule: str,
    suspend: bool,
    time_zone: str | None,
    pod_spec: Manifest,
) -> Manifest:
    cron_spec: Manifest = {
        "schedule": schedule,
        "suspend": suspend,
        "concurrencyPolicy": "Forbid",
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": {
            "metadata": {"labels": labels(target, component)},
            "spec": {
                "backoffLimit": 2,
                "template": {"metadata": {"labels": labels(target, component)}, "spec": pod_spec},
            },
        },
    }
    if time_zone:
        cron_spec["timeZone"] = time_zone
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(target, f"{target.name}-{suffix}", component),
        "spec": cron_spec,
    }


@dataclass
class _PhoenixJob:
    """Volumes, mounts and env of a job that runs the operator's own image."""

    volumes: list[Manifest] = field(default_factory=list)
    mounts: list[Manifest] = field(default_factory=list)

    def file(self, source: FileSource, slot: str) -> str:
        """The path or URL the command reads ``source`` from (its PVC mounted read-only)."""
        if source.url is not None:
            return source.url
        assert source.pvc is not None  # guaranteed by FileSource's rule
        name = f"data-{slot}"
        self.volumes.append(
            {"name": name, "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True}}
        )
        self.mounts.append({"name": name, "mountPath": f"{JOB_DATA_DIR}/{slot}", "readOnly": True})
        return f"{JOB_DATA_DIR}/{slot}{source.pvc.path}"

    def classifier_volume(self, spec: PhoenixDeploymentSpec, read_only: bool) -> bool:
        """Mount the gateway's classifier PVC (where candidates live); False when it has none."""
        pvc = spec.gateway.classifier.pvc
        if pvc is None:
            return False
        self.volumes.append(
            {
                "name": "classifier",
                "persistentVolumeClaim": {"claimName": pvc.claim_name, "readOnly": read_only},
            }
        )
        self.mounts.append({"name": "classifier", "mountPath": GATEWAY_CLASSIFIER_DIR, "readOnly": read_only})
        return True

    def pod_spec(
        self,
        target: Target,
        name: str,
        image: str,
        command: list[str],
        args: list[str],
        env: list[Manifest],
        resources: Resources | None,
    ) -> Manifest:
        volumes = [
            {"name": "spec", "configMap": {"name": gateway_config_map_name(target.name)}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}},
            *self.volumes,
        ]
        mounts = [
            {"name": "spec", "mountPath": GATEWAY_SPEC_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": GATEWAY_CACHE_DIR},
            *self.mounts,
        ]
        container: Manifest = {
            "name": name,
            "image": image,
            "command": command,
            "args": args,
            "env": [
                {"name": CACHE_DIR_ENV, "value": GATEWAY_CACHE_DIR},
                {"name": "HOME", "value": "/tmp"},
                {"name": "PYTHONUNBUFFERED", "value": "1"},
                {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
                *env,
            ],
            # The figures are the termination message the operator reads (never the log's tail).
            "terminationMessagePath": TERMINATION_LOG,
            "terminationMessagePolicy": "File",
            "securityContext": restricted_container_security(),
            "volumeMounts": mounts,
        }
        if resources is not None:
            container["resources"] = _resources(resources)
        return {
            "restartPolicy": "Never",
            "containers": [container],
            "volumes": volumes,
            # The jobs never call the Kubernetes API: the operator reads their pods.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": restricted_pod_security(),
        }


SPEC_FILE = f"{GATEWAY_SPEC_DIR}/{GATEWAY_SPEC_KEY}"


def evaluation_cron_job(target: Target, spec: PhoenixDeploymentSpec, promoted: str | None = None) -> Manifest:
    """``phoenix eval`` of the classifier the gateway serves; figures in the termination message."""
    evaluation = spec.monitoring.evaluation
    assert evaluation is not None
    job = _PhoenixJob()
    args = [f"--data={job.file(evaluation.data, 'labelled')}", f"--spec={SPEC_FILE}"]
    env: list[Manifest] = []
    if job.classifier_volume(spec, read_only=True):
        args += gateway_classifier_arg(spec, promoted)
    endpoint = retrieval_endpoint(target, spec)
    if evaluation.hit_at_k and endpoint is not None:
        args.append(f"--milvus-uri={endpoint}")
        token = milvus_token_env(target, spec)
        if token:
            args.append(f"--token-env={MILVUS_TOKEN_ENV}")
            env += token
    args.append(f"--termination-log={TERMINATION_LOG}")
    suffix, component = EVALUATION_JOB
    pod = job.pod_spec(target, suffix, evaluation.image, ["phoenix", "eval"], args, env, evaluation.resources)
    return _cron_manifest(
        target, suffix, component, evaluation.schedule, evaluation.suspend, evaluation.time_zone, pod
    )


def refresh_cron_job(target: Target, spec: PhoenixDeploymentSpec) -> Manifest:
    """The knowledge-base refresh: the user's image, or ``phoenix kb ingest`` of ``refresh.source``."""
    retrieval = spec.retrieval
    assert retrieval is not None and retrieval.refresh is not None
    refresh = retrieval.refresh
    endpoint = retrieval_endpoint(target, spec) or ""
    suffix, component = REFRESH_JOB
    if refresh.image is not None:
        env: list[Manifest] = [
            {"name": "PHOENIX_MILVUS_URI", "value": endpoint},
            {"name": "PHOENIX_COLLECTION", "value": retrieval.collection.name},
            *milvus_token_env(target, spec),
        ]
        return cron_job(target, suffix, component, refresh, env)
    assert refresh.source is not None  # guaranteed by RefreshJobSpec's rule
    job = _PhoenixJob()
    args = [
        f"--source={job.file(refresh.source, 'documents')}",
        f"--milvus-uri={endpoint}",
        f"--spec={SPEC_FILE}",
    ]
    evaluation = spec.monitoring.evaluation
    if evaluation is not None:
        # The alias moves only if hit@k on the held-out set passes the gate (exit 3 otherwise).
        args += [
            f"--eval={job.file(evaluation.data, 'labelled')}",
            f"--max-hit-at-k-drop={refresh.max_hit_at_k_drop:g}",
        ]
    args += refresh.args
    token = milvus_token_env(target, spec)
    if token:
        args.append(f"--token-env={MILVUS_TOKEN_ENV}")
    user_env = [{"name": e.name, "value": e.value} for e in refresh.env]
    pod = job.pod_spec(
        target,
        suffix,
        spec.gateway.image,
        list(refresh.command) or ["phoenix", "kb", "ingest"],
        args,
        [*token, *user_env],
        refresh.resources,
    )
    manifest = _cron_manifest(
        target, suffix, component, refresh.schedule, refresh.suspend, refresh.time_zone, pod
    )
    if evaluation is not None:
        # A refresh the gate rejected is final: rebuilding it on a retry would be rejected again.
        container = pod["containers"][0]["name"]
        manifest["spec"]["jobTemplate"]["spec"]["podFailurePolicy"] = {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": container,
                        "operator": "In",
                        "values": [REFRESH_REJECTED],
                    },
                }
            ]
        }
    return manifest


#: ``phoenix kb ingest --eval``'s exit status when its gate keeps the current version.
REFRESH_REJECTED = 3

#: The default retraining: train into ``<candidates>/<job name>``, then measure it on held-out data;
#: ``phoenix eval --candidate`` puts the candidate's name beside its figures.
RETRAIN_SCRIPT = """\
set -eu
out="$CANDIDATES/$JOB_NAME"
train="$TRAIN_DATA"
case "$train" in
  http://*|https://*)
    python -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "$train" /tmp/train.csv
    train=/tmp/train.csv ;;
esac
phoenix classifier train --data "$train" --out "$out" --force
phoenix eval --data "$EVAL_DATA" --classifier "$out" --spec "$SPEC" --candidate "$JOB_NAME" \
  --termination-log /dev/termination-log
"""


def retrain_cron_job(target: Target, spec: PhoenixDeploymentSpec) -> Manifest:
    """Classifier retraining: the user's image, or train + evaluate a candidate on the classifier PVC."""
    maintenance = spec.maintenance
    assert maintenance is not None and maintenance.retraining is not None
    retraining = maintenance.retraining
    suffix, component = RETRAIN_JOB
    if retraining.image is not None:
        return cron_job(target, suffix, component, retraining, [])
    held_out = retraining.eval_data or (
        spec.monitoring.evaluation.data if spec.monitoring.evaluation else None
    )
    assert retraining.data is not None and held_out is not None  # guaranteed by the spec's rules
    job = _PhoenixJob()
    train = job.file(retraining.data, "train")
    evaluate = job.file(held_out, "held-out")
    job.classifier_volume(spec, read_only=False)
    env: list[Manifest] = [
        {"name": "CANDIDATES", "value": f"{GATEWAY_CLASSIFIER_DIR}/{CLASSIFIER_CANDIDATES_DIR}"},
        {
            "name": "JOB_NAME",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['batch.kubernetes.io/job-name']"}},
        },
        {"name": "TRAIN_DATA", "value": train},
        {"name": "EVAL_DATA", "value": evaluate},
        {"name": "SPEC", "value": SPEC_FILE},
        *({"name": e.name, "value": e.value} for e in retraining.env),
    ]
    pod = job.pod_spec(
        target,
        suffix,
        spec.gateway.image,
        list(retraining.command) or ["sh", "-c", RETRAIN_SCRIPT],
        list(retraining.args),
        env,
        retraining.resources,
    )
    return _cron_manifest(
        target, suffix, component, retraining.schedule, retraining.suspend, retraining.time_zone, pod
    )


def fine_tune_cron_job(target: Target, spec: PhoenixDeploymentSpec, serving_version: int | None) -> Manifest:
    """The user's fine-tuning image, told which model and version it improves on.

    It writes ``<model>/<N>/`` beside the serving version, so a model repository on a PVC is
    mounted writable where Triton mounts it; an object store is reached with the repository's
    credentials Secret, as Triton reaches it.
    """
    maintenance = spec.maintenance
    assert maintenance is not None and maintenance.fine_tuning is not None
    suffix, component = FINE_TUNE_JOB
    env: list[Manifest] = [
        {"name": MODEL_NAME_ENV, "value": spec.model.name},
        {"name": MODEL_REPOSITORY_ENV, "value": model_repository_arg(spec)},
    ]
    if serving_version is not None:
        env.append({"name": SERVING_VERSION_ENV, "value": str(serving_version)})
    cron = cron_job(target, suffix, component, maintenance.fine_tuning, env)
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    repo = spec.model.repository
    if repo.pvc is not None:
        pod["volumes"] = [
            {"name": "model-repository", "persistentVolumeClaim": {"claimName": repo.pvc.claim_name}}
        ]
        container["volumeMounts"] = [{"name": "model-repository", "mountPath": MODEL_VOLUME_DIR}]
    if repo.credentials_secret:
        container["envFrom"] = [{"secretRef": {"name": repo.credentials_secret}}]
    return cron


def needs_spec_config_map(spec: PhoenixDeploymentSpec) -> bool:
    """Jobs of the operator's image read the gateway's spec file, even with the gateway disabled."""
    refresh = spec.retrieval.refresh if spec.retrieval else None
    retraining = spec.maintenance.retraining if spec.maintenance else None
    return (
        spec.monitoring.evaluation is not None
        or (refresh is not None and refresh.image is None)
        or (retraining is not None and retraining.image is None)
    )


def evaluation_alerts(target: Target, spec: PhoenixDeploymentSpec) -> list[Manifest]:
    """The quality figures' age: too old, or never reported, once an evaluation is scheduled.

    The operator exports ``phoenix_eval_*{namespace,deployment}`` from status.quality.
    """
    evaluation = spec.monitoring.evaluation
    if evaluation is None:
        return []
    max_age = evaluation.max_age()
    sel = f'deployment="{target.name}",namespace="{target.namespace}"'
    return [
        {
            "alert": "PhoenixEvaluationStale",
            "expr": f"time() - max(phoenix_eval_timestamp_seconds{{{sel}}}) > {max_age}",
            "for": "0m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": f"Last offline evaluation of {target.name} is older than {max_age}s"},
        },
        {
            "alert": "PhoenixEvaluationMissing",
            "expr": f"absent(phoenix_eval_timestamp_seconds{{{sel}}})",
            "for": f"{max_age}s",
            "labels": {"severity": "warning"},
            "annotations": {"summary": f"No offline evaluation of {target.name} reported for {max_age}s"},
        },
    ]


def prometheus_rule(target: Target, spec: PhoenixDeploymentSpec) -> Manifest:
    mon = spec.monitoring
    ttft_limit = mon.ttft_p95_alert_seconds or spec.autoscaling.ttft_p95_target_seconds
    sel = f'phoenix_deployment="{target.name}",namespace="{target.namespace}"'
    ttft_ms = ttft_limit * 1000
    rules = [
        {
            "alert": "PhoenixTTFTP95AboveTarget",
            "expr": (
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(nv_inference_first_response_histogram_ms_bucket{{{sel}}}[5m])))"
                f" > {ttft_ms:g}"
            ),
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": f"TTFT p95 of {target.namespace}/{target.name} above {ttft_limit:g}s"},
        },
        {
            "alert": "PhoenixErrorRateHigh",
            "expr": (
                f"sum(rate(nv_inference_request_failure{{{sel}}}[5m])) / "
                f"clamp_min(sum(rate(nv_inference_request_success{{{sel}}}[5m])) + "
                f"sum(rate(nv_inference_request_failure{{{sel}}}[5m])), 1e-9) > {mon.error_rate_alert:g}"
            ),
            "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {
                "summary": f"Inference error rate of {target.name} above {mon.error_rate_alert:g}"
            },
        },
        {
            "alert": "PhoenixF1BelowSLA",
            "expr": (
                f'min(phoenix_eval_f1{{deployment="{target.name}",namespace="{target.namespace}"}})'
                f" < {mon.min_f1:g}"
            ),
            "for": "0m",
            "labels": {"severity": "warning"},
            "annotations": {"summary": f"Offline-evaluation F1 of {target.name} below {mon.min_f1:g}"},
        },
        *evaluation_alerts(target, spec),
        {
            "alert": "PhoenixMetricsStale",
            "expr": f"absent_over_time(nv_inference_request_success{{{sel}}}[10m])",
            "for": "5m",
            "labels": {"severity": "warning"},
            "annotations": {
                "summary": f"No Triton metrics for {target.name}: the control loop is holding still"
            },
        },
    ]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _metadata(target, f"{target.name}-alerts", "monitoring"),
        "spec": {"groups": [{"name": f"phoenix.{target.name}", "rules": rules}]},
    }


# --------------------------------------------------------------------------------------------
# network policies


def _tcp(*ports: int) -> list[Manifest]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def _network_policy(target: Target, name: str, component: str, ingress: list[Manifest]) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(target, name, component),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(target, component)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def triton_network_policy(target: Target, access: NetworkAccess) -> Manifest:
    """Triton only for this deployment's gateway, the operator (reloads) and Prometheus (metrics)."""
    return _network_policy(
        target,
        triton_name(target.name),
        "triton",
        [
            {
                "from": [{"podSelector": {"matchLabels": selector_labels(target, "gateway")}}],
                "ports": _tcp(HTTP_PORT, GRPC_PORT),
            },
            {"from": [access.operator_peer()], "ports": _tcp(HTTP_PORT, GRPC_PORT, METRICS_PORT)},
            {"from": [access.prometheus_peer()], "ports": _tcp(METRICS_PORT)},
        ],
    )


def milvus_clients(spec: PhoenixDeploymentSpec) -> list[str]:
    """Components of this deployment's pods that are given Milvus' address (retraining never is)."""
    evaluation = spec.monitoring.evaluation
    wanted = {
        "gateway": spec.gateway.enabled,
        REFRESH_JOB[1]: spec.retrieval is not None and spec.retrieval.refresh is not None,
        EVALUATION_JOB[1]: evaluation is not None and evaluation.hit_at_k,
    }
    return [component for component, needed in wanted.items() if needed]


def milvus_network_policy(target: Target, spec: PhoenixDeploymentSpec, access: NetworkAccess) -> Manifest:
    """The managed Milvus only for the operator and this deployment's pods that search or fill it."""
    peers = [access.operator_peer()]
    clients = milvus_clients(spec)
    if clients:
        own = {
            "matchLabels": {DEPLOYMENT_LABEL: target.name},
            "matchExpressions": [{"key": COMPONENT_LABEL, "operator": "In", "values": clients}],
        }
        peers.insert(0, {"podSelector": own})
    return _network_policy(
        target, milvus_name(target.name), "retrieval", [{"from": peers, "ports": _tcp(MILVUS_PORT)}]
    )


# --------------------------------------------------------------------------------------------
# all


def render_all(
    target: Target,
    spec: PhoenixDeploymentSpec,
    batching: BatchingConfig | None = None,
    capabilities: Capabilities | None = None,
    promoted_classifier: str | None = None,
    network: NetworkAccess | None = None,
    serving_version: int | None = None,
) -> list[Manifest]:
    """Every child object, in apply order (config and NetworkPolicies before the pods they govern).

    ``promoted_classifier`` is the retraining candidate the QualityGate last passed and
    ``serving_version`` the fine-tuned LLM version it pins (both from status.quality).
    Triton's NetworkPolicy exists only with the gateway: without it, clients call Triton directly.
    """
    capabilities = capabilities or Capabilities()
    batching = batching or BatchingConfig.from_spec(spec)
    network = network or NetworkAccess()
    gateway = spec.gateway.enabled
    objects = [triton_config_map(target, spec, batching, serving_version), triton_service(target)]
    if network.enabled and gateway:
        objects.append(triton_network_policy(target, network))
    objects += [triton_deployment(target, spec, batching), triton_pdb(target)]
    if gateway:
        objects += [
            gateway_config_map(target, spec),
            gateway_service(target),
            gateway_deployment(target, spec, promoted_classifier),
            gateway_pdb(target),
        ]
    elif needs_spec_config_map(spec):
        objects.append(gateway_config_map(target, spec))
    if capabilities.prometheus_operator:
        objects.append(triton_pod_monitor(target))
        if gateway:
            objects.append(gateway_pod_monitor(target))
        if spec.monitoring.prometheus_rule:
            objects.append(prometheus_rule(target, spec))
    retrieval = spec.retrieval
    if retrieval is not None:
        if retrieval.milvus.mode == "managed":
            if capabilities.milvus_operator:
                objects.append(milvus_custom_resource(target, spec))
            else:
                if network.enabled:
                    objects.append(milvus_network_policy(target, spec, network))
                objects += [milvus_service(target), milvus_statefulset(target, spec)]
        if retrieval.refresh is not None:
            objects.append(refresh_cron_job(target, spec))
    if spec.maintenance is not None and spec.maintenance.retraining is not None:
        objects.append(retrain_cron_job(target, spec))
    if spec.maintenance is not None and spec.maintenance.fine_tuning is not None:
        objects.append(fine_tune_cron_job(target, spec, serving_version))
    if spec.monitoring.evaluation is not None:
        objects.append(evaluation_cron_job(target, spec, promoted_classifier))
    return objects
