"""Test-suite wiring: each real component has its own fixture module under tests/fixtures/."""

pytest_plugins: list[str] = []
