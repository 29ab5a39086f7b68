"""Serving simulator: Triton replicas with the dynamic batcher, an LLM cost model, autoscalers.

Public API (stable for the fidelity harness and ``phoenix plan``): :func:`simulate`,
:func:`run_fleet`, :class:`BatcherConfig`, :class:`QueuePolicy`, :class:`Arrival`,
:class:`RequestRecord`, :class:`BlockingBatchCost`, :class:`LLMEngineCost`, :func:`load_profile`.
"""

from phoenix_operator.sim.config import BatcherConfig, QueuePolicy
from phoenix_operator.sim.cost import BlockingBatchCost, LLMEngineCost
from phoenix_operator.sim.fleet import FleetResult, FleetSettings, run_fleet, simulate
from phoenix_operator.sim.interface import FleetCommand, FleetController, FleetView
from phoenix_operator.sim.profile import Profile, load_profile
from phoenix_operator.sim.request import Arrival, RequestRecord

__all__ = [
    "Arrival",
    "BatcherConfig",
    "BlockingBatchCost",
    "FleetCommand",
    "FleetController",
    "FleetResult",
    "FleetSettings",
    "FleetView",
    "LLMEngineCost",
    "Profile",
    "QueuePolicy",
    "RequestRecord",
    "load_profile",
    "run_fleet",
    "simulate",
]
