"""One table of invalid PhoenixDeployments, shared by the pydantic tests and the API-server tests.

Each case names the field the error message must point at, so "rejected" is not enough: the
user has to be told where.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Doc = dict[str, Any]


def valid_doc(name: str = "chat") -> Doc:
    """A small but complete PhoenixDeployment every case mutates."""
    return {
        "apiVersion": "serving.phoenixoperator.io/v1alpha1",
        "kind": "PhoenixDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "name": "llama-chat",
                "backend": "vllm",
                "maxBatchSize": 64,
                "repository": {"uri": "s3://models/llama"},
            },
            "batching": {"preferredBatchSizes": [8, 16], "maxQueueDelayMicroseconds": 2000},
            "priority": {
                "defaultClass": "standard",
                "classes": [
                    {"name": "urgent", "level": 1, "ttftTargetSeconds": 1.5},
                    {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
                ],
            },
            "gateway": {
                "routes": [
                    {"priorityClass": "urgent", "intents": ["lost_or_stolen_card", "compromised_card"]}
                ]
            },
            "retrieval": {
                "milvus": {"mode": "managed"},
                "collection": {"name": "kb", "dimension": 384},
                "refresh": {"schedule": "0 3 * * *", "image": "busybox:1.36"},
            },
            "autoscaling": {
                "mode": "auto",
                "minReplicas": 1,
                "maxReplicas": 4,
                "prometheusUrl": "http://prometheus:9090",
            },
        },
    }


@dataclass(frozen=True)
class Case:
    id: str
    mutate: Callable[[Doc], None]
    #: The field the error must name (camelCase path fragment as the API server prints it).
    field: str


def _set(path: str, value: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        node = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return apply


def _both(*fns: Callable[[Doc], None]) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        for fn in fns:
            fn(doc)

    return apply


INVALID_CASES: list[Case] = [
    Case("batch-size-zero", _set("spec.model.maxBatchSize", 0), "maxBatchSize"),
    Case("backend-unknown", _set("spec.model.backend", "tensorflowx"), "backend"),
    Case(
        "repository-both",
        _set("spec.model.repository", {"uri": "s3://m/x", "pvc": {"claimName": "models"}}),
        "repository",
    ),
    Case("repository-none", _set("spec.model.repository", {}), "repository"),
    Case("preferred-above-max", _set("spec.batching.preferredBatchSizes", [8, 128]), "preferredBatchSizes"),
    Case("preferred-repeated", _set("spec.batching.preferredBatchSizes", [8, 8]), "preferredBatchSizes"),
    Case(
        "delay-above-bound",
        _set("spec.batching.maxQueueDelayMicroseconds", 90_000),
        "maxQueueDelayMicroseconds",
    ),
    Case(
        "min-above-max-replicas",
        _both(_set("spec.autoscaling.minReplicas", 5), _set("spec.autoscaling.maxReplicas", 2)),
        "minReplicas",
    ),
    Case("auto-without-prometheus", _set("spec.autoscaling.prometheusUrl", None), "prometheusUrl"),
    Case("mode-unknown", _set("spec.autoscaling.mode", "yolo"), "mode"),
    Case("default-class-missing", _set("spec.priority.defaultClass", "vip"), "defaultClass"),
    Case(
        "levels-repeated",
        _set(
            "spec.priority.classes",
            [
                {"name": "urgent", "level": 1, "ttftTargetSeconds": 1},
                {"name": "standard", "level": 1, "ttftTargetSeconds": 3},
            ],
        ),
        "classes",
    ),
    Case(
        "class-name-invalid",
        _set(
            "spec.priority.classes",
            [
                {"name": "Urgent_1", "level": 1, "ttftTargetSeconds": 1},
                {"name": "standard", "level": 2, "ttftTargetSeconds": 3},
            ],
        ),
        "name",
    ),
    Case("gpus-negative", _set("spec.triton.gpusPerReplica", -1), "gpusPerReplica"),
    Case(
        "gpu-in-resources",
        _set("spec.triton.resources", {"requests": {"nvidia.com/gpu": "2"}}),
        "requests",
    ),
    Case("external-without-uri", _set("spec.retrieval.milvus", {"mode": "external"}), "external"),
    Case("dimension-too-small", _set("spec.retrieval.collection.dimension", 1), "dimension"),
    Case("schedule-not-cron", _set("spec.retrieval.refresh.schedule", "every day"), "schedule"),
    Case(
        "budget-below-min",
        _both(_set("spec.autoscaling.minReplicas", 2), _set("spec.autoscaling.gpuBudget", 1)),
        "gpuBudget",
    ),
    Case("ttft-target-zero", _set("spec.autoscaling.ttftP95TargetSeconds", 0), "ttftP95TargetSeconds"),
    Case(
        "saturation-below-capacity",
        _set(
            "spec.autoscaling.replicaCapacity",
            {"requestsPerSecond": 9.4, "saturationRequestsPerSecond": 8.0},
        ),
        "saturationRequestsPerSecond",
    ),
    Case(
        "prompt-weight-without-mix",
        _set("spec.autoscaling.replicaCapacity", {"requestsPerSecond": 9.4, "promptTokenWeight": 0.07}),
        "promptTokenWeight",
    ),
    Case(
        "prompt-weight-negative",
        _set(
            "spec.autoscaling.replicaCapacity",
            {"requestsPerSecond": 9.4, "promptTokens": 1100, "outputTokens": 210, "promptTokenWeight": -0.1},
        ),
        "promptTokenWeight",
    ),
    Case("instances-outside-bounds", _set("spec.model.instanceCount", 3), "instanceCount"),
    Case("unknown-field", _set("spec.model.maxBatchsize", 8), "maxBatchsize"),
    Case(
        "route-class-unknown",
        _set("spec.gateway.routes", [{"priorityClass": "vip", "intents": ["lost_or_stolen_card"]}]),
        "routes",
    ),
    Case(
        "intent-in-two-routes",
        _set(
            "spec.gateway.routes",
            [
                {"priorityClass": "urgent", "intents": ["lost_or_stolen_card", "compromised_card"]},
                {"priorityClass": "standard", "intents": ["top_up_failed", "compromised_card"]},
            ],
        ),
        "routes",
    ),
    Case(
        "intent-repeated",
        _set(
            "spec.gateway.routes", [{"priorityClass": "urgent", "intents": ["card_arrival", "card_arrival"]}]
        ),
        "intents",
    ),
    Case(
        "intent-invalid",
        _set("spec.gateway.routes", [{"priorityClass": "urgent", "intents": ["lost card"]}]),
        "intents",
    ),
    Case(
        "route-confidence-zero",
        _set(
            "spec.gateway.routes",
            [{"priorityClass": "urgent", "intents": ["card_arrival"], "minConfidence": 0}],
        ),
        "minConfidence",
    ),
    Case(
        "served-model-name-invalid", _set("spec.gateway.servedModelName", "llama chat/v1"), "servedModelName"
    ),
    Case(
        "classifier-pvc-and-uri",
        _set(
            "spec.gateway.classifier",
            {"pvc": {"claimName": "classifier"}, "uri": "https://example.com/classifier.tar.gz"},
        ),
        "classifier",
    ),
    Case("classifier-uri-not-http", _set("spec.gateway.classifier", {"uri": "s3://b/c.tar.gz"}), "uri"),
    Case("gateway-top-k-zero", _set("spec.gateway.topK", 0), "topK"),
    Case("retrieval-share-whole", _set("spec.gateway.retrievalTtftShare", 1), "retrievalTtftShare"),
    Case(
        "refresh-default-without-source", _set("spec.retrieval.refresh", {"schedule": "0 3 * * *"}), "source"
    ),
    Case(
        "refresh-source-url-and-pvc",
        _set(
            "spec.retrieval.refresh",
            {
                "schedule": "0 3 * * *",
                "source": {"url": "https://kb.example.com/a.jsonl", "pvc": {"claimName": "kb", "path": "/a"}},
            },
        ),
        "source",
    ),
    Case(
        "retraining-default-without-data",
        _set("spec.maintenance", {"retraining": {"schedule": "@weekly"}}),
        "data",
    ),
    Case(
        "retraining-default-without-classifier-pvc",
        _set(
            "spec.maintenance",
            {
                "retraining": {
                    "schedule": "@weekly",
                    "data": {"url": "https://data.example.com/train.csv"},
                    "evalData": {"url": "https://data.example.com/held-out.csv"},
                }
            },
        ),
        "retraining",
    ),
    Case(
        "retraining-default-without-held-out-data",
        _both(
            _set("spec.gateway.classifier", {"pvc": {"claimName": "classifier", "readOnly": False}}),
            _set(
                "spec.maintenance",
                {"retraining": {"schedule": "@weekly", "data": {"url": "https://data.example.com/t.csv"}}},
            ),
        ),
        "evalData",
    ),
    Case(
        "retraining-f1-drop-above-one",
        _set("spec.maintenance", {"retraining": {"schedule": "@weekly", "image": "x:1", "maxF1Drop": 2}}),
        "maxF1Drop",
    ),
    Case(
        "evaluation-max-age-below-a-minute",
        _set(
            "spec.monitoring",
            {
                "evaluation": {
                    "schedule": "@daily",
                    "data": {"url": "https://d.example.com/e.csv"},
                    "maxAgeSeconds": 5,
                }
            },
        ),
        "maxAgeSeconds",
    ),
    Case(
        "evaluation-data-url-not-http",
        _set("spec.monitoring", {"evaluation": {"schedule": "@daily", "data": {"url": "s3://b/e.csv"}}}),
        "url",
    ),
    Case(
        "evaluation-data-path-is-a-directory",
        _set(
            "spec.monitoring",
            {"evaluation": {"schedule": "@daily", "data": {"pvc": {"claimName": "data", "path": "/sets/"}}}},
        ),
        "path",
    ),
    Case(
        "evaluation-without-data",
        _set("spec.monitoring", {"evaluation": {"schedule": "@daily"}}),
        "data",
    ),
]


def _triton(field: str, value: Any) -> Callable[[Doc], None]:
    return _set(f"spec.triton.{field}", value)


def _toleration(**fields: Any) -> Callable[[Doc], None]:
    return _triton("tolerations", [fields])


#: Fields that end up in Kubernetes objects, checked as strictly as those objects' own API does.
FIELD_SYNTAX_CASES: list[Case] = [
    Case("cron-minute-61", _set("spec.retrieval.refresh.schedule", "61 * * * *"), "schedule"),
    Case("cron-hour-24", _set("spec.retrieval.refresh.schedule", "0 24 * * *"), "schedule"),
    Case("cron-day-zero", _set("spec.retrieval.refresh.schedule", "0 3 0 * *"), "schedule"),
    Case("cron-month-13", _set("spec.retrieval.refresh.schedule", "0 3 * 13 *"), "schedule"),
    Case("cron-weekday-7", _set("spec.retrieval.refresh.schedule", "0 3 * * 7"), "schedule"),
    Case("cron-weekday-name", _set("spec.retrieval.refresh.schedule", "0 3 * * funday"), "schedule"),
    Case("cron-step-zero", _set("spec.retrieval.refresh.schedule", "*/0 * * * *"), "schedule"),
    Case("cron-six-fields", _set("spec.retrieval.refresh.schedule", "0 0 3 * * *"), "schedule"),
    Case("cron-tz-prefix", _set("spec.retrieval.refresh.schedule", "CRON_TZ=UTC 0 3 * * *"), "schedule"),
    Case("time-zone-unknown", _set("spec.retrieval.refresh.timeZone", "Mars/Olympus"), "timeZone"),
    Case("time-zone-local", _set("spec.retrieval.refresh.timeZone", "Local"), "timeZone"),
    Case("cpu-negative", _triton("resources", {"requests": {"cpu": "-1"}}), "requests"),
    Case("memory-plus-sign", _triton("resources", {"limits": {"memory": "+4Gi"}}), "limits"),
    Case("quantity-nonsense", _triton("resources", {"requests": {"memory": "1.2.3"}}), "requests"),
    Case("quantity-unit-unknown", _triton("resources", {"requests": {"memory": "4GB"}}), "requests"),
    Case(
        "request-above-limit",
        _triton("resources", {"requests": {"memory": "64Gi"}, "limits": {"memory": "32Gi"}}),
        "requests",
    ),
    Case("resource-name-unknown", _triton("resources", {"requests": {"gpu": "1"}}), "requests"),
    Case(
        "gateway-cpu-negative",
        _set("spec.gateway.resources", {"requests": {"cpu": "-500m"}}),
        "requests",
    ),
    Case("storage-negative", _set("spec.retrieval.milvus.managed", {"storageSize": "-20Gi"}), "storageSize"),
    Case("storage-zero", _set("spec.retrieval.milvus.managed", {"storageSize": "0Gi"}), "storageSize"),
    Case(
        "storage-class-invalid",
        _set("spec.retrieval.milvus.managed", {"storageClassName": "Fast_SSD"}),
        "storageClassName",
    ),
    Case(
        "pvc-name-invalid",
        _set("spec.model.repository", {"pvc": {"claimName": "Models_1"}}),
        "claimName",
    ),
    Case(
        "secret-name-invalid",
        _set("spec.model.repository.credentialsSecret", "my.Secret"),
        "credentialsSecret",
    ),
    Case(
        "secret-key-invalid",
        _set(
            "spec.retrieval.milvus",
            {
                "mode": "external",
                "external": {"uri": "http://milvus:19530", "tokenSecretRef": {"name": "tok", "key": "a b"}},
            },
        ),
        "key",
    ),
    Case("priority-class-name-invalid", _triton("priorityClassName", "High Priority"), "priorityClassName"),
    Case("service-account-invalid", _triton("serviceAccountName", "sa_1"), "serviceAccountName"),
    Case("pull-secret-invalid", _triton("imagePullSecrets", ["Regcred"]), "imagePullSecrets"),
    Case("label-value-too-long", _triton("podLabels", {"team": "x" * 64}), "podLabels"),
    Case("label-value-syntax", _triton("podLabels", {"team": "a b"}), "podLabels"),
    Case("label-key-syntax", _triton("podLabels", {"bad key": "x"}), "podLabels"),
    Case("label-key-name-too-long", _triton("podLabels", {"example.com/" + "a" * 64: "x"}), "podLabels"),
    Case("label-key-prefix-invalid", _triton("podLabels", {"Example.com/team": "x"}), "podLabels"),
    Case("annotation-key-syntax", _triton("podAnnotations", {"-lead": "x"}), "podAnnotations"),
    Case("node-selector-value-syntax", _triton("nodeSelector", {"pool": "gpu/a100"}), "nodeSelector"),
    Case("node-selector-key-syntax", _triton("nodeSelector", {"a/b/c": "x"}), "nodeSelector"),
    Case("gateway-node-selector-key", _set("spec.gateway.nodeSelector", {"a b": "x"}), "nodeSelector"),
    Case("env-name-digit-first", _triton("env", [{"name": "1ABC", "value": "x"}]), "triton.env"),
    Case("env-name-equals", _triton("env", [{"name": "A=B", "value": "x"}]), "triton.env"),
    Case(
        "job-env-name-invalid",
        _set("spec.retrieval.refresh.env", [{"name": "MY VAR", "value": "x"}]),
        "refresh.env",
    ),
    Case(
        "toleration-exists-with-value",
        _toleration(key="nvidia.com/gpu", operator="Exists", value="true"),
        "tolerations",
    ),
    Case("toleration-no-key-equal", _toleration(operator="Equal", value="x"), "tolerations"),
    Case(
        "toleration-seconds-without-noexecute",
        _toleration(key="k", operator="Exists", effect="NoSchedule", tolerationSeconds=30),
        "tolerationSeconds",
    ),
    Case("toleration-key-syntax", _toleration(key="bad key", operator="Exists"), "tolerations"),
    Case("toleration-value-syntax", _toleration(key="k", operator="Equal", value="a b"), "tolerations"),
    Case("toleration-effect-unknown", _toleration(key="k", operator="Exists", effect="NoRun"), "effect"),
    Case("name-too-long", _set("metadata.name", "c" * 42), "metadata.name"),
    Case("name-digit-first", _set("metadata.name", "1chat"), "metadata.name"),
    Case("name-with-dot", _set("metadata.name", "chat.prod"), "metadata.name"),
]
INVALID_CASES.extend(FIELD_SYNTAX_CASES)

#: Mutations the table's strictness must still allow (each as the API would accept it).
VALID_VARIANTS: list[Case] = [
    Case(
        "cron-names-steps-lists", _set("spec.retrieval.refresh.schedule", "*/15 0-6,22 ? JAN-mar mon-FRI"), ""
    ),
    Case("cron-bounds", _set("spec.retrieval.refresh.schedule", "59 23 31 12 6"), ""),
    Case("cron-macro", _set("spec.retrieval.refresh.schedule", "@weekly"), ""),
    Case("time-zone-iana", _set("spec.retrieval.refresh.timeZone", "America/Argentina/Buenos_Aires"), ""),
    Case("time-zone-utc", _set("spec.retrieval.refresh.timeZone", "Etc/GMT+5"), ""),
    Case(
        "quantities",
        _triton(
            "resources",
            {
                "requests": {"cpu": "500m", "memory": "1.5Gi", "hugepages-2Mi": "0", "example.com/fpga": "1"},
                "limits": {"cpu": "2", "memory": "2e9", "hugepages-2Mi": "0"},
            },
        ),
        "",
    ),
    Case(
        "storage",
        _set("spec.retrieval.milvus.managed", {"storageSize": "0.5Ti", "storageClassName": "fast.ssd"}),
        "",
    ),
    Case(
        "names",
        _both(
            _triton("priorityClassName", "system.high-priority"),
            _triton("serviceAccountName", "triton-sa"),
            _triton("imagePullSecrets", ["regcred"]),
        ),
        "",
    ),
    Case(
        "labels-and-annotations",
        _both(
            _triton("podLabels", {"team": "x" * 63, "example.com/tier": "", "a.b/C_d-e.f": "v1.2_3-x"}),
            _triton("podAnnotations", {"prometheus.io/scrape": 'anything at all: {"x": 1}'}),
            _triton("nodeSelector", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}),
        ),
        "",
    ),
    Case(
        "tolerations",
        _triton(
            "tolerations",
            [
                {"operator": "Exists"},
                {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"},
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 60,
                },
            ],
        ),
        "",
    ),
    Case("env", _triton("env", [{"name": "_X.y-z", "value": ""}]), ""),
    Case("name-longest", _set("metadata.name", "c" * 41), ""),
]


def invalid_doc(case: Case, name: str = "chat") -> Doc:
    doc = copy.deepcopy(valid_doc(name))
    case.mutate(doc)
    if doc["spec"]["autoscaling"].get("prometheusUrl") is None:
        doc["spec"]["autoscaling"].pop("prometheusUrl", None)
    return doc
