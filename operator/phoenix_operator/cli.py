"""The `phoenix` command line: one entry point for the operator, the local cluster and the benchmarks."""

from __future__ import annotations

import click

from phoenix_operator.lazycli import LazyGroup

#: command name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "bench": "phoenix_operator.sim.cli:bench",
    "classifier": "phoenix_operator.ml.cli:classifier",
    "cluster": "phoenix_operator.cluster.cli:cluster",
    "crd": "phoenix_operator.api.cli:crd",
    "demo": "phoenix_operator.demo.cli:demo",
    "eval": "phoenix_operator.quality.cli:evaluate",
    "gateway": "phoenix_operator.gateway.cli:gateway",
    "kb": "phoenix_operator.quality.cli:kb",
    "plan": "phoenix_operator.sim.plan:plan",
    "fidelity": "phoenix_operator.sim.fidelity:fidelity",
    "render": "phoenix_operator.api.cli:render",
    "run": "phoenix_operator.runner:run",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(package_name="phoenix-operator")
def main() -> None:
    """Phoenix Operator: a Triton + Milvus LLM stack on Kubernetes, continuously tuned."""


if __name__ == "__main__":  # `python -m phoenix_operator.cli`, as the tests start the operator
    main()
