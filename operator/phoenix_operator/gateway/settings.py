"""What the gateway runs with: the PhoenixDeployment spec plus the addresses the operator passes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from phoenix_operator.api.models import PhoenixDeployment, PhoenixDeploymentSpec, PriorityClass


@dataclass(frozen=True)
class ModelIO:
    """Tensor names of the Triton model; ``None`` = the model has no such tensor."""

    prompt: str = "PROMPT"
    output: str = "TEXT_OUTPUT"
    max_tokens: str | None = "MAX_TOKENS"
    stream: str | None = None
    sampling_parameters: str | None = None


#: ``phoenix``: the emulated chat model's layout; ``vllm``: Triton's vLLM backend.
MODEL_IO_LAYOUTS: dict[str, ModelIO] = {
    "phoenix": ModelIO(),
    "vllm": ModelIO(
        prompt="text_input",
        output="text_output",
        max_tokens=None,
        stream="stream",
        sampling_parameters="sampling_parameters",
    ),
}


class SpecFileError(ValueError):
    """The --spec file is unreadable or not a valid PhoenixDeployment (or bare spec)."""


def load_spec(path: Path) -> PhoenixDeploymentSpec:
    """A PhoenixDeployment object, or only its ``spec`` (as the operator mounts it), from YAML/JSON."""
    try:
        data: Any = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecFileError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecFileError(f"{path} does not hold a mapping")
    try:
        if "spec" in data and "kind" in data:
            return PhoenixDeployment.model_validate(data).spec
        return PhoenixDeploymentSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecFileError(f"{path} is not a valid PhoenixDeployment spec:\n{exc}") from None


@dataclass(frozen=True)
class GatewaySettings:
    """Everything one gateway process needs; built once at start-up."""

    spec: PhoenixDeploymentSpec
    triton_url: str
    milvus_uri: str | None = None
    milvus_token: str | None = None
    classifier_dir: Path | None = None
    worker_threads: int = 2
    io_threads: int = 8
    model_io: ModelIO | None = None
    probe_timeout_s: float = 2.0

    @property
    def served_model_name(self) -> str:
        return self.spec.gateway.served_model_name or self.spec.model.name

    @property
    def triton_model(self) -> str:
        return self.spec.model.name

    @property
    def io(self) -> ModelIO:
        if self.model_io is not None:
            return self.model_io
        return MODEL_IO_LAYOUTS["vllm" if self.spec.model.backend == "vllm" else "phoenix"]

    @property
    def retrieval_enabled(self) -> bool:
        return self.spec.retrieval is not None and bool(self.milvus_uri)

    @property
    def milvus_db(self) -> str:
        retrieval = self.spec.retrieval
        if retrieval is not None and retrieval.milvus.external is not None:
            return retrieval.milvus.external.db_name
        return "default"

    def priority_class(self, name: str) -> PriorityClass | None:
        if self.spec.priority is None:
            return None
        return next((c for c in self.spec.priority.classes if c.name == name), None)

    def queue_timeout_us(self, name: str) -> int | None:
        """The class's Triton queue timeout, sent per request (``None``: the class never times out)."""
        cls = self.priority_class(name)
        if cls is None or cls.queue_policy.timeout_microseconds <= 0:
            return None
        return cls.queue_policy.timeout_microseconds

    def class_names(self) -> list[str]:
        if self.spec.priority is None:
            return ["default"]
        return [c.name for c in self.spec.priority.classes]
