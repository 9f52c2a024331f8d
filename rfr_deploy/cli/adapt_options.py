"""The adaptation settings (``AdaptConfig``) as click options, shared by every command that adapts.

Each option is named after the ``AdaptConfig`` field it sets, so ``--refresh-every 10`` is
``AdaptConfig(refresh_every=10)``; the defaults are read from the dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click

from rfr_deploy.adaptation.config import (
    CHECKPOINTS,
    ESTIMATED_GRAY_INTERPOLATION,
    UNGUARDED_INTERPOLATION,
    AdaptConfig,
)
from rfr_deploy.adaptation.tuning import TUNE_CHOICES
from rfr_deploy.cli.options import default_of

A = AdaptConfig

_OPTIONS: list[Callable[[Callable], Callable]] = [
    click.option(
        "--lr", type=float, default=default_of(A, "lr"), show_default=True, help="Adam learning rate."
    ),
    click.option(
        "--loss", type=click.Choice(["mse", "l1"]), default=default_of(A, "loss"), show_default=True
    ),
    click.option(
        "--batch",
        type=click.IntRange(1),
        default=default_of(A, "batch"),
        show_default=True,
        help="Noise realisations per update.",
    ),
    click.option(
        "--patch",
        type=click.IntRange(8),
        default=None,
        help="Train on random square patches of this side (default: whole image when it fits in memory).",
    ),
    click.option(
        "--schedule",
        type=click.Choice(["constant", "cosine"]),
        default=default_of(A, "schedule"),
        show_default=True,
    ),
    click.option(
        "--warmup",
        type=click.IntRange(0),
        default=default_of(A, "warmup"),
        show_default=True,
        help="Updates over which the learning rate ramps up linearly.",
    ),
    click.option(
        "--interpolation",
        type=click.FloatRange(0.0, 1.5, min_open=True),
        default=default_of(A, "interpolation"),
        help="Result = pre-trained + this × (adapted − pre-trained) in weight space, where SURE does not "
        f"choose it [default: {ESTIMATED_GRAY_INTERPOLATION:g} for gray images with an estimated σ, "
        f"else {UNGUARDED_INTERPOLATION:g}].",
    ),
    click.option(
        "--select",
        type=click.Choice(["sure", "off"]),
        default=default_of(A, "select"),
        show_default=True,
        help="Choose the interpolation per image by Stein's unbiased risk estimate (Gaussian noise); "
        "'off' uses --interpolation.",
    ),
    click.option(
        "--ema",
        type=click.FloatRange(0.0, 1.0, max_open=True),
        default=default_of(A, "ema"),
        show_default=True,
        help="Average the weights over the updates (0: last weights only).",
    ),
    click.option(
        "--refresh-every",
        type=click.IntRange(0),
        default=default_of(A, "refresh_every"),
        show_default=True,
        help="Recompute the pseudo-clean targets with the adapted network every N updates (0: never).",
    ),
    click.option(
        "--recorrupted",
        type=click.FloatRange(0.0),
        default=default_of(A, "recorrupted"),
        show_default=True,
        help="Weight of the recorrupted-to-recorrupted term (pairs drawn from the noisy input itself, "
        "Gaussian noise only; 0: restore-from-restored pairs alone).",
    ),
    click.option(
        "--tune",
        type=click.Choice(list(TUNE_CHOICES)),
        default=default_of(A, "tune"),
        show_default=True,
        help="What the updates change: every weight ('all'), a per-channel gain and shift after every "
        "layer ('affine', folded into the weights afterwards), or both.",
    ),
    click.option(
        "--affine-lr",
        type=float,
        default=default_of(A, "affine_lr"),
        show_default=True,
        help="Adam learning rate of the per-channel gains and shifts (--tune affine, all+affine).",
    ),
    click.option(
        "--checkpoint-every",
        type=click.IntRange(0),
        default=None,
        help="Score the network by SURE every N updates and keep the best (Gaussian noise; 0: the last) "
        f"[default: steps / {CHECKPOINTS}].",
    ),
    click.option(
        "--optimizer",
        type=click.Choice(["adam", "radam"]),
        default=default_of(A, "optimizer"),
        show_default=True,
    ),
    click.option(
        "--target-ensemble/--no-target-ensemble",
        default=default_of(A, "target_ensemble"),
        show_default=True,
        help="×8 self-ensemble for the pseudo-clean target.",
    ),
    click.option(
        "--fast",
        type=click.Choice(["auto", "on", "off"]),
        default=default_of(A, "fast"),
        show_default=True,
        help="CUDA-graph + mixed-precision updates on GPU.",
    ),
    click.option(
        "--amp",
        type=click.Choice(["auto", "bf16", "fp16", "off"]),
        default=default_of(A, "amp"),
        show_default=True,
        help="Mixed precision of the update. GPU: bf16 where supported, else fp16 with a gradient scaler. "
        "CPU: bf16 convolutions with fp32 weights and Adam ('bf16': CPUs with AVX512-BF16 or AMX only).",
    ),
]

ADAPT_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(AdaptConfig) if f.name not in ("steps", "seed"))
"""Every field has an option above, named after it (tests/test_cli.py checks both lists agree)."""


def adapt_options(f: Callable) -> Callable:
    """Add every adaptation option (all ``AdaptConfig`` fields except ``steps`` and ``seed``)."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def adapt_config(steps: int | None, seed: int, options: dict[str, Any]) -> AdaptConfig:
    """Build the ``AdaptConfig`` from the command's keyword arguments; a bad value is a usage error."""
    try:
        return AdaptConfig(steps=steps, seed=seed, **{name: options[name] for name in ADAPT_OPTION_NAMES})
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
