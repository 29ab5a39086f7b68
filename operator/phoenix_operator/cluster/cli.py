"""``phoenix cluster``: build, start, inspect and stop the local Kubernetes control plane.

Kept thin: everything real lives in :mod:`.local` and :mod:`.build`, so the tests and the demo
drive exactly what a user drives. Errors become one line (``Error: ...``) and exit code 1.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from phoenix_operator.cluster import build
from phoenix_operator.cluster.local import COMPONENTS, ClusterError, LocalCluster, default_state_dir
from phoenix_operator.cluster.manifests import NodeSpec
from phoenix_operator.cluster.pki import PkiError

F = TypeVar("F", bound=Callable[..., Any])


def _one_line_errors(func: F) -> F:
    """Turn the known failures (no Go, a broken build, a component that died) into one line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (build.BuildError, ClusterError, PkiError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _state_dir_option(func: F) -> F:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Cluster state folder (PIDs, logs, certificates, kubeconfig). "
        "Default: $PHOENIX_CLUSTER_DIR or ~/.cache/phoenix-operator/cluster.",
    )(func)


def _info(msg: str) -> None:
    click.echo(msg, err=True)


@click.group()
def cluster() -> None:
    """A real local Kubernetes control plane with fake GPU nodes (etcd, API server, kwok, ...)."""


@cluster.command("build")
@click.option("--force", is_flag=True, help="Rebuild even when the cached binaries are present.")
@click.argument("tools", nargs=-1, type=click.Choice(sorted(build.TOOLS)))
@_one_line_errors
def build_cmd(force: bool, tools: tuple[str, ...]) -> None:
    """Build the pinned binaries from Go modules into the per-user cache (skipped when cached)."""
    names = list(tools) or list(build.TOOLS)
    build.build_tools(names, force=force)
    for name in names:
        spec = build.TOOLS[name]
        click.echo(f"{name:<11} {spec.version:<9} {build.tool_bin_dir(name)}")


@cluster.command()
@click.option("--nodes", type=click.IntRange(0, 500), default=4, show_default=True, help="Fake GPU nodes.")
@click.option(
    "--cpu-nodes", type=click.IntRange(0, 100), default=1, show_default=True, help="Untainted CPU nodes."
)
@click.option("--gpus-per-node", type=click.IntRange(0, 64), default=8, show_default=True)
@click.option(
    "--gpu-product", default="NVIDIA-H100-80GB-HBM3", show_default=True, help="nvidia.com/gpu.product label."
)
@click.option(
    "--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for readiness."
)
@_state_dir_option
@_one_line_errors
def up(
    nodes: int, cpu_nodes: int, gpus_per_node: int, gpu_product: str, timeout: float, state_dir: Path | None
) -> None:
    """Start the cluster (idempotent) and print how to use it."""
    spec = NodeSpec(count=nodes, gpus_per_node=gpus_per_node, gpu_product=gpu_product, cpu_nodes=cpu_nodes)
    lc = LocalCluster(state_dir, spec, log=_info)
    result = lc.up(timeout=timeout)
    if result.already_running:
        _info(f"cluster already running at {result.server} (state: {lc.state_dir}); nothing to do")
    else:
        _info(
            f"cluster ready in {result.seconds:.1f}s at {result.server}: {nodes} node(s) x "
            f"{gpus_per_node} nvidia.com/gpu ({gpu_product}), {cpu_nodes} CPU node(s)"
        )
    click.echo(f"export KUBECONFIG={lc.kubeconfig}")


@cluster.command()
@_state_dir_option
@_one_line_errors
def down(state_dir: Path | None) -> None:
    """Stop every process `up` started and delete the state folder."""
    lc = LocalCluster(state_dir)
    if lc.down():
        _info(f"cluster stopped; removed {lc.state_dir}")
    else:
        _info(f"no cluster in {lc.state_dir}")


@cluster.command()
@click.argument("component", type=click.Choice(COMPONENTS))
@click.option(
    "--downtime",
    type=click.FloatRange(0, 3600),
    default=0.0,
    show_default=True,
    help="Seconds to keep it stopped before starting it again.",
)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for health.")
@_state_dir_option
@_one_line_errors
def restart(component: str, downtime: float, timeout: float, state_dir: Path | None) -> None:
    """Restart one component (same ports, same data): a fault drill for the operator."""
    lc = LocalCluster(state_dir)
    seconds = lc.restart_component(component, downtime=downtime, timeout=timeout)
    _info(f"{component} restarted; healthy {seconds:.1f}s after its start")


@cluster.command()
@_state_dir_option
def status(state_dir: Path | None) -> None:
    """Show which components run, with their PIDs, ports and logs (exit 1 when not running)."""
    from rich.console import Console
    from rich.table import Table

    lc = LocalCluster(state_dir)
    components = lc.status()
    console = Console()
    if not components:
        console.print(f"no cluster in {lc.state_dir}")
        sys.exit(1)
    table = Table(title=f"phoenix local cluster — {lc.server}")
    for col in ("component", "pid", "state", "ports", "log"):
        table.add_column(col)
    for comp in components:
        ports = ", ".join(f"{k}={v}" for k, v in comp.ports.items())
        state = "[green]running[/]" if comp.alive else "[red]stopped[/]"
        log = Path(comp.log)
        shown = str(log.relative_to(lc.state_dir)) if log.is_relative_to(lc.state_dir) else comp.log
        table.add_row(comp.name, str(comp.pid), state, ports, shown)
    console.print(table)
    console.print(f"state: {lc.state_dir}")
    running = lc.is_running()
    console.print(f"kubeconfig: {lc.kubeconfig}")
    console.print("API server: " + ("[green]ready[/]" if running else "[red]not ready[/]"))
    if not running:
        sys.exit(1)


@cluster.command()
@_state_dir_option
def env(state_dir: Path | None) -> None:
    """Print export lines for KUBECONFIG and PATH: eval "$(phoenix cluster env)"."""
    lc = LocalCluster(state_dir)
    if lc.server is None:
        _info(f"warning: no cluster in {lc.state_dir}; run `phoenix cluster up`")
    for line in lc.env_lines():
        click.echo(line)


__all__ = ["cluster", "default_state_dir"]
