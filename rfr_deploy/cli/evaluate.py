"""``rfr-deploy eval``: PSNR/SSIM before and after adaptation on a dataset (the paper's Table 2-5).

Its options are generated from the fields of :class:`~rfr_deploy.jobs.evaluate.EvalSettings` and
:class:`~rfr_deploy.adaptation.config.AdaptConfig`; ``--steps`` is a comma-separated list of M.
"""

from __future__ import annotations

from pathlib import Path

import click

from rfr_deploy.cli.adapt_options import adapt_config, adapt_options
from rfr_deploy.cli.options import (
    device_option,
    emit_json,
    field_options,
    model_options,
    output_options,
    parse_int_list,
    reporter_for,
    settings_from,
)
from rfr_deploy.files import atomic_write
from rfr_deploy.jobs.evaluate import EvalSettings, evaluate

E = EvalSettings


@click.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@model_options
@field_options(E, "sigma")
@click.option(
    "--steps",
    "steps_text",
    default=",".join(map(str, E.steps)),
    show_default=True,
    help="Comma-separated values of M: one adaptation of max(M) updates, scored after each M; the last is"
    " scored on the network adapt-and-export returns.",
)
@field_options(E, "sigma_mode", "noise", "pairs", "crop", "limit")
@adapt_options
@field_options(E, "output_ensemble", "score_ensemble", "seed")
@device_option
@click.option(
    "--markdown", type=click.Path(dir_okay=False), default=None, help="Also write the table to this file."
)
@output_options
def command(dataset, steps_text, markdown, as_json, quiet, **options):
    """Score the pre-trained and adapted network on DATASET (a folder of clean images, or pairs)."""
    steps = parse_int_list(steps_text, "--steps")
    settings = settings_from(EvalSettings, {**options, "steps": tuple(steps)})
    config = adapt_config(max(steps), settings.seed, options)
    report = evaluate(dataset, settings, config, reporter=reporter_for(quiet, as_json))
    if markdown:
        with atomic_write(Path(markdown)) as tmp:
            tmp.write_text(report.to_markdown() + "\n")
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.to_markdown())
