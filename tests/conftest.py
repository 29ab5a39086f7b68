"""Test-suite wiring: each real component has its own fixture module under tests/fixtures/."""

import os

# Fixtures start servers with fork + exec while gRPC clients run in this process: gRPC's fork
# handlers are not needed for that and can abort the child (see phoenix_operator.cli).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins: list[str] = [
    "fixtures.cluster",
    "fixtures.triton",
    "fixtures.prometheus",
    "fixtures.milvus",
    "fixtures.operator",
    "fixtures.gateway",
]
