"""``rfr-deploy denoise``: the pre-trained network's output, without adaptation."""

from __future__ import annotations

import click

from rfr_deploy.cli.options import (
    device_option,
    emit_json,
    existing_paths,
    model_options,
    output_options,
    reporter_for,
    sigma_from_grey_levels,
)
from rfr_deploy.jobs.denoise import denoise_files
from rfr_deploy.jobs.settings import JobSettings


@click.command("denoise")
@click.argument("inputs", nargs=-1, required=True)
@model_options
@click.option(
    "--sigma",
    type=float,
    default=None,
    callback=sigma_from_grey_levels,
    help="Noise level (grey levels) for noise-map models; estimated if omitted.",
)
@click.option("--ensemble", is_flag=True, help="Average the 8 flips/rotations (×8 compute).")
@click.option("-o", "--output-dir", default="rfr_out", show_default=True, help="Where to write results.")
@device_option
@output_options
def command(inputs, model, weights, sigma, ensemble, output_dir, device, as_json, quiet):
    """Denoise INPUTS (files or folders) with the pre-trained network."""
    settings = JobSettings(model=model, weights=weights, sigma=sigma, output_dir=output_dir, device=device)
    records = denoise_files(
        existing_paths(inputs), settings, ensemble=ensemble, reporter=reporter_for(quiet, as_json)
    )
    if as_json:
        emit_json(records)
