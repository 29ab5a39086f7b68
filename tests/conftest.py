"""Test-suite wiring: each real component has its own fixture module under tests/fixtures/."""

pytest_plugins: list[str] = [
    "fixtures.cluster",
    "fixtures.triton",
    "fixtures.prometheus",
    "fixtures.milvus",
    "fixtures.operator",
    "fixtures.gateway",
]
