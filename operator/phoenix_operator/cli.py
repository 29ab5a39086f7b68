"""The `phoenix` command line: one entry point for the operator, the local cluster and the benchmarks."""

from __future__ import annotations

import os

import click

from phoenix_operator.lazycli import LazyGroup

# Every child process here is exec'd right after fork (servers, the operator, the gateway), some
# with a preexec_fn, while gRPC threads run (pymilvus, tritonclient, the demo's twin). gRPC's own
# fork handlers then try to restart its pollers in the child and can abort it; exec needs none of
# that, so they are switched off before any module imports grpc.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

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
    "fidelity": "phoenix_operator.fidelity.cli:fidelity",
    "render": "phoenix_operator.api.cli:render",
    "run": "phoenix_operator.runner:run",
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS)
@click.version_option(package_name="phoenix-operator")
def main() -> None:
    """Phoenix Operator: a Triton + Milvus LLM stack on Kubernetes, continuously tuned."""


if __name__ == "__main__":  # `python -m phoenix_operator.cli`, as the tests start the operator
    main()
