"""Figures of the demo's request path (pure): chat requests through the real gateway into the twin.

Each figure is on one of two clocks: the gateway's stages in wall seconds, the twin's ``queue`` and
``first_token`` in simulated seconds. TTFT "at real speed" is wall ``handoff`` + simulated
``first_token``. Details: docs/demo.md, "The request path" ("Two clocks").
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phoenix_operator.sim.request import RequestRecord
from phoenix_operator.stats import quantile

#: A send later than this (wall seconds) after its arrival time counts as late (client behind).
LATE_SEND_S = 1.0
WALL_STAGES = ("classify", "embed", "search", "handoff")
SIM_STAGES = ("queue", "first_token")


@dataclass
class Outcome:
    """One chat request the demo's client sent through the gateway."""

    index: int
    #: Simulated arrival time the trace gave it, and how late (wall s) the client sent it.
    arrival_s: float
    send_lag_s: float
    #: HTTP status (0: no answer — connection failed or cancelled at the end of the run).
    status: int = 0
    error: str = ""
    priority_class: str | None = None
    intent: str | None = None
    #: Wall seconds per gateway stage, from its ``server-timing`` header.
    stages: dict[str, float] = field(default_factory=dict)
    #: Wall seconds from send until the first content token reached the client.
    client_ttft_s: float | None = None
    #: The twin's record of this request (its id, streamed back in the first token's text).
    twin_id: int | None = None


def error_code(outcome: Outcome) -> str:
    """The HTTP status, or why there was none (``cancelled_at_end``, ``transport_<error>``)."""
    if outcome.status:
        return str(outcome.status)
    return "cancelled_at_end" if outcome.error.startswith("cancelled") else f"transport_{outcome.error}"


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``embed;dur=3.10, search;dur=1.2`` -> ``{"embed": 0.0031, "search": 0.0012}`` (seconds)."""
    out: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    out[name] = float(value) / 1000.0
                except ValueError:
                    continue
    return out


def quantiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"p50_s": None, "p95_s": None, "n": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "p50_s": round(quantile(arr, 0.5), 4),
        "p95_s": round(quantile(arr, 0.95), 4),
        "n": len(values),
    }


def _sim_of(rec: RequestRecord | None) -> tuple[float | None, float | None]:
    """(queue, first_token) simulated seconds of a twin record, ``None`` where it never got there."""
    if rec is None:
        return None, None
    queue = rec.queue_s
    first = None if rec.first_token_s is None else rec.first_token_s - rec.arrival_s
    return queue, first


def real_speed_ttft(outcome: Outcome, rec: RequestRecord | None) -> float | None:
    """Wall ``handoff`` + simulated ``first_token`` (see the module docstring)."""
    first = _sim_of(rec)[1]
    handoff = outcome.stages.get("handoff")
    if first is None or handoff is None or outcome.status != 200:
        return None
    return handoff + first


def gateway_figures(
    outcomes: Sequence[Outcome],
    twin_records: Mapping[int, RequestRecord],
    *,
    planned_share: float,
    offered: int,
    classes: Sequence[str],
    speedup: float,
) -> dict[str, Any]:
    """The ``gateway`` block of the demo's summary."""
    ok = [o for o in outcomes if o.status == 200]
    codes = Counter(error_code(o) for o in outcomes if o.status != 200)
    stages: dict[str, Any] = {}
    for stage in WALL_STAGES:
        stages[stage] = {**quantiles([o.stages[stage] for o in ok if stage in o.stages]), "clock": "wall"}
    sims = [_sim_of(twin_records.get(o.twin_id)) if o.twin_id is not None else (None, None) for o in ok]
    stages["queue"] = {**quantiles([q for q, _ in sims if q is not None]), "clock": "simulated"}
    stages["first_token"] = {**quantiles([f for _, f in sims if f is not None]), "clock": "simulated"}
    by_class: dict[str, Any] = {}
    names = list(classes) + sorted({o.priority_class for o in ok if o.priority_class} - set(classes))
    for name in names:
        mine = [o for o in ok if o.priority_class == name]
        real = [
            t
            for o in mine
            if (t := real_speed_ttft(o, twin_records.get(o.twin_id) if o.twin_id is not None else None))
            is not None
        ]
        client = [o.client_ttft_s for o in mine if o.client_ttft_s is not None]
        by_class[name] = {
            "requests": len(mine),
            "ttft_p95_s": quantiles(real)["p95_s"],
            "client_ttft_p95_wall_s": quantiles(client)["p95_s"],
        }
    lags = [o.send_lag_s for o in outcomes]
    sent = len(outcomes)
    return {
        "planned_share": planned_share,
        "offered": offered,
        "sent": sent,
        "share": round(sent / offered, 4) if offered else 0.0,
        "ok": len(ok),
        "errors_by_code": dict(sorted(codes.items())),
        "server_errors": sum(n for code, n in codes.items() if code.startswith("5")),
        "late_sends": sum(1 for lag in lags if lag > LATE_SEND_S),
        "send_lag_p95_wall_s": quantiles(lags)["p95_s"],
        "stages": stages,
        "by_class": by_class,
        "speedup": speedup,
        "clocks": "classify/embed/search/handoff: wall seconds measured by the gateway; queue/first_token: "
        "simulated seconds in the twin; by_class ttft_p95_s = wall handoff + simulated first_token "
        "(TTFT at real speed); client_ttft_p95_wall_s: as the demo's client measured it (twin part "
        f"compressed x{speedup:g})",
    }


@dataclass(frozen=True)
class GatewayLive:
    """The live view's request-path line: the last window's figures (see the module docstring)."""

    share: float
    sent: int
    ok: int
    errors: Mapping[str, int]
    #: Class -> TTFT p95 at real speed (wall handoff + simulated first token).
    ttft_p95_by_class_s: Mapping[str, float | None]
    #: Stage -> p95 (wall for the gateway's stages, simulated for first_token).
    stage_p95_s: Mapping[str, float | None]


def gateway_live(
    outcomes: Sequence[Outcome],
    twin_records: Mapping[int, RequestRecord],
    *,
    since_s: float,
    planned_share: float,
    classes: Sequence[str],
) -> GatewayLive:
    """Figures of the requests that arrived (simulated) since ``since_s``; counts are for the run."""
    recent = [o for o in outcomes if o.status == 200 and o.arrival_s >= since_s]
    by_class: dict[str, float | None] = {}
    for name in classes:
        values = [
            t
            for o in recent
            if o.priority_class == name
            and (t := real_speed_ttft(o, twin_records.get(o.twin_id) if o.twin_id is not None else None))
            is not None
        ]
        by_class[name] = quantiles(values)["p95_s"]
    stage: dict[str, float | None] = {}
    for name in ("classify", "embed", "search"):
        stage[name] = quantiles([o.stages[name] for o in recent if name in o.stages])["p95_s"]
    firsts = [
        f
        for o in recent
        if o.twin_id is not None and (f := _sim_of(twin_records.get(o.twin_id))[1]) is not None
    ]
    stage["first_token"] = quantiles(firsts)["p95_s"]
    errors = Counter(error_code(o) for o in outcomes if o.status != 200)
    return GatewayLive(
        share=planned_share,
        sent=len(outcomes),
        ok=sum(1 for o in outcomes if o.status == 200),
        errors=dict(errors),
        ttft_p95_by_class_s=by_class,
        stage_p95_s=stage,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value * 1000:.0f} ms"


def live_text(live: GatewayLive) -> str:
    """One line for the view: share, per-class TTFT at real speed, stage p95s, errors."""
    classes = " ".join(
        f"{name}={'-' if v is None else f'{v:.2f}s'}" for name, v in live.ttft_p95_by_class_s.items()
    )
    s = live.stage_p95_s
    first = s.get("first_token")
    errors = ", ".join(f"{n}x{code}" for code, n in sorted(live.errors.items())) or "none"
    return (
        f"{live.share:.0%} of requests via the gateway ({live.ok}/{live.sent} ok, errors {errors}) | "
        f"TTFT p95 {classes} | p95 classify {_ms(s.get('classify'))} embed {_ms(s.get('embed'))} "
        f"search {_ms(s.get('search'))} (wall), first token "
        f"{'-' if first is None else f'{first:.2f} s'} (simulated)"
    )


_TWIN_ID = re.compile(r"\[twin request (\d+)\]")


def twin_id_of(text: str) -> int | None:
    """The twin's record id named in a response's first text (see ``twin_grpc.FIRST_TEXT``)."""
    match = _TWIN_ID.search(text)
    return int(match.group(1)) if match else None
