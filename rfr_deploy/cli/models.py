"""``rfr-deploy models``: what the zoo holds."""

from __future__ import annotations

import click

from ..registry import get_entry, list_models
from .options import emit_json


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json):
    """List the registered models and their packaged weights."""
    rows = []
    for name in list_models():
        e = get_entry(name)
        rows.append(
            {
                "name": name,
                "output": e.output,
                "noise_map": e.noise_map,
                "noise": e.default_noise,
                "default_weights": {str(k): v for k, v in e.default_weights.items()},
                "description": e.description,
            }
        )
    if as_json:
        emit_json(rows)
        return
    for r in rows:
        weights = ", ".join(f"{k}ch" for k in r["default_weights"]) or "none packaged"
        click.echo(f"{r['name']:<14} {r['output']:<8} weights: {weights:<14} {r['description']}")
