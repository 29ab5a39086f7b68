"""The live view: a rich panel on a terminal, plain progress lines anywhere else (CI, ``| tee``).

Both render one :class:`ViewState` — a snapshot the demo assembles about once a second from the
twin (what users experience), the cluster (replicas) and the PhoenixDeployment's status (what the
operator saw and decided) — so they can be tested without a terminal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phoenix_operator.demo.requestpath import GatewayLive, live_text
from phoenix_operator.demo.twin import LiveFigures


@dataclass(frozen=True)
class ViewState:
    mode: str
    name: str
    namespace: str
    speedup: float
    wall_s: float
    wall_total_s: float
    phase: str
    multiplier: float
    twin: LiveFigures
    sim_total_s: float
    #: Class name -> TTFT p95 target (most urgent first), and the overall target.
    class_targets: Mapping[str, float]
    target_s: float
    #: The live figures' window (simulated seconds).
    window_s: float
    #: The cluster: the Deployment's desired replicas, Ready pods, pods holding a GPU.
    desired: int | None = None
    ready: int | None = None
    provisioned: int | None = None
    #: The operator's status: its TTFT p95, conditions and last decision.
    status: Mapping[str, Any] = field(default_factory=dict)
    decisions: int = 0
    #: Simulated time of the last decision (status stores wall-clock times).
    last_decision_sim_s: float | None = None
    #: The request path through the real gateway (``None``: off).
    gateway: GatewayLive | None = None


def clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60):02d}:{int(seconds % 60):02d}"


def fmt_s(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "no data"
    return "ok" if value <= target else "OVER"


def last_decision(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    decisions = status.get("decisions") or []
    return decisions[-1] if decisions else None


def decision_text(decision: Mapping[str, Any], width: int | None = None) -> str:
    applied = "applied" if decision.get("applied") else "NOT applied"
    if str(decision.get("mode")) == "recommend":
        applied = "proposed"
    if decision.get("action") == "hold":
        applied = "hold"
    text = f"{decision.get('summary', '?')} ({applied}): {decision.get('reason', '')}"
    if width is not None and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def _when(state: ViewState) -> str:
    at = state.last_decision_sim_s
    return "" if at is None or math.isnan(at) else f"at simulated {clock(at)}: "


def _conditions(status: Mapping[str, Any]) -> str:
    by_type = {c.get("type"): c for c in status.get("conditions") or []}
    parts = []
    for kind in ("Ready", "MetricsAvailable", "Autoscaling"):
        cond = by_type.get(kind)
        if cond is not None:
            parts.append(f"{kind}={cond.get('status')} ({cond.get('reason')})")
    return ", ".join(parts) or "-"


def _replicas(state: ViewState) -> str:
    if state.mode != "controlled":
        return f"{state.twin.ready_replicas} (static: no operator)"
    if state.desired is None:
        return "-"
    warming = max(0, (state.provisioned or 0) - (state.ready or 0))
    text = f"desired {state.desired}, ready {state.ready}"
    if warming:
        text += f", {warming} warming up"
    return text + f" | twin serving {state.twin.ready_replicas}"


def plain_line(state: ViewState) -> str:
    """One progress line (no terminal needed)."""
    classes = " ".join(
        f"{name}={fmt_s(state.twin.ttft_p95_by_class_s.get(name))}/{target:g}s"
        for name, target in state.class_targets.items()
    )
    line = (
        f"[{clock(state.wall_s)}/{clock(state.wall_total_s)} sim {clock(state.twin.sim_s)}] "
        f"{state.phase} x{state.multiplier:.1f} {state.twin.request_rate:.1f} req/s | "
        f"TTFT p95 {fmt_s(state.twin.ttft_p95_s)} (target {state.target_s:g} s) {classes} | "
        f"replicas {_replicas(state)} | queue {state.twin.pending}"
    )
    if state.twin.rejected:
        line += f" | {state.twin.rejected} refused in {state.window_s:g} s"
    if state.mode == "controlled":
        op = state.status.get("ttftP95Seconds")
        line += f" | operator sees {fmt_s(op)}"
    if state.gateway is not None:
        line += f" | gateway: {live_text(state.gateway)}"
    return line


def render(state: ViewState) -> Any:
    """The rich renderable of the live panel."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    title = f"Phoenix demo — {state.name} in namespace {state.namespace} — " + (
        "operator in control" if state.mode == "controlled" else "NO operator (static replicas)"
    )
    head = Text(
        f"wall {clock(state.wall_s)} / {clock(state.wall_total_s)}   "
        f"simulated {clock(state.twin.sim_s)} / {clock(state.sim_total_s)} (x{state.speedup:g})   "
        f"load: {state.phase}, trace x{state.multiplier:.1f}, "
        f"{state.twin.request_rate:.1f} req/s   queue {state.twin.pending}"
        + (f"   {state.twin.rejected} refused" if state.twin.rejected else "")
    )
    ttft = Table(title=f"TTFT p95 of first tokens in the last {state.window_s:g} simulated s", expand=False)
    ttft.add_column("class")
    ttft.add_column("TTFT p95", justify="right")
    ttft.add_column("target", justify="right")
    ttft.add_column("")
    for name, target in state.class_targets.items():
        value = state.twin.ttft_p95_by_class_s.get(name)
        mark = verdict(value, target)
        ttft.add_row(
            name, fmt_s(value), f"{target:g} s", Text(mark, style="green" if mark == "ok" else "red")
        )
    mark = verdict(state.twin.ttft_p95_s, state.target_s)
    ttft.add_row(
        "all", fmt_s(state.twin.ttft_p95_s), f"{state.target_s:g} s",
        Text(mark, style="green" if mark == "ok" else "red"),
    )  # fmt: skip
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column()
    rows.add_row("replicas", _replicas(state))
    rows.add_row("batching", state.twin.batching)
    if state.mode == "controlled":
        status = state.status
        rows.add_row("operator's TTFT p95", fmt_s(status.get("ttftP95Seconds")))
        rows.add_row("conditions", _conditions(status))
        decision = last_decision(status)
        rows.add_row(
            f"last decision ({state.decisions} so far)",
            "-" if decision is None else f"{_when(state)}{decision_text(decision, 400)}",
        )
    if state.gateway is not None:
        rows.add_row("request path", live_text(state.gateway))
    if state.twin.lag_s > 1.0:
        rows.add_row(
            "twin lag", Text(f"{state.twin.lag_s:.1f} s behind the wall clock (machine busy)", style="yellow")
        )
    return Panel(Group(head, ttft, rows), title=title)
