"""``rfr-deploy models``: what the zoo holds."""

from __future__ import annotations

import click

from rfr_deploy.cli.options import emit_json
from rfr_deploy.models.factory import get_entry, list_models
from rfr_deploy.models.hub import NAMED_WEIGHTS, cache_path
from rfr_deploy.units import grey_levels


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(as_json):
    """List the registered models, their packaged weights, and the official weights by name."""
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
    named = [
        {
            "name": w.name,
            "model": w.meta.arch,
            "channels": w.meta.channels,
            "sigma_range": [grey_levels(v) for v in w.meta.sigma_range],
            "output": w.meta.output,
            "url": w.url,
            "license": w.license,
            "cached": cache_path(w).is_file(),
            "description": w.description,
        }
        for w in NAMED_WEIGHTS.values()
    ]
    if as_json:
        emit_json({"models": rows, "named_weights": named})
        return
    for r in rows:
        weights = ", ".join(f"{k}ch" for k in r["default_weights"]) or "none packaged"
        click.echo(f"{r['name']:<14} {r['output']:<8} weights: {weights:<14} {r['description']}")
    click.echo("\nOfficial weights by name (--weights NAME; downloaded once into torch's hub cache):")
    for w in named:
        where = "cached" if w["cached"] else "download"
        click.echo(f"{w['name']:<24} {w['model']:<7} {w['description']:<36} {where}")
