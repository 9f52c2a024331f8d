"""The noise level a blind Gaussian denoiser's own output implies, for gray images with an unknown σ.

For a Wiener-like shrinkage the error per value is σ² times the divergence per value d (MSE = σ² d),
and the mean squared residual is E r = MSE + σ²(1 − 2d) (Stein); so σ² = r / (1 − d), read off the
pre-trained network alone with the SURE probes (:func:`~rfr_deploy.adaptation.sure.sure_terms`).
Only values whose denoised level lies more than :data:`MARGIN` rough estimates from 0 and 1 count:
clipping truncates the noise near them.

On the first 12 whole Set12 and BSD68 images, σ = 15, 25, 50, with unclipped and with clipped and
quantised noise, its mean absolute error was 0.7–2.3 %; the all-patch estimate's
(:func:`~rfr_deploy.noise.level.estimate_noise_level` on gray images, the level the network trains
at) was 0.9–10.8 % (benchmarks/results/noise_level_accuracy_whole_gray_own*.md). SURE's choice of the
interpolation moves by a tenth of a dB for a few percent of σ: with this level and a ±1 % range
it kept 0.078 of SURE-at-the-true-σ's 0.096 dB on Set12 and lost on no image, where the fixed quarter
step kept 0.063 and lost 0.069 on one (benchmarks/README.md, "Gray images with an unknown σ").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rfr_deploy.adaptation.sure import SureScorer, combine, draw_probes, probe_count, sure_terms

MARGIN = 2.0
"""Values count where the denoised level lies more than this many rough σ from 0 and 1."""
RANGE = 0.01
"""SURE's σ range around the level: ±1 %."""


def residual_level(
    model: nn.Module, images: Sequence[torch.Tensor], draws: Sequence[Sequence[torch.Tensor]], rough: float
) -> float | None:
    """σ ([0, 1] units) that ``model``'s residual and divergence on ``images`` imply (see the module
    docstring), with the probes ``draws`` and the rough level ``rough``; None where no value lies far
    enough from 0 and 1, or the divergence leaves nothing to divide by."""
    margin = MARGIN * rough

    def away_from_the_ends(noisy: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return (out > margin) & (out < 1.0 - margin)

    parts = [
        sure_terms(model, y, None, b, where=away_from_the_ends) for y, b in zip(images, draws, strict=True)
    ]
    parts = [p for p in parts if p.count]
    if not parts:
        return None
    terms = combine(parts)
    if terms.divergence >= 1.0 or terms.residual <= 0.0:
        return None
    return math.sqrt(terms.residual / (1.0 - terms.divergence))


def residual_level_scorer(
    model: nn.Module | None, images: Sequence[torch.Tensor], rough: float, seed: int
) -> SureScorer | None:
    """SURE over ±:data:`RANGE` around :func:`residual_level` of the pre-trained ``model`` (a blind one:
    a noise-map network's output depends on the level it is given), with the probes drawn from ``seed``;
    None without a model or a level (the fixed interpolation applies)."""
    if model is None:
        return None
    draws = draw_probes(images, seed, probe_count(images))
    level = residual_level(model, images, draws, rough)
    if level is None:
        return None
    return SureScorer(images, (level * (1.0 - RANGE), level * (1.0 + RANGE)), None, seed, draws=draws)
