"""``rfr-deploy pretrain``: train a zoo model from clean images (resumable)."""

from __future__ import annotations

import click

from rfr_deploy.cli.options import (
    default_of,
    device_option,
    emit_json,
    grey_default_of,
    output_options,
    reporter_for,
    sigma_from_grey_levels,
)
from rfr_deploy.jobs.pretrain import PretrainConfig, pretrain
from rfr_deploy.noise.build import list_noise_choices

P = PretrainConfig


@click.command("pretrain")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default=default_of(P, "model"), show_default=True)
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option(
    "-o",
    "--out",
    default=default_of(P, "out"),
    show_default=True,
    help="Run folder: checkpoint.pt (resumed automatically) and final.safetensors.",
)
@click.option("--steps", type=click.IntRange(1), default=default_of(P, "steps"), show_default=True)
@click.option("--batch", type=click.IntRange(1), default=default_of(P, "batch"), show_default=True)
@click.option("--patch", type=click.IntRange(8), default=default_of(P, "patch"), show_default=True)
@click.option("--lr", type=float, default=default_of(P, "lr"), show_default=True)
@click.option("--lr-min", type=float, default=default_of(P, "lr_min"), show_default=True)
@click.option("--loss", type=click.Choice(["l1", "mse"]), default=default_of(P, "loss"), show_default=True)
@click.option(
    "--noise",
    type=click.Choice(list_noise_choices(auto=False)),
    default=default_of(P, "noise"),
    show_default=True,
)
@click.option(
    "--sigma-low",
    type=float,
    default=grey_default_of(P, "sigma_low"),
    show_default=True,
    callback=sigma_from_grey_levels,
)
@click.option(
    "--sigma-high",
    type=float,
    default=grey_default_of(P, "sigma_high"),
    show_default=True,
    callback=sigma_from_grey_levels,
)
@click.option(
    "--objective",
    type=click.Choice(["supervised", "noise2self"]),
    default=default_of(P, "objective"),
    show_default=True,
)
@click.option("--seed", type=int, default=default_of(P, "seed"), show_default=True)
@click.option(
    "--checkpoint-every", type=click.IntRange(1), default=default_of(P, "checkpoint_every"), show_default=True
)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for PyTorch.")
@device_option
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Start from these weights instead of a random initialisation (ignored when resuming).",
)
@output_options
def command(
    data,
    model,
    channels,
    out,
    steps,
    batch,
    patch,
    lr,
    lr_min,
    loss,
    noise,
    sigma_low,
    sigma_high,
    objective,
    seed,
    checkpoint_every,
    threads,
    device,
    init,
    as_json,
    quiet,
):
    """Train MODEL on folders of clean images DATA; resumes from OUT/checkpoint.pt when present."""
    config = PretrainConfig(
        model=model,
        channels=int(channels),
        data=tuple(data),
        out=out,
        steps=steps,
        batch=batch,
        patch=patch,
        lr=lr,
        lr_min=lr_min,
        loss=loss,
        noise=noise,
        sigma_low=sigma_low,
        sigma_high=sigma_high,
        objective=objective,
        seed=seed,
        checkpoint_every=checkpoint_every,
        threads=threads,
        device=device,
        init=init,
    )
    reporter = reporter_for(quiet, as_json)
    with reporter.bar(steps, f"pretraining {model}") as update:
        final = pretrain(config, progress=lambda step, total, loss: update(step, loss))
    if as_json:
        emit_json({"weights": str(final)})
    else:
        reporter.result(f"wrote {final}")
