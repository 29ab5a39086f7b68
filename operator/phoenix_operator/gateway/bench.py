"""``phoenix bench gateway``."""

from __future__ import annotations

import click


@click.command("gateway")
def bench_gateway() -> None:
    """Benchmark the gateway's own overhead (classify + embed + search)."""
    raise click.ClickException("not implemented yet")
