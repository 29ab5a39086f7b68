"""`phoenix run`: the operator process (Kopf underneath) with production settings."""

from __future__ import annotations

import asyncio
import logging
import os

import click
import kopf


def operator_modules() -> None:
    """Import every module that registers handlers (kept in one place for runners and tests)."""
    import phoenix_operator.reconcile.handlers

    try:
        import phoenix_operator.control.handlers  # noqa: F401
    except ModuleNotFoundError as exc:  # the control loop lands separately
        if exc.name != "phoenix_operator.control.handlers":
            raise


@click.command("run")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (cluster mode).")
@click.option("--standalone", is_flag=True, help="No peering: run even if another replica is active.")
@click.option(
    "--peering",
    "peering_name",
    default="phoenix-operator",
    show_default=True,
    help="Kopf peering object; with two replicas only the one with the highest priority acts.",
)
@click.option("--priority", type=int, default=0, show_default=True, help="Peering priority of this replica.")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default="http://0.0.0.0:8080/healthz",
    show_default=True,
    help="Liveness endpoint served by Kopf ('' to disable).",
)
@click.option(
    "--metrics-port",
    type=int,
    default=8081,
    show_default=True,
    help="Port of the operator's own Prometheus metrics (0 to disable).",
)
@click.option("--verbose", is_flag=True)
def run(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering_name: str,
    priority: int,
    liveness_endpoint: str,
    metrics_port: int,
    verbose: bool,
) -> None:
    """Run the operator against whatever KUBECONFIG (or the in-cluster account) points to."""
    if not namespaces and not all_namespaces:
        env_ns = os.environ.get("PHOENIX_WATCH_NAMESPACES", "")
        namespaces = tuple(n for n in env_ns.split(",") if n)
        if not namespaces:
            raise click.UsageError("pass --namespace NS (repeatable) or --all-namespaces")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    operator_modules()
    if metrics_port:
        from phoenix_operator.control import opmetrics

        opmetrics.serve(metrics_port)
    asyncio.run(
        kopf.operator(
            clusterwide=all_namespaces,
            namespaces=list(namespaces),
            standalone=standalone,
            # Naming a peering makes it mandatory in Kopf (the chart installs its CRDs);
            # standalone names none.
            peering_name=None if standalone else peering_name,
            priority=priority,
            liveness_endpoint=liveness_endpoint or None,
        )
    )
