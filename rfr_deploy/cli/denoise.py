"""``rfr-deploy denoise``: the pre-trained network's output, without adaptation.

Its options are generated from the fields of :class:`~rfr_deploy.jobs.settings.JobSettings` it sets,
described in this command's own words.
"""

from __future__ import annotations

import click

from rfr_deploy.cli.options import (
    device_option,
    emit_json,
    existing_paths,
    field_option,
    field_options,
    model_options,
    output_options,
    reporter_for,
    settings_from,
)
from rfr_deploy.jobs.denoise import denoise_files
from rfr_deploy.jobs.settings import JobSettings

J = JobSettings


@click.command("denoise")
@click.argument("inputs", nargs=-1, required=True)
@model_options
@field_options(J, "gray_weights")
@field_option(J, "sigma", help="Noise level (grey levels) for noise-map models; estimated if omitted.")
@field_option(
    J,
    "noise_jpeg",
    help="auto: a noise-map model on a JPEG with an estimated level is told the level of white noise that, "
    "compressed like the file onto its first output, reads the estimate (two passes); off: the estimate.",
)
@click.option(
    "--output-ensemble",
    "--ensemble",
    "ensemble",
    is_flag=True,
    help="Average the 8 flips/rotations (×8 compute), as adapt-and-export and eval name it.",
)
@field_options(J, "per_channel")
@field_option(J, "output_dir", help="Where to write results.")
@device_option
@field_options(J, "threads")
@output_options
def command(inputs, ensemble, as_json, quiet, **options):
    """Denoise INPUTS (files or folders) with the pre-trained network: OUT/<stem>_denoised.png (.tif for TIFFs)."""
    settings = settings_from(JobSettings, options)
    records = denoise_files(
        existing_paths(inputs), settings, ensemble=ensemble, reporter=reporter_for(quiet, as_json)
    )
    if as_json:
        emit_json(records)
