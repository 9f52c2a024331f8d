"""The adaptation settings whose defaults depend on the noise model and the images, filled in."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from rfr_deploy.adaptation.config import (
    CAMERA_STEPS,
    CHECKPOINTS,
    CUDA_GAUSSIAN_STEPS,
    ESTIMATED_GRAY_INTERPOLATION,
    FIXED_INTERPOLATION,
    GAUSSIAN_EMA,
    GAUSSIAN_PATCH,
    GAUSSIAN_STEPS,
    SUBSAMPLED_CHROMA_INTERPOLATION,
    AdaptConfig,
)
from rfr_deploy.adaptation.scoring import gray_with_estimated_level
from rfr_deploy.noise.base import gaussian_level_of, source_level_of


def resolve_defaults(
    config: AdaptConfig, noise: nn.Module, images: Sequence[torch.Tensor], per_channel: bool = False
) -> AdaptConfig:
    """``config`` with the defaults that depend on the noise model and the images filled in where a
    field is None: the budget (``steps``, and with the CPU's Gaussian one ``patch`` and ``ema``; see
    :attr:`AdaptConfig.steps`; white Gaussian noise whose chroma is then subsampled takes it too),
    ``ema`` (else 0), ``interpolation`` (:data:`ESTIMATED_GRAY_INTERPOLATION`,
    :data:`SUBSAMPLED_CHROMA_INTERPOLATION` or :data:`FIXED_INTERPOLATION`) and ``checkpoint_every``
    (M / :data:`CHECKPOINTS`); ``per_channel``: a gray network denoises the colour ``images`` channel by
    channel. A config with all of them set is returned unchanged."""
    steps, patch, ema = config.steps, config.patch, config.ema
    if steps is None:
        cuda = images[0].device.type == "cuda"
        gaussian = source_level_of(noise) is not None
        steps = (CUDA_GAUSSIAN_STEPS if cuda else GAUSSIAN_STEPS) if gaussian else CAMERA_STEPS
        if gaussian and not cuda:
            patch = GAUSSIAN_PATCH if patch is None else patch
            ema = GAUSSIAN_EMA if ema is None else ema
    interpolation, every = config.interpolation, config.checkpoint_every
    if interpolation is None:
        interpolation = FIXED_INTERPOLATION
        if gray_with_estimated_level(noise, images, per_channel):
            interpolation = ESTIMATED_GRAY_INTERPOLATION
        elif gaussian_level_of(noise) is None and source_level_of(noise) is not None:
            interpolation = SUBSAMPLED_CHROMA_INTERPOLATION
    if every is None:
        every = max(1, steps // CHECKPOINTS) if steps else 0
    return dataclasses.replace(
        config,
        steps=steps,
        patch=patch,
        ema=0.0 if ema is None else ema,
        interpolation=interpolation,
        checkpoint_every=every,
    )
