"""Serving profiles: every number the simulator uses for one model on one GPU, in one YAML file.

Profiles ship inside the package (``sim/profiles/*.yaml``); each value carries its source in a
comment there. Nothing here reads data from outside the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from phoenix_operator.sim.config import BatcherConfig
from phoenix_operator.sim.request import DEFAULT_CLASSES

DEFAULT_PROFILE = "h100-llama2-7b"


@dataclass(frozen=True)
class EngineProfile:
    """The LLM engine on one GPU (see the YAML for the meaning and source of each field)."""

    max_num_seqs: int
    max_model_len: int
    max_prefill_tokens: int
    kv_capacity_tokens: int
    kv_bytes_per_token: int
    iteration_overhead_s: float
    decode_attention_s_per_kv_token: float
    prefill_attention_s_per_token_sq: float
    linear_ms_by_tokens: Mapping[int, float]
    #: Tokens per KV block (vLLM's ``block_size``): KV is allocated a block at a time.
    kv_block_tokens: int = 16
    #: Share of the KV blocks a new request may not take (vLLM's admission watermark, 1 %).
    kv_watermark: float = 0.01

    def __post_init__(self) -> None:
        if self.kv_block_tokens < 1 or not 0.0 <= self.kv_watermark < 1.0:
            raise ValueError("need kv_block_tokens >= 1 and 0 <= kv_watermark < 1")
        if self.kv_capacity_tokens < self.kv_block_tokens:
            raise ValueError("kv_capacity_tokens must hold at least one KV block")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    engine: EngineProfile
    #: Pod creation to READY: image pull + weight load + engine warm-up.
    startup_s: float
    price_per_gpu_hour_usd: float
    #: Utilisation the static/oracle sizing rule plans for (capacity headroom).
    planning_utilization: float
    #: Batching config a fresh deployment starts with.
    batching: BatcherConfig
    #: Delay until a live batching change is in force, and dispatch pause meanwhile.
    batching_apply_s: float = 0.0
    batching_pause_s: float = 0.0
    #: Priority-class name -> Triton priority value.
    classes: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    #: Where it was loaded from (for reports).
    path: str = ""


def _engine(data: Mapping[str, Any]) -> EngineProfile:
    table = {int(k): float(v) for k, v in dict(data["linear_ms_by_tokens"]).items()}
    return EngineProfile(
        max_num_seqs=int(data["max_num_seqs"]),
        max_model_len=int(data["max_model_len"]),
        max_prefill_tokens=int(data["max_prefill_tokens"]),
        kv_capacity_tokens=int(data["kv_capacity_tokens"]),
        kv_bytes_per_token=int(data["kv_bytes_per_token"]),
        iteration_overhead_s=float(data["iteration_overhead_s"]),
        decode_attention_s_per_kv_token=float(data["decode_attention_s_per_kv_token"]),
        prefill_attention_s_per_token_sq=float(data["prefill_attention_s_per_token_sq"]),
        linear_ms_by_tokens=table,
        kv_block_tokens=int(data.get("kv_block_tokens", 16)),
        kv_watermark=float(data.get("kv_watermark", 0.01)),
    )


def profile_from_dict(data: Mapping[str, Any], path: str = "") -> Profile:
    fleet = data["fleet"]
    classes = {str(k): int(v) for k, v in dict(data.get("priority_classes") or DEFAULT_CLASSES).items()}
    return Profile(
        name=str(data["name"]),
        description=str(data.get("description", "")).strip(),
        engine=_engine(data["engine"]),
        startup_s=float(fleet["startup_s"]),
        price_per_gpu_hour_usd=float(fleet["price_per_gpu_hour_usd"]),
        planning_utilization=float(fleet.get("planning_utilization", 0.8)),
        batching=BatcherConfig.from_dict(data["batching"]),
        batching_apply_s=float(fleet.get("batching_apply_s", 0.0)),
        batching_pause_s=float(fleet.get("batching_pause_s", 0.0)),
        classes=classes,
        path=path,
    )


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> Profile:
    """Load a packaged profile by name (``h100-llama2-7b``) or any YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text(encoding="utf-8")
        where = str(path)
    else:
        res = resources.files("phoenix_operator.sim").joinpath("profiles", f"{name_or_path}.yaml")
        if not res.is_file():
            raise FileNotFoundError(f"no profile named {name_or_path!r} (and no such YAML file)")
        text = res.read_text(encoding="utf-8")
        where = f"phoenix_operator/sim/profiles/{name_or_path}.yaml"
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"profile {where} is not a mapping")
    return profile_from_dict(data, where)
