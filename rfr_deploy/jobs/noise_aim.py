"""Where a noise model's unknown level is read from the pre-trained network's residual (camera noise).

The white-noise estimator reads the correlated noise of real photographs 3–17× too low, and camera
noise aimed at that level teaches the network to keep the noise it sees. Noise models registered with
``level="residual"`` aim at the RMS of Y − f(Y) instead: on the 37 real pairs of ``shared/data/real``
(packaged CBDNet, default interpolation) the mean gain rose from +0.376 to +0.390 dB on Nam and from
+0.274 to +0.383 on SIDD, the worst image from −0.298 to −0.204 (benchmarks/README.md, "The camera
noise's level").
Computing it needs X̃ = f(Y), the very pseudo-clean targets adaptation trains on, so they are
handed on to :func:`~rfr_deploy.adaptation.loop.adapt` rather than computed twice.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rfr_deploy.adaptation.targets import training_targets
from rfr_deploy.errors import ImageError
from rfr_deploy.noise.level import residual_level
from rfr_deploy.noise.registry import level_source


@dataclass
class ResidualAim:
    targets: list[torch.Tensor]
    """The pseudo-clean targets X̃ = f(Y), one per image."""
    levels: list[float]
    """The RMS of Y − X̃ of each image ([0, 1] units): the levels the noise aims at."""


def residual_aim(
    kind: str,
    sigma: float | None,
    unknown_sigma: str,
    model: nn.Module,
    images: Sequence[torch.Tensor],
    model_sigma: float | None,
    ensemble: bool,
    names: Sequence[str],
) -> ResidualAim | None:
    """The targets and levels of a run whose noise ``kind`` reads its unknown level from the residual
    (``sigma`` None, ``unknown_sigma`` 'estimate'); None for every other run. ``model_sigma`` and
    ``ensemble`` are those of the pseudo-clean targets; ``names`` label the images in the error raised
    when the level the noise would aim at (the median, :attr:`~rfr_deploy.noise.registry.NoiseSettings.level`) is 0: the network
    removes nothing, and the camera model would silently fall back to random levels."""
    if sigma is not None or unknown_sigma != "estimate" or level_source(kind) != "residual":
        return None
    targets = training_targets(model, list(images), model_sigma, ensemble, None)
    levels = [residual_level(y, t) for y, t in zip(images, targets, strict=True)]
    if statistics.median(levels) <= 0.0:
        empty = [name for name, v in zip(names, levels, strict=True) if v <= 0.0]
        raise ImageError(
            f"{', '.join(empty)}: the pre-trained network removes nothing from the image, so there is no "
            f"{kind} noise level to aim at; give the level with --sigma or use --unknown-sigma uniform"
        )
    return ResidualAim(targets, levels)
