"""The local Kubernetes cluster: pinned control-plane binaries built from Go modules, run on loopback.

``LocalCluster`` is the one entry point the CLI (``phoenix cluster``), the pytest fixture and the
demo share, so they all exercise the same real API server, scheduler and controllers.
"""

from phoenix_operator.cluster.local import ClusterError, LocalCluster, UpResult, default_state_dir
from phoenix_operator.cluster.manifests import NodeSpec
from phoenix_operator.cluster.waiting import WaitTimeout, wait_for

__all__ = [
    "ClusterError",
    "LocalCluster",
    "NodeSpec",
    "UpResult",
    "WaitTimeout",
    "default_state_dir",
    "wait_for",
]
