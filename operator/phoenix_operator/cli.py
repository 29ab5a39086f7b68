"""The `phoenix` command line: one entry point for the operator, the local cluster and the benchmarks.

Sub-commands are imported lazily so `phoenix cluster ...` works (and stays fast) without
loading the simulator or the Kubernetes client, and a broken optional part cannot take the
others down.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

#: command name -> "module:attribute" of a click command or group.
_COMMANDS: dict[str, str] = {
    "bench": "phoenix_operator.sim.cli:bench",
    "cluster": "phoenix_operator.cluster.cli:cluster",
    "crd": "phoenix_operator.api.cli:crd",
    "demo": "phoenix_operator.demo.cli:demo",
    "plan": "phoenix_operator.sim.plan:plan",
    "fidelity": "phoenix_operator.sim.fidelity:fidelity",
    "render": "phoenix_operator.api.cli:render",
    "run": "phoenix_operator.runner:run",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        return command


@click.group(cls=_LazyGroup)
@click.version_option(package_name="phoenix-operator")
def main() -> None:
    """Phoenix Operator: a Triton + Milvus LLM stack on Kubernetes, continuously tuned."""


if __name__ == "__main__":  # `python -m phoenix_operator.cli`, as the tests start the operator
    main()
