"""A model repository with numbered versions, for testing fine-tuned version promotion on CPU.

``answer_llm`` (``answer_model.py``) answers questions from a per-version table, so version 1 and
version 2 of the same model give different answers. The config comes from the operator's own
renderer (:func:`answer_model_spec` swaps in the model's tensors), pinned to a version by
``version_policy`` like the operator pins a promoted fine-tune.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phoenix_operator.api.models import PhoenixDeploymentSpec

#: Name the versioned model is registered under by default.
ANSWER_MODEL = "answer_llm"
#: What the model answers to a question its table does not hold.
UNKNOWN_ANSWER = "I do not know."


def answer_model_source() -> str:
    """Source of the Python-backend ``model.py`` (shipped inside this package)."""
    return resources.files(__package__).joinpath("answer_model.py").read_text()


def lookup_answer(answers: Mapping[str, str], question: str) -> str:
    """What a version with table ``answers`` replies to ``question`` (the model's own matching)."""
    table = {" ".join(q.lower().split()): a for q, a in answers.items()}
    return table.get(" ".join(question.lower().split()), UNKNOWN_ANSWER)


def answer_model_spec(spec: PhoenixDeploymentSpec, name: str = ANSWER_MODEL) -> PhoenixDeploymentSpec:
    """``spec`` with its model replaced by the CPU answer model (no batcher, not decoupled)."""
    from phoenix_operator.api.models import TensorSpec

    model = spec.model.model_copy(
        update={
            "name": name,
            "backend": "python",
            "decoupled": False,
            "max_batch_size": 8,
            "instance_count": 1,
            "parameters": {},
            "inputs": [TensorSpec(name="PROMPT", data_type="TYPE_STRING", dims=[1])],
            "outputs": [TensorSpec(name="TEXT_OUTPUT", data_type="TYPE_STRING", dims=[1])],
        }
    )
    triton = spec.triton.model_copy(update={"gpus_per_replica": 0, "ttft_buckets_ms": []})
    sizes = [b for b in spec.batching.preferred_batch_sizes if b <= model.max_batch_size] or [1]
    batching = spec.batching.model_copy(update={"enabled": False, "preferred_batch_sizes": sizes})
    # Without priority levels the gateway has no class to route to.
    gateway = spec.gateway.model_copy(update={"routes": []})
    swapped = spec.model_copy(
        update={"model": model, "triton": triton, "batching": batching, "priority": None, "gateway": gateway}
    )
    # Validated as the API server would: the result must be a spec a cluster accepts.
    return type(spec).model_validate(swapped.model_dump(mode="json", by_alias=True, exclude_none=True))


def write_model_version(repository: Path, name: str, version: int, answers: Mapping[str, str]) -> Path:
    """Write ``<repository>/<name>/<version>/`` (``model.py`` and its ``answers.json``), as a
    fine-tuning job writes its candidate; returns the version directory."""
    if version < 1:
        raise ValueError(f"Triton model versions start at 1, got {version}")
    directory = Path(repository) / name / str(version)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "answers.json").write_text(json.dumps(dict(answers), indent=1, sort_keys=True))
    (directory / "model.py").write_text(answer_model_source())
    return directory


def write_model_config(repository: Path, name: str, config_pbtxt: str) -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` (the renderer's output, as the ConfigMap holds it)."""
    model_dir = Path(repository) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "config.pbtxt"
    path.write_text(config_pbtxt)
    return path
