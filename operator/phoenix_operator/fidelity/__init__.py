"""Simulator fidelity: the same arrivals through a real ``tritonserver`` and the simulator
(docs/fidelity.md says how each side is measured and why)."""
