"""Real serving components run as local processes (Triton, Prometheus) plus a load generator.

Used by the test suite, the control-loop end-to-end tests and the simulator fidelity harness,
so every claim about Triton and Prometheus is checked against the real binaries, not mocks.
"""
