"""Triton's per-request trace, parsed into spans and the batches they ran in."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Span:
    """One request as Triton's trace saw it (steady-clock nanoseconds)."""

    request_id: str
    queue_start_ns: int
    request_end_ns: int
    compute_start_ns: int | None = None
    compute_end_ns: int | None = None

    @property
    def executed(self) -> bool:
        return self.compute_start_ns is not None

    @property
    def queue_s(self) -> float | None:
        if self.compute_start_ns is None:
            return None
        return (self.compute_start_ns - self.queue_start_ns) / 1e9

    @property
    def latency_s(self) -> float:
        return (self.request_end_ns - self.queue_start_ns) / 1e9


def parse_trace(entries: Iterable[Mapping[str, Any]]) -> dict[str, Span]:
    """Triton trace JSON entries (``level=TIMESTAMPS``) → spans of requests that carry an id."""
    ids: dict[int, str] = {}
    stamps: dict[int, dict[str, int]] = defaultdict(dict)
    for entry in entries:
        tid = int(entry["id"])
        if entry.get("request_id"):
            ids[tid] = str(entry["request_id"])
        for stamp in entry.get("timestamps", ()):
            stamps[tid][str(stamp["name"])] = int(stamp["ns"])
    out: dict[str, Span] = {}
    for tid, rid in ids.items():
        ts = stamps.get(tid, {})
        if "QUEUE_START" not in ts or "REQUEST_END" not in ts:
            continue
        out[rid] = Span(
            request_id=rid,
            queue_start_ns=ts["QUEUE_START"],
            request_end_ns=ts["REQUEST_END"],
            compute_start_ns=ts.get("COMPUTE_START"),
            compute_end_ns=ts.get("COMPUTE_END"),
        )
    return out


@dataclass(frozen=True)
class Batch:
    """An executed batch, recovered from the trace (its requests share ``COMPUTE_START``)."""

    start_ns: int
    end_ns: int
    rows: int


def batches_of(spans: Iterable[Span]) -> list[Batch]:
    groups: dict[int, list[Span]] = defaultdict(list)
    for span in spans:
        if span.compute_start_ns is not None:
            groups[span.compute_start_ns].append(span)
    return [
        Batch(start, max(s.compute_end_ns or start for s in group), len(group))
        for start, group in sorted(groups.items())
    ]
