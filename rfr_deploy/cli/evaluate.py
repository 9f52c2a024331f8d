"""``rfr-deploy eval``: PSNR/SSIM before and after adaptation on a dataset (the paper's Table 2-5)."""

from __future__ import annotations

from pathlib import Path

import click

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.cli.adapt_options import adapt_config, adapt_options
from rfr_deploy.cli.options import (
    default_of,
    device_option,
    emit_json,
    grey_default_of,
    model_options,
    output_options,
    parse_int_list,
    reporter_for,
    sigma_from_grey_levels,
)
from rfr_deploy.files import atomic_write
from rfr_deploy.jobs.evaluate import EvalSettings, evaluate
from rfr_deploy.noise.build import list_noise_choices

A, E = AdaptConfig, EvalSettings


@click.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@model_options
@click.option(
    "--sigma",
    type=float,
    default=grey_default_of(E, "sigma"),
    show_default=True,
    callback=sigma_from_grey_levels,
    help="Level of the Gaussian noise added to the clean images.",
)
@click.option(
    "--steps", "steps_text", default="0,10,20,40", show_default=True, help="Comma-separated values of M."
)
@click.option(
    "--sigma-mode",
    type=click.Choice(["known", "estimate", "uniform"]),
    default=default_of(E, "sigma_mode"),
    show_default=True,
    help="Noise the adaptation assumes: true σ, estimated σ, or σ uniform in [0, 50] (real pairs: "
    "'known' uses the estimate; camera noise: 'uniform' keeps CBDNet's random levels).",
)
@click.option(
    "--noise",
    type=click.Choice(list_noise_choices()),
    default=default_of(E, "noise"),
    show_default=True,
)
@click.option(
    "--pairs", is_flag=True, help="DATASET holds noisy/ and gt/ pairs (real noise) instead of clean images."
)
@click.option(
    "--crop", type=click.IntRange(16), default=None, help="Evaluate on the central crop of this side."
)
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N images.")
@adapt_options
@click.option(
    "--output-ensemble/--no-output-ensemble", default=default_of(E, "output_ensemble"), show_default=True
)
@click.option(
    "--score-ensemble/--no-score-ensemble",
    default=default_of(E, "score_ensemble"),
    show_default=True,
    help="Also score the ×8 self-ensemble of every checkpoint (reported beside the single pass).",
)
@click.option("--seed", type=int, default=default_of(E, "seed"), show_default=True)
@device_option
@click.option(
    "--markdown", type=click.Path(dir_okay=False), default=None, help="Also write the table to this file."
)
@output_options
def command(
    dataset,
    model,
    weights,
    sigma,
    steps_text,
    sigma_mode,
    noise,
    pairs,
    crop,
    limit,
    output_ensemble,
    score_ensemble,
    seed,
    device,
    markdown,
    as_json,
    quiet,
    **adapt,
):
    """Score the pre-trained and adapted network on DATASET (a folder of clean images, or pairs)."""
    steps = parse_int_list(steps_text, "--steps")
    settings = EvalSettings(
        model=model,
        weights=weights,
        sigma=sigma,
        steps=tuple(steps),
        sigma_mode=sigma_mode,
        noise=noise,
        crop=crop,
        limit=limit,
        seed=seed,
        output_ensemble=output_ensemble,
        score_ensemble=score_ensemble,
        device=device,
        pairs=pairs,
    )
    config = adapt_config(max(steps), seed, adapt)
    report = evaluate(dataset, settings, config, reporter=reporter_for(quiet, as_json))
    if markdown:
        with atomic_write(Path(markdown)) as tmp:
            tmp.write_text(report.to_markdown() + "\n")
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(report.to_markdown())
