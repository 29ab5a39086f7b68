"""``phoenix gateway``: run the chat gateway."""

from __future__ import annotations

import click


@click.command("gateway")
def gateway() -> None:
    """Run the OpenAI-compatible chat gateway."""
    raise click.ClickException("not implemented yet")
