"""``phoenix classifier``: train and query the intent classifier."""

from __future__ import annotations

import click


@click.group("classifier")
def classifier() -> None:
    """Train and query the intent classifier that flags urgent requests."""
