"""Versioned knowledge-base collections behind one alias: the decisions, as pure functions.

The gateway searches the alias ``spec.retrieval.collection.name``; each ingest builds
``<name>_v<N>`` and moves the alias only once that collection is complete. A version carries its
state in collection properties: ``building`` from creation until the alias points at it, then
``promoted`` (it has served). A version that is neither promoted nor the alias target was left by
a failed or killed run and is dropped by the next one. The alias target is never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Collection properties Phoenix keeps on each version (Milvus keeps properties; Milvus Lite
#: drops a schema's description, so nothing is stored there).
PROP_STATE = "phoenix.kb.state"
PROP_SOURCE_SHA = "phoenix.kb.source_sha256"
PROP_SOURCE = "phoenix.kb.source"
PROP_CHUNKS = "phoenix.kb.chunks"
PROP_DOCUMENTS = "phoenix.kb.documents"
PROP_CREATED = "phoenix.kb.created"
PROP_EMBEDDER = "phoenix.kb.embedder"

STATE_BUILDING = "building"
STATE_PROMOTED = "promoted"

DEFAULT_RETENTION = 2


@dataclass(frozen=True)
class Version:
    """One ``<alias>_v<N>`` collection as found in Milvus."""

    name: str
    number: int
    state: str
    source_sha256: str | None = None
    rows: int | None = None
    created: str | None = None

    @property
    def promoted(self) -> bool:
        return self.state == STATE_PROMOTED


def version_name(alias: str, number: int) -> str:
    return f"{alias}_v{number}"


def version_number(alias: str, collection: str) -> int | None:
    """N when ``collection`` is ``<alias>_v<N>``, else None (other collections are not ours)."""
    match = re.fullmatch(re.escape(alias) + r"_v([1-9][0-9]*)", collection)
    return int(match.group(1)) if match else None


def versions_of(alias: str, collections: Iterable[str]) -> list[int]:
    """Version numbers among ``collections``, ascending."""
    return sorted(n for c in collections if (n := version_number(alias, c)) is not None)


def next_version(alias: str, collections: Iterable[str]) -> int:
    return max(versions_of(alias, collections), default=0) + 1


def leftovers(versions: Sequence[Version], target: str | None) -> list[Version]:
    """Versions a failed or killed run left behind: never promoted and not the alias target."""
    return [v for v in versions if not v.promoted and v.name != target]


def unchanged(versions: Sequence[Version], target: str | None, source_sha256: str) -> Version | None:
    """The alias target when it was built from exactly this source (an ingest then does nothing)."""
    for v in versions:
        if v.name == target and v.source_sha256 == source_sha256:
            return v
    return None


def to_retire(versions: Sequence[Version], target: str | None, keep: int) -> list[Version]:
    """Promoted versions beyond the ``keep`` newest, counting the alias target first; never the target.

    With the default ``keep=2`` the live version and the one before it stay, so one rollback is
    always possible; after a rollback the newer version stays too (it may be rolled forward).
    """
    if keep < 1:
        raise ValueError("retention must keep at least one version (the live one)")
    promoted = sorted((v for v in versions if v.promoted), key=lambda v: v.number, reverse=True)
    kept = [v for v in promoted if v.name == target]
    for v in promoted:
        if len(kept) >= keep:
            break
        if v not in kept:
            kept.append(v)
    return [v for v in promoted if v not in kept and v.name != target]


class RollbackError(ValueError):
    """No version to roll back to; the message says what exists."""


def rollback_target(versions: Sequence[Version], target: str | None, to: int | None = None) -> Version:
    """The version a rollback points the alias at: ``to`` if given, else the newest promoted one older
    than the current target."""
    promoted = {v.number: v for v in versions if v.promoted}
    names = ", ".join(v.name for v in sorted(promoted.values(), key=lambda v: v.number)) or "none"
    if to is not None:
        if to not in promoted:
            raise RollbackError(f"version {to} is not a promoted version (promoted: {names})")
        if promoted[to].name == target:
            raise RollbackError(f"the alias already points at {promoted[to].name}")
        return promoted[to]
    current = next((v for v in versions if v.name == target), None)
    if current is None:
        raise RollbackError("the alias points at no version yet: nothing to roll back from")
    older = [v for n, v in sorted(promoted.items()) if n < current.number]
    if not older:
        raise RollbackError(f"no promoted version older than {current.name} (promoted: {names})")
    return older[-1]
