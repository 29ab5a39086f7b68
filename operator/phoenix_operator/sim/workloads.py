"""Workloads: trace replay with time compression, synthetic diurnal and burst traffic, priority mix.

Reads the Azure LLM inference trace 2023 layout (CC-BY 4.0, Splitwise, ISCA 2024); the default
token distributions are fitted to it. Trace paths are always passed in.
See docs/simulator.md ("Workloads") for formats and attribution.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phoenix_operator.sim.request import DEFAULT_CLASSES, Arrival

#: Default share of requests per priority class.
DEFAULT_MIX: dict[str, float] = {"urgent": 0.10, "standard": 0.60, "bulk": 0.30}


@dataclass(frozen=True)
class TokenDistribution:
    """Log-normal prompt and output lengths, clipped to the observed range."""

    prompt_mu: float
    prompt_sigma: float
    output_mu: float
    output_sigma: float
    prompt_min: int = 1
    prompt_max: int = 16384
    output_min: int = 1
    output_max: int = 2048

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = np.exp(rng.normal(self.prompt_mu, self.prompt_sigma, n))
        o = np.exp(rng.normal(self.output_mu, self.output_sigma, n))
        p = np.clip(np.rint(p), self.prompt_min, self.prompt_max).astype(int)
        o = np.clip(np.rint(o), self.output_min, self.output_max).astype(int)
        return p, o


def fit_tokens(prompt: Sequence[int] | np.ndarray, output: Sequence[int] | np.ndarray) -> TokenDistribution:
    """Maximum-likelihood log-normal fit (mean and std of the logs) with the observed range."""
    p = np.maximum(np.asarray(prompt, dtype=float), 1.0)
    o = np.maximum(np.asarray(output, dtype=float), 1.0)
    lp, lo = np.log(p), np.log(o)
    return TokenDistribution(
        prompt_mu=float(lp.mean()),
        prompt_sigma=float(lp.std()),
        output_mu=float(lo.mean()),
        output_sigma=float(lo.std()),
        prompt_min=int(p.min()),
        prompt_max=int(p.max()),
        output_min=int(o.min()),
        output_max=int(o.max()),
    )


#: Fitted to azure-llm-2023-conv.csv (19,366 requests; prompt median 1,020, output median 129).
AZURE_CONV_TOKENS = TokenDistribution(
    prompt_mu=6.6333,
    prompt_sigma=0.9852,
    output_mu=5.0190,
    output_sigma=0.8590,
    prompt_min=2,
    prompt_max=14050,
    output_min=7,
    output_max=1000,
)


@dataclass(frozen=True)
class Workload:
    """A ready-to-simulate arrival stream plus how it was made."""

    name: str
    arrivals: tuple[Arrival, ...]
    duration_s: float
    source: str = ""
    multiplier: float = 1.0
    window_s: tuple[float, float] | None = None
    seed: int = 0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    #: (start, end) simulated seconds the benchmark's headline figures are measured over
    #: (requests arriving in it, GPU time billed in it); ``None`` = the whole run.
    measured_window_s: tuple[float, float] | None = None
    #: (start, end) simulated seconds whose load the autoscalers' starting fleet is sized for;
    #: ``None`` = they start at the fleet sized for the measured window's average (cold start).
    start_window_s: tuple[float, float] | None = None
    #: How the load was shaped (for reports), e.g. a :class:`PeakShape` as a dict.
    shape: Mapping[str, Any] | None = None

    @property
    def measured(self) -> tuple[float, float]:
        """The measured window, the whole run when none is set."""
        return self.measured_window_s or (0.0, self.duration_s)

    @property
    def mean_rate(self) -> float:
        return len(self.arrivals) / self.duration_s if self.duration_s > 0 else 0.0

    def peak_rate(self, window_s: float = 60.0) -> float:
        """Highest request rate over any ``window_s``-long sliding window."""
        if not self.arrivals:
            return 0.0
        t = np.fromiter((a.time_s for a in self.arrivals), dtype=float, count=len(self.arrivals))
        ends = np.searchsorted(t, t + window_s, side="left")
        best = int((ends - np.arange(len(t))).max())
        return best / min(window_s, max(self.duration_s, 1e-9))

    def summary(self) -> dict[str, Any]:
        prompts = np.fromiter((a.prompt_tokens for a in self.arrivals), dtype=float, count=len(self.arrivals))
        outputs = np.fromiter((a.output_tokens for a in self.arrivals), dtype=float, count=len(self.arrivals))
        return {
            "name": self.name,
            "source": self.source,
            "multiplier": self.multiplier,
            "window_s": list(self.window_s) if self.window_s else None,
            "requests": len(self.arrivals),
            "duration_s": round(self.duration_s, 3),
            "mean_rate_rps": round(self.mean_rate, 3),
            "peak_rate_rps_60s": round(self.peak_rate(60.0), 3),
            "mean_prompt_tokens": round(float(prompts.mean()), 1) if len(prompts) else None,
            "mean_output_tokens": round(float(outputs.mean()), 1) if len(outputs) else None,
            "priority_mix": dict(self.mix),
            "seed": self.seed,
            "measured_window_s": [round(x, 3) for x in self.measured],
            "start_window_s": list(self.start_window_s) if self.start_window_s else None,
            "shape": dict(self.shape) if self.shape else None,
        }


def _parse_times(raw: Sequence[str]) -> np.ndarray:
    try:
        return np.array([float(x) for x in raw], dtype=float)
    except ValueError:
        stamps = np.array([x.strip().replace(" ", "T") for x in raw], dtype="datetime64[ns]")
        return (stamps - stamps.min()).astype("int64") / 1e9


TRACE_FORMATS = ("auto", "azure", "mooncake")


def trace_format_of(path: str | Path, fmt: str = "auto") -> str:
    """``azure`` (CSV) or ``mooncake`` (JSONL); ``auto`` decides by the file's suffix."""
    if fmt not in TRACE_FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; known: {', '.join(TRACE_FORMATS)}")
    if fmt != "auto":
        return fmt
    return "mooncake" if Path(path).suffix.lower() in (".jsonl", ".json") else "azure"


def _read_mooncake(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    times: list[float] = []
    prompt: list[int] = []
    output: list[int] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                times.append(float(row["timestamp"]) / 1000.0)
                prompt.append(int(row["input_length"]))
                output.append(int(row["output_length"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}:{number}: need a JSON object with timestamp (ms), input_length, "
                    f"output_length ({exc})"
                ) from exc
    if not times:
        raise ValueError(f"{path}: no rows")
    return np.asarray(times), np.asarray(prompt), np.asarray(output)


def _read_mooncake_blocks(path: Path) -> list[tuple[int, ...]]:
    """Each row's ``hash_ids`` (ids of the prompt's consecutive 512-token blocks), file order."""
    blocks: list[tuple[int, ...]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                ids = json.loads(line).get("hash_ids") or []
                blocks.append(tuple(int(x) for x in ids))
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}:{number}: hash_ids must be a list of integers ({exc})") from exc
    return blocks


def read_prefix_blocks(path: str | Path, fmt: str = "auto") -> list[tuple[int, ...]]:
    """Prefix block ids per request, in :func:`read_trace`'s order (empty tuples for Azure).

    Mooncake's ``hash_ids`` name the prompt's 512-token blocks (``PREFIX_BLOCK_TOKENS``); equal
    ids are equal content, which is what an engine's prefix cache reuses. Give them to
    ``Arrival(prefix_blocks=...)``.
    """
    path = Path(path)
    if trace_format_of(path, fmt) != "mooncake":
        t, _, _ = read_trace(path, fmt)
        return [()] * len(t)
    times, _, _ = _read_mooncake(path)
    blocks = _read_mooncake_blocks(path)
    return [blocks[i] for i in np.argsort(times, kind="stable")]


def _prefix_blocks_of(path: str | Path, fmt: str, index: np.ndarray) -> list[tuple[int, ...]] | None:
    """The prefix block ids of the trace's requests ``index`` (sorted order); None when it has none."""
    blocks = read_prefix_blocks(path, fmt)
    if not any(blocks):
        return None
    return [blocks[int(i)] for i in index]


def _read_azure(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        needed = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
        if not reader.fieldnames or not needed.issubset(reader.fieldnames):
            raise ValueError(f"{path}: need columns {sorted(needed)}, got {reader.fieldnames}")
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: no rows")
    t = _parse_times([r["TIMESTAMP"] for r in rows])
    p = np.array([int(float(r["ContextTokens"])) for r in rows])
    o = np.array([int(float(r["GeneratedTokens"])) for r in rows])
    return t, p, o


def read_trace(path: str | Path, fmt: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(seconds from the first request, prompt tokens, output tokens), sorted by time.

    ``azure``: CSV with TIMESTAMP, ContextTokens, GeneratedTokens; ``mooncake``: JSONL with
    timestamp (ms), input_length, output_length (its hash_ids, the prompt's prefix blocks, come
    from :func:`read_prefix_blocks` in the same order).
    """
    path = Path(path)
    reader = _read_mooncake if trace_format_of(path, fmt) == "mooncake" else _read_azure
    t, p, o = reader(path)
    order = np.argsort(t, kind="stable")
    t = t[order] - t[order][0]
    return t, p[order], o[order]


def assign_classes(
    n: int,
    seed: int,
    mix: Mapping[str, float] | None = None,
    classes: Mapping[str, int] | None = None,
) -> list[tuple[str, int]]:
    """Deterministic (class name, Triton priority) per request, drawn with the mix's shares."""
    mix = dict(mix or DEFAULT_MIX)
    classes = dict(classes or DEFAULT_CLASSES)
    names = list(mix)
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise ValueError(f"priority mix names unknown classes: {unknown}")
    weights = np.array([mix[c] for c in names], dtype=float)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError("priority mix shares must be >= 0 and not all zero")
    rng = np.random.default_rng([seed, 0x5EED])
    picks = rng.choice(len(names), size=n, p=weights / weights.sum())
    return [(names[i], classes[names[i]]) for i in picks]


def _build(
    name: str,
    times: np.ndarray,
    prompt: np.ndarray,
    output: np.ndarray,
    duration: float,
    seed: int,
    mix: Mapping[str, float] | None,
    classes: Mapping[str, int] | None,
    prefix_blocks: Sequence[tuple[int, ...]] | None = None,
    **meta: Any,
) -> Workload:
    labels = assign_classes(len(times), seed, mix, classes)
    blocks = prefix_blocks if prefix_blocks is not None else [()] * len(times)
    arrivals = tuple(
        Arrival(
            float(t), priority=prio, prompt_tokens=int(p), output_tokens=int(o), klass=klass, prefix_blocks=b
        )
        for t, p, o, b, (klass, prio) in zip(times, prompt, output, blocks, labels, strict=True)
    )
    return Workload(
        name=name,
        arrivals=arrivals,
        duration_s=float(duration),
        seed=seed,
        mix=dict(mix or DEFAULT_MIX),
        **meta,
    )


def trace_workload(
    path: str | Path,
    multiplier: float = 1.0,
    window: tuple[float, float] | None = None,
    seed: int = 0,
    mix: Mapping[str, float] | None = None,
    classes: Mapping[str, int] | None = None,
    fmt: str = "auto",
) -> Workload:
    """Replay a trace, optionally a ``window`` (start, end) of it in trace seconds, compressed.

    ``multiplier`` compresses time: arrival ``t`` becomes ``(t - start) / multiplier``, so the
    same requests arrive ``multiplier`` times faster and the run lasts ``1/multiplier`` as long.
    """
    if multiplier <= 0:
        raise ValueError("multiplier must be > 0")
    t, p, o = read_trace(path, fmt)
    start, end = (0.0, float(t[-1]) + 1e-9) if window is None else (float(window[0]), float(window[1]))
    if end <= start:
        raise ValueError("window end must be after its start")
    keep = (t >= start) & (t < end)
    if not keep.any():
        raise ValueError(f"window {window} of {path} holds no requests")
    times = (t[keep] - start) / multiplier
    duration = (min(end, float(t[-1])) - start) / multiplier
    return _build(
        Path(path).stem,
        times,
        p[keep],
        o[keep],
        max(duration, float(times[-1])),
        seed,
        mix,
        classes,
        prefix_blocks=_prefix_blocks_of(path, fmt, np.flatnonzero(keep)),
        source=str(path),
        multiplier=multiplier,
        window_s=None if window is None else (start, end),
    )


@dataclass(frozen=True)
class PeakShape:
    """The load of a peak hour arriving: normal load, a smooth rise, the peak held.

    The trace is replayed through a time-warp whose local rate multiplier is ``base`` for
    ``lead_in_s``, rises along half a cosine (the rising half of a diurnal cycle: no kink where
    the rise starts or ends) to ``peak`` over ``ramp_s``, then stays at ``peak`` for ``hold_s``
    — the measured window. Locally the trace plays ``multiplier`` times faster, so its bursts
    and token mix are kept; a trace too short for the run is looped.
    """

    peak: float
    base: float = 1.0
    lead_in_s: float = 300.0
    ramp_s: float = 1800.0
    hold_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.peak < self.base:
            raise ValueError("need 0 < base multiplier <= peak multiplier")
        if self.lead_in_s < 0 or self.ramp_s < 0 or self.hold_s <= 0:
            raise ValueError("need lead_in_s >= 0, ramp_s >= 0 and hold_s > 0")

    @property
    def duration_s(self) -> float:
        return self.lead_in_s + self.ramp_s + self.hold_s

    @property
    def measured_window_s(self) -> tuple[float, float]:
        """The peak held: from the end of the rise to the end of the run."""
        return self.lead_in_s + self.ramp_s, self.duration_s

    def multiplier(self, t: np.ndarray | float) -> np.ndarray:
        """Local rate multiplier at simulated time ``t``."""
        x = np.asarray(t, dtype=float) - self.lead_in_s
        s = np.clip(x / self.ramp_s, 0.0, 1.0) if self.ramp_s > 0 else (x >= 0).astype(float)
        return np.asarray(self.base + (self.peak - self.base) * 0.5 * (1.0 - np.cos(np.pi * s)))

    def trace_seconds(self, t: np.ndarray | float) -> np.ndarray:
        """Trace time played by simulated time ``t``: the integral of the multiplier."""
        tt = np.asarray(t, dtype=float)
        rise = self.peak - self.base
        x = np.clip(tt - self.lead_in_s, 0.0, self.ramp_s)
        if self.ramp_s > 0:
            ramp = 0.5 * rise * (x - self.ramp_s / np.pi * np.sin(np.pi * x / self.ramp_s))
        else:
            ramp = np.zeros_like(x)
        held = rise * np.maximum(tt - self.lead_in_s - self.ramp_s, 0.0)
        return np.asarray(self.base * tt + ramp + held)

    def warp(self, trace_s: np.ndarray) -> np.ndarray:
        """Simulated arrival times of trace times (the inverse of :meth:`trace_seconds`)."""
        grid = np.linspace(0.0, self.duration_s, max(2, int(self.duration_s * 4) + 1))
        return np.asarray(np.interp(trace_s, self.trace_seconds(grid), grid))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "peak-hour",
            "base_multiplier": self.base,
            "peak_multiplier": self.peak,
            "lead_in_s": self.lead_in_s,
            "ramp_s": self.ramp_s,
            "hold_s": self.hold_s,
        }


@dataclass(frozen=True)
class DayShape:
    """A support desk's day: the trace's own minute-scale bursts on a diurnal envelope.

    The local rate multiplier follows one cosine cycle over ``day_s``: ``peak × trough`` at the
    start (the night), ``peak`` half-way (the afternoon peak), back to the night at the end —
    support traffic's daily cycle, with a night trough near 15 % of the peak. The whole day is
    measured: the GPU-hours saved off-peak are what autoscaling is for.
    """

    peak: float
    trough: float = 0.15
    day_s: float = 86_400.0

    def __post_init__(self) -> None:
        if self.peak <= 0 or not 0.0 < self.trough <= 1.0 or self.day_s <= 0:
            raise ValueError("need peak > 0, 0 < trough <= 1 and day_s > 0")

    #: Autoscalers start sized for the first minute (the night), as in the peak hour.
    lead_in_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.day_s

    @property
    def measured_window_s(self) -> tuple[float, float]:
        return 0.0, self.day_s

    def multiplier(self, t: np.ndarray | float) -> np.ndarray:
        phase = 2.0 * np.pi * np.asarray(t, dtype=float) / self.day_s
        return np.asarray(self.peak * (self.trough + (1.0 - self.trough) * 0.5 * (1.0 - np.cos(phase))))

    def trace_seconds(self, t: np.ndarray | float) -> np.ndarray:
        tt = np.asarray(t, dtype=float)
        swing = (
            0.5
            * (1.0 - self.trough)
            * (tt - self.day_s / (2.0 * np.pi) * np.sin(2.0 * np.pi * tt / self.day_s))
        )
        return np.asarray(self.peak * (self.trough * tt + swing))

    def warp(self, trace_s: np.ndarray) -> np.ndarray:
        grid = np.linspace(0.0, self.day_s, max(2, int(self.day_s) + 1))
        return np.asarray(np.interp(trace_s, self.trace_seconds(grid), grid))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "day", "peak_multiplier": self.peak, "trough": self.trough, "day_s": self.day_s}


def _alternate_blocks(
    t: np.ndarray, p: np.ndarray, o: np.ndarray, period: float, block_s: float, parity: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Keep blocks ``parity``, ``parity + 2``, ... of a slice, joined end to end."""
    n_blocks = max(1, math.ceil(period / block_s))
    lengths = np.minimum(block_s, period - block_s * np.arange(n_blocks))
    chosen = np.arange(n_blocks) % 2 == parity
    if not chosen.any():
        raise ValueError(f"a slice of {period:g} s has no {'odd' if parity else 'even'} {block_s:g} s block")
    offsets = np.cumsum(np.where(chosen, lengths, 0.0)) - np.where(chosen, lengths, 0.0)
    block = np.minimum((t // block_s).astype(int), n_blocks - 1)
    sel = chosen[block]
    if not sel.any():
        raise ValueError("the chosen blocks of the slice hold no requests")
    new_t = offsets[block[sel]] + (t[sel] - block[sel] * block_s)
    return new_t, p[sel], o[sel], float(lengths[chosen].sum())


def peak_workload(
    path: str | Path,
    shape: PeakShape | DayShape,
    window: tuple[float, float] | None = None,
    seed: int = 0,
    mix: Mapping[str, float] | None = None,
    classes: Mapping[str, int] | None = None,
    fmt: str = "auto",
    phase: float = 0.0,
    part: str | None = None,
    block_s: float = 300.0,
) -> Workload:
    """Replay a trace (or its ``window`` slice, trace seconds) through ``shape``'s time-warp.

    The slice is looped as often as the run needs (each loop continues where the previous one
    ended, one mean inter-arrival gap later); every replayed request draws its own priority
    class. Autoscalers start sized for the lead-in's normal load (``start_window_s``); the
    headline is measured over the peak held (``measured_window_s``). ``phase`` (0-1) starts the
    replay that share of the slice in (wrapping round): independent replications of one trace.
    ``part`` keeps alternate ``block_s``-long blocks of the slice, joined end to end: the even
    blocks (``train``) or the odd ones (``test``) — disjoint requests that both span the
    slice's slow swings, so knobs tuned on one are scored on requests they never saw.
    """
    if not 0.0 <= phase < 1.0:
        raise ValueError("phase must be in [0, 1)")
    if part not in (None, "train", "test"):
        raise ValueError("part must be 'train', 'test' or None")
    t, p, o = read_trace(path, fmt)
    gap = float(t[-1]) / max(len(t) - 1, 1)
    start, end = (0.0, float(t[-1]) + gap) if window is None else (float(window[0]), float(window[1]))
    if end <= start:
        raise ValueError("window end must be after its start")
    keep = (t >= start) & (t < end)
    if not keep.any():
        raise ValueError(f"window {window} of {path} holds no requests")
    period = min(end, float(t[-1]) + gap) - start
    base_t = t[keep] - start
    # Indices into the trace travel with the times, so every request keeps its own tokens and blocks.
    index = np.flatnonzero(keep)
    if part is not None:
        base_t, index, _, period = _alternate_blocks(
            base_t, index, index, period, block_s, 0 if part == "train" else 1
        )
    if phase:
        rotated = (base_t - phase * period) % period
        order = np.argsort(rotated, kind="stable")
        base_t, index = rotated[order], index[order]
    needed = float(shape.trace_seconds(shape.duration_s))
    loops = max(1, math.ceil(needed / period))
    played = (base_t[None, :] + period * np.arange(loops)[:, None]).ravel()
    sel = played < needed
    times = shape.warp(played[sel])
    chosen = np.tile(index, loops)[sel]
    prompt, output = p[chosen], o[chosen]
    lead = shape.lead_in_s if shape.lead_in_s >= 60.0 else 60.0
    return _build(
        f"{Path(path).stem}-{'day' if isinstance(shape, DayShape) else 'peak'}",
        times,
        prompt,
        output,
        shape.duration_s,
        seed,
        mix,
        classes,
        prefix_blocks=_prefix_blocks_of(path, fmt, chosen),
        source=str(path),
        multiplier=shape.peak,
        window_s=None if window is None else (start, end),
        measured_window_s=shape.measured_window_s,
        start_window_s=(0.0, lead),
        shape={**shape.to_dict(), "trace_loops": round(needed / period, 2), "phase": round(phase, 4)},
    )


def _thinned_poisson(
    rate_fn: Any, peak_rate: float, duration_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Non-homogeneous Poisson arrivals by thinning (Lewis & Shedler)."""
    n_max = int(peak_rate * duration_s * 1.2 + 10 * math.sqrt(peak_rate * duration_s + 1) + 10)
    cand = np.cumsum(rng.exponential(1.0 / peak_rate, n_max))
    while cand[-1] < duration_s:
        more = cand[-1] + np.cumsum(rng.exponential(1.0 / peak_rate, n_max))
        cand = np.concatenate([cand, more])
    cand = cand[cand < duration_s]
    keep = rng.random(len(cand)) * peak_rate < rate_fn(cand)
    return np.asarray(cand[keep])


def diurnal_workload(
    duration_s: float,
    mean_rate: float,
    amplitude: float = 0.5,
    period_s: float | None = None,
    seed: int = 0,
    tokens: TokenDistribution = AZURE_CONV_TOKENS,
    mix: Mapping[str, float] | None = None,
    classes: Mapping[str, int] | None = None,
) -> Workload:
    """Poisson traffic whose rate follows ``mean × (1 − amplitude × cos(2π t / period))``.

    Starts at the trough and peaks mid-period (``period_s`` defaults to the duration: one day
    compressed into the run).
    """
    if not 0 <= amplitude < 1:
        raise ValueError("amplitude must lie in [0, 1)")
    period = period_s or duration_s
    rng = np.random.default_rng([seed, 1])

    def rate(t: np.ndarray) -> np.ndarray:
        return np.asarray(mean_rate * (1 - amplitude * np.cos(2 * np.pi * t / period)))

    times = _thinned_poisson(rate, mean_rate * (1 + amplitude), duration_s, rng)
    p, o = tokens.sample(len(times), rng)
    return _build("diurnal", times, p, o, duration_s, seed, mix, classes, source="synthetic")


def burst_workload(
    duration_s: float,
    base_rate: float,
    burst_factor: float = 3.0,
    burst_every_s: float = 300.0,
    burst_length_s: float = 60.0,
    seed: int = 0,
    tokens: TokenDistribution = AZURE_CONV_TOKENS,
    mix: Mapping[str, float] | None = None,
    classes: Mapping[str, int] | None = None,
) -> Workload:
    """Poisson traffic at ``base_rate`` with ``burst_factor``× bursts.

    A burst lasts ``burst_length_s`` at the end of every ``burst_every_s`` period.
    """
    if burst_factor < 1 or burst_length_s <= 0 or burst_every_s <= burst_length_s:
        raise ValueError("need burst_factor >= 1 and 0 < burst_length_s < burst_every_s")
    rng = np.random.default_rng([seed, 2])

    def rate(t: np.ndarray) -> np.ndarray:
        in_burst = np.mod(t, burst_every_s) >= burst_every_s - burst_length_s
        return np.where(in_burst, base_rate * burst_factor, base_rate)

    times = _thinned_poisson(rate, base_rate * burst_factor, duration_s, rng)
    p, o = tokens.sample(len(times), rng)
    return _build("burst", times, p, o, duration_s, seed, mix, classes, source="synthetic")
