"""Model repositories for the local Triton: the ``emulated_llm`` Python-backend model.

``emulated_llm`` stands in for a TensorRT-LLM engine so Triton's real batcher, priority queues and
live reloads run on CPU with GPU-like timing; ``emulated_chat`` is the gateway's streaming stand-in.
Details: docs/fidelity.md ("The real side") and docs/gateway.md ("The emulated_chat model").
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phoenix_operator.api.models import PhoenixDeploymentSpec

#: Name the model is registered under by default.
EMULATED_LLM = "emulated_llm"

#: A dynamic batching block with two priority levels (1 = urgent, 2 = standard).
DEFAULT_DYNAMIC_BATCHING = """\
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 10000
  priority_levels: 2
  default_priority_level: 2
}"""


def emulated_llm_model_source() -> str:
    """Source of the Python-backend ``model.py`` (shipped inside this package)."""
    return resources.files(__package__).joinpath("emulated_llm_model.py").read_text()


def emulated_llm_config(
    name: str = EMULATED_LLM,
    *,
    max_batch_size: int = 32,
    step_base_ms: float = 20.0,
    step_per_row_ms: float = 2.0,
    output_tokens: int = 16,
    instance_count: int = 1,
    dynamic_batching: str | None = DEFAULT_DYNAMIC_BATCHING,
    extra: str = "",
) -> str:
    """``config.pbtxt`` text for the emulated model; ``dynamic_batching`` is inserted verbatim.

    Pass ``dynamic_batching=None`` for no batcher (each request executes alone).
    """
    params = {
        "step_base_ms": step_base_ms,
        "step_per_row_ms": step_per_row_ms,
        "output_tokens": output_tokens,
    }
    param_text = "\n".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()
    )
    parts = [
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        'input [ { name: "PROMPT_TOKENS" data_type: TYPE_INT32 dims: [ 1 ] } ]',
        'output [ { name: "TOKENS" data_type: TYPE_INT32 dims: [ 1 ] } ]',
        f"instance_group [ {{ kind: KIND_CPU count: {instance_count} }} ]",
        param_text,
    ]
    if dynamic_batching:
        parts.append(dynamic_batching.strip())
    if extra:
        parts.append(extra.strip())
    return "\n".join(parts) + "\n"


def write_model_repository(
    repository: Path, name: str, config_pbtxt: str, *, model_source: str | None = None
) -> Path:
    """Write ``<repository>/<name>/config.pbtxt`` and ``<name>/1/model.py``; returns the model dir.

    ``config_pbtxt`` is written as given (renderer output or :func:`emulated_llm_config`);
    ``model_source`` defaults to the emulated LLM. Existing files are replaced, so a repository
    can be rewritten between server starts.
    """
    model_dir = Path(repository) / name
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_pbtxt)
    source = model_source if model_source is not None else emulated_llm_model_source()
    (version_dir / "model.py").write_text(source)
    return model_dir


#: Name of the streaming chat model (``emulated_chat_model.py``) the gateway is tested against.
EMULATED_CHAT = "emulated_chat"


def emulated_chat_model_source() -> str:
    """Source of the decoupled chat model's ``model.py`` (shipped inside this package)."""
    return resources.files(__package__).joinpath("emulated_chat_model.py").read_text()


def emulated_chat_spec(
    spec: PhoenixDeploymentSpec,
    *,
    prefill_ms: float = 50.0,
    per_token_ms: float = 10.0,
    default_max_tokens: int = 16,
    events_path: Path | None = None,
) -> PhoenixDeploymentSpec:
    """``spec`` with its model replaced by ``emulated_chat`` on CPU (name kept from ``spec.model``).

    Batching, priority classes, queue policies, max batch size and instance count stay the
    spec's, so :func:`emulated_chat_config` renders them with the operator's own renderer and
    the gateway and Triton read one spec. Triton 2.51 (the local build) predates
    ``model_metrics``, hence no TTFT buckets.
    """
    from phoenix_operator.api.models import TensorSpec

    params = {
        "prefill_ms": str(prefill_ms),
        "per_token_ms": str(per_token_ms),
        "default_max_tokens": str(default_max_tokens),
    }
    if events_path is not None:
        params["events_path"] = str(events_path)
    model = spec.model.model_copy(
        update={
            "backend": "python",
            "decoupled": True,
            "parameters": params,
            "inputs": [
                TensorSpec(name="PROMPT", data_type="TYPE_STRING", dims=[1]),
                TensorSpec(name="MAX_TOKENS", data_type="TYPE_INT32", dims=[1], optional=True),
            ],
            "outputs": [TensorSpec(name="TEXT_OUTPUT", data_type="TYPE_STRING", dims=[1])],
        }
    )
    triton = spec.triton.model_copy(update={"gpus_per_replica": 0, "ttft_buckets_ms": []})
    return spec.model_copy(update={"model": model, "triton": triton})


def emulated_chat_config(spec: PhoenixDeploymentSpec) -> str:
    """``config.pbtxt`` of an :func:`emulated_chat_spec` spec, rendered by ``render.tritonconfig``."""
    from phoenix_operator.render.tritonconfig import model_config_dict, to_pbtxt

    return to_pbtxt(model_config_dict(spec))
