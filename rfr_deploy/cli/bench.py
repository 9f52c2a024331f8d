"""``rfr-deploy bench`` (speed benchmark) — implemented with the fast path."""

from __future__ import annotations

import click


@click.command("bench")
def command():
    """Time one fine-tuning update per model (eager, AMP, AMP + CUDA graphs)."""
    raise click.ClickException("bench is not implemented yet")
