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
]


def invalid_doc(case: Case, name: str = "chat") -> Doc:
    doc = copy.deepcopy(valid_doc(name))
    case.mutate(doc)
    if doc["spec"]["autoscaling"].get("prometheusUrl") is None:
        doc["spec"]["autoscaling"].pop("prometheusUrl", None)
    return doc
