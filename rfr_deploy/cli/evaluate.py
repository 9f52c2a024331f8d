"""``rfr-deploy eval``: PSNR/SSIM before and after adaptation on a dataset (the paper's Table 2-5).

Its options are generated from the fields of :class:`~rfr_deploy.jobs.evaluate.EvalSettings` and
:class:`~rfr_deploy.adaptation.config.AdaptConfig`; ``--steps`` is a comma-separated list of M, where
``default`` stands for adapt-and-export's own budget.
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
    reporter_for,
    settings_from,
)
from rfr_deploy.files import atomic_write, check_output_file
from rfr_deploy.jobs.evaluate import DEFAULT_BUDGET, EvalSettings, evaluate

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
    help=f"Comma-separated values of M, '{DEFAULT_BUDGET}' for the budget adapt-and-export takes when given"
    " none (see its --steps): one adaptation, scored after each M; the last is scored on the network"
    " adapt-and-export returns. The paper's protocol: 0,10,20,40.",
)
@field_options(E, "sigma_mode", "noise", "pairs", "crop", "limit")
@adapt_options
@field_options(E, "output_ensemble", "score_ensemble", "seed")
@device_option
@field_options(E, "threads")
@click.option(
    "--markdown", type=click.Path(dir_okay=False), default=None, help="Also write the table to this file."
)
@output_options
def command(dataset, steps_text, markdown, as_json, quiet, **options):
    """Score the pre-trained and adapted network on DATASET (a folder of clean images, or pairs)."""
    steps = parse_steps(steps_text)
    if markdown:
        check_output_file(markdown, "--markdown")
    settings = settings_from(EvalSettings, {**options, "steps": steps})
    config = adapt_config(None if DEFAULT_BUDGET in steps else max(steps), settings.seed, options)
    report = evaluate(dataset, settings, config, reporter=reporter_for(quiet, as_json))
    if markdown:
        with atomic_write(Path(markdown)) as tmp:
            tmp.write_text(report.to_markdown() + "\n")
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.to_markdown())


def parse_steps(text: str) -> tuple[int | str, ...]:
    """``--steps``: non-negative integers and ``default``, comma-separated; a repeated value counts once."""
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    try:
        steps = [w if w == DEFAULT_BUDGET else int(w) for w in words]
    except ValueError:
        steps = []
    if not steps or any(m != DEFAULT_BUDGET and m < 0 for m in steps):
        raise click.BadParameter(
            f"expected non-negative integers or '{DEFAULT_BUDGET}', comma-separated; got {text!r}",
            param_hint="--steps",
        )
    return tuple(dict.fromkeys(steps))
