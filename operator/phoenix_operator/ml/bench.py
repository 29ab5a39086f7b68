"""``phoenix bench classifier``."""

from __future__ import annotations

import click


@click.command("classifier")
def bench_classifier() -> None:
    """Benchmark the intent classifier on BANKING77's test split."""
    raise click.ClickException("not implemented yet")
