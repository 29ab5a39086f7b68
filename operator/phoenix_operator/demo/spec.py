"""``examples/production.yaml``, adjusted for the demo (pure: documents in, documents + notes out).

The demo applies the production example as it is, except for what cannot be the same on a laptop
or must follow the demo's time scale. Every change is returned as a one-line note that the demo
prints, so nothing is adjusted silently.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from phoenix_operator import API_GROUP, KIND
from phoenix_operator.api.models import PhoenixDeployment
from phoenix_operator.demo.timescale import TimeScale

#: kwok's pod-ready stage waits this long (a Go duration) before it marks a pod Ready.
KWOK_READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"
DEFAULT_EXAMPLE = Path("examples") / "production.yaml"


def find_example(name: Path = DEFAULT_EXAMPLE) -> Path:
    """The example next to the checkout (or under the working directory)."""
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo):
        candidate = base / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found (looked in {Path.cwd()} and {repo}); pass --spec PATH")


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def is_phoenix_deployment(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == KIND and str(doc.get("apiVersion", "")).startswith(API_GROUP + "/")


@dataclass(frozen=True)
class DemoSpec:
    """The documents to apply, the PhoenixDeployment among them, and what was changed."""

    documents: list[dict[str, Any]]
    deployment: PhoenixDeployment
    notes: list[str]

    @property
    def name(self) -> str:
        return str(self.deployment.metadata["name"])


def adjust(
    documents: Iterable[dict[str, Any]],
    *,
    namespace: str,
    prometheus_url: str,
    timescale: TimeScale,
    startup_s: float,
) -> DemoSpec:
    """Adjust the example for the demo.

    ``startup_s`` is a replica's warm-up in simulated seconds (the profile's); the spec's time
    fields are simulated seconds too and are divided by the speed-up (see ``timescale``).
    """
    docs = [copy.deepcopy(d) for d in documents]
    notes: list[str] = []
    deployments = [d for d in docs if is_phoenix_deployment(d)]
    if len(deployments) != 1:
        raise ValueError(f"the demo needs exactly one {KIND}, found {len(deployments)}")
    for doc in docs:
        meta = doc.setdefault("metadata", {})
        meta["namespace"] = namespace
    notes.append(f"every object goes to namespace {namespace}")
    pd = deployments[0]
    spec = pd.setdefault("spec", {})
    auto = spec.setdefault("autoscaling", {})
    if auto.get("mode", "off") != "auto":
        notes.append(f"autoscaling.mode: {auto.get('mode', 'off')} -> auto")
        auto["mode"] = "auto"
    notes.append(
        f"autoscaling.prometheusUrl: {auto.get('prometheusUrl', '(none)')} -> {prometheus_url} "
        "(the demo's Prometheus, scraping the twin every second)"
    )
    auto["prometheusUrl"] = prometheus_url
    s = timescale.speedup

    def scaled(field: str, default: float, minimum: int = 0) -> None:
        before = float(auto.get(field, default))
        after = timescale.wall_int(before, minimum)
        auto[field] = after
        notes.append(f"autoscaling.{field}: {before:g} -> {after} wall s ({before:g} simulated s / {s:g})")

    interval_before = float(auto.get("intervalSeconds", 30))
    auto["intervalSeconds"] = timescale.interval_s(interval_before)
    notes.append(
        f"autoscaling.intervalSeconds: {interval_before:g} -> {auto['intervalSeconds']} wall s "
        f"({interval_before:g} simulated s / {s:g}, at least 5)"
    )
    scaled("scaleDownStabilizationSeconds", 300)
    if auto.get("scaleUpStabilizationSeconds"):
        scaled("scaleUpStabilizationSeconds", 0)
    startup_wall = timescale.wall_int(startup_s)
    notes.append(
        f"autoscaling.replicaStartupSeconds: {auto.get('replicaStartupSeconds', 120)} -> {startup_wall} "
        f"wall s (a replica's {startup_s:g} s warm-up / {s:g})"
    )
    auto["replicaStartupSeconds"] = startup_wall
    triton = spec.setdefault("triton", {})
    annotations = dict(triton.get("podAnnotations") or {})
    annotations[KWOK_READY_DELAY] = timescale.kwok_delay(startup_s)
    triton["podAnnotations"] = annotations
    notes.append(
        f"triton.podAnnotations[{KWOK_READY_DELAY}] = {annotations[KWOK_READY_DELAY]}: kwok turns a new "
        "Triton pod Ready only after the scaled warm-up (image pull + model load)"
    )
    deployment = PhoenixDeployment.model_validate(pd)  # fails here, not in the API server
    return DemoSpec(documents=docs, deployment=deployment, notes=notes)


def static_notes(deployment: PhoenixDeployment) -> Sequence[str]:
    """What ``--no-operator`` runs instead of the control loop."""
    spec = deployment.spec
    return [
        f"no operator: the twin serves with the spec's static {spec.triton.replicas} replicas "
        f"and its batching ({spec.batching.preferred_batch_sizes} preferred, "
        f"{spec.batching.max_queue_delay_microseconds} us delay) for the whole run",
    ]
