"""``rfr-deploy pretrain``: train a zoo model from clean images (resumable).

Its options are generated from the fields of :class:`~rfr_deploy.jobs.pretrain.PretrainConfig`.
"""

from __future__ import annotations

import contextlib

import click

from rfr_deploy.cli.options import (
    device_option,
    emit_json,
    field_options,
    given_options,
    output_options,
    reporter_for,
    settings_from,
)
from rfr_deploy.errors import ConfigError
from rfr_deploy.jobs.pretrain import PretrainConfig, pretrain

P = PretrainConfig
TRAINING_OPTIONS = (
    *("model", "channels", "out", "steps", "batch", "patch", "lr", "lr_min", "loss", "noise"),
    *("sigma_low", "sigma_high", "objective", "seed", "checkpoint_every", "threads"),
)


@click.command("pretrain")
@click.argument("data", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@field_options(P, *TRAINING_OPTIONS)
@device_option
@field_options(P, "init")
@output_options
def command(as_json, quiet, **options):
    """Train MODEL on folders of clean images DATA; resumes from OUT/checkpoint.pt when present."""
    bounds = [
        flag for key, flag in given_options(click.get_current_context()).items() if key.startswith("sigma_")
    ]
    if bounds and options["noise"] == "camera":  # CBDNet's random camera levels, not a σ range
        raise ConfigError(
            f"{'/'.join(bounds)} bound{'' if len(bounds) > 1 else 's'} Gaussian noise levels; --noise camera "
            "draws CBDNet's random camera levels: drop " + ("them" if len(bounds) > 1 else "it")
        )
    config = settings_from(PretrainConfig, options)
    reporter = reporter_for(quiet, as_json)
    with contextlib.ExitStack() as stack:
        bar = []  # opened at the first step: the training images are read and checked before

        def progress(step: int, total: int, loss: float) -> None:
            if not bar:
                bar.append(stack.enter_context(reporter.bar(total, f"pretraining {config.model}")))
            bar[0](step, loss)

        final = pretrain(config, progress=progress)
    if as_json:
        emit_json({"weights": str(final)})
    else:
        reporter.result(f"wrote {final}")
