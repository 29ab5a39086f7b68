"""The one interface every fleet policy implements, in the simulator and (via adapters) live.

A controller is called every ``interval_s`` simulated seconds with a :class:`FleetView` — the
same :class:`~phoenix_operator.observation.Observation` the production metric source
produces, plus what a controller can read from Kubernetes and the pods — and answers with a
:class:`FleetCommand`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from phoenix_operator.observation import Observation
from phoenix_operator.sim.config import BatcherConfig


@dataclass(frozen=True)
class FleetView:
    """What a controller sees at one decision time."""

    now: float
    #: Aggregated signals over the window since the controller's previous decision.
    observation: Observation
    #: The Deployment's ``spec.replicas`` (what the last command asked for).
    desired_replicas: int
    #: Pods serving traffic.
    ready_replicas: int
    #: Pods created but not ready yet (image pull, model load).
    starting_replicas: int
    #: Pods removed from the Service that are finishing their queued and running requests.
    draining_replicas: int
    #: The batching configuration in force.
    batching: BatcherConfig
    #: Requests waiting in each ready pod's Triton queue (``nv_inference_pending_request_count``).
    replica_waiting: tuple[int, ...]
    #: Each ready pod's saturation, 0..1: KV-cache use for an LLM engine, busy instances otherwise.
    replica_saturation: tuple[float, ...]
    #: Requests executing (prefill or decode) in each ready pod.
    replica_running: tuple[int, ...]
    min_replicas: int
    max_replicas: int
    #: Known pod start-up time (for controllers that account for warm-up).
    startup_s: float
    slo_ttft_s: float
    #: P90 TTFT of first tokens and P90 time per output token of requests finished in the
    #: window (None = no data): the latency quantiles an SLO-driven scaler reads.
    ttft_p90_s: float | None = None
    tpot_p90_s: float | None = None


@dataclass(frozen=True)
class FleetCommand:
    """A decision: ``None`` fields mean "leave as is"."""

    target_replicas: int | None = None
    batching: BatcherConfig | None = None
    reason: str = ""


@runtime_checkable
class FleetController(Protocol):
    """A replica/batching policy run in closed loop by the simulator."""

    #: Policy name as reported (``hpa``, ``keda``, ``phoenix``...).
    name: str
    #: Seconds between decisions (the controller's sync/polling period).
    interval_s: float

    def decide(self, now: float, view: FleetView) -> FleetCommand:
        """Decide from the view; must not mutate it."""
        ...
