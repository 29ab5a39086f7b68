"""Data that ships with the package: the default traces and the intent-classification set.

Each folder carries the README with the attribution its licence asks for. Paths come from
``importlib.resources`` so an installed wheel works the same as a checkout.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

AZURE_CONVERSATION_TRACE = "azure-llm-2023-conv.csv"
MOONCAKE_CONVERSATION_TRACE = "mooncake-fast25-conversation.jsonl"


def _path(*parts: str) -> Path:
    path = Path(str(resources.files(__name__).joinpath(*parts)))
    if not path.is_file():
        raise FileNotFoundError(f"package data {'/'.join(parts)} is missing from this install")
    return path


def azure_trace() -> Path:
    """The Azure LLM inference trace 2023, conversation service (CC-BY 4.0, traces/README.md)."""
    return _path("traces", AZURE_CONVERSATION_TRACE)


def mooncake_trace() -> Path:
    """The Mooncake FAST'25 conversation trace (Apache-2.0, traces/README.md)."""
    return _path("traces", MOONCAKE_CONVERSATION_TRACE)


def banking77(split: str) -> Path:
    """BANKING77 ``train`` or ``test`` split as ``text,category`` CSV (CC-BY 4.0, banking77/README.md)."""
    if split not in ("train", "test"):
        raise ValueError(f"BANKING77 has splits 'train' and 'test', not {split!r}")
    return _path("banking77", f"{split}.csv")


def banking77_categories() -> Path:
    """The 77 intent names of BANKING77, as a JSON list."""
    return _path("banking77", "categories.json")
