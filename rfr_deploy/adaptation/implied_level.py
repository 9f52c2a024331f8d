"""The noise level a Gaussian denoiser's own output implies, for gray images with an unknown σ (a
noise-map network's, for the level its map is told).

For a Wiener-like shrinkage the error per value is σ² times the divergence per value d (MSE = σ² d),
and the mean squared residual is E r = MSE + σ²(1 − 2d) (Stein); so σ² = r / (1 − d), read off the
pre-trained network alone with the SURE probes (:func:`~rfr_deploy.adaptation.sure.sure_terms`).
Only values whose denoised level lies more than :data:`MARGIN` rough estimates from 0 and 1 count:
clipping truncates the noise near them.

On the first 12 whole Set12 and BSD68 images, σ = 15, 25, 50, with unclipped and with clipped and
quantised noise, its mean absolute error was 0.7–2.3 %; the all-patch estimate's
(:func:`~rfr_deploy.noise.level.estimate_noise_level` on gray images) was 0.9–10.8 %
(benchmarks/results/noise_level_accuracy_whole_gray_own*.md). SURE's choice of the interpolation moves
by a tenth of a dB for a few percent of σ, so gray images with an estimated σ are scored over
±:data:`TOLERANCE` around this level; since stop 43 they also train at it
(:mod:`rfr_deploy.jobs.noise_aim`; benchmarks/README.md, "Gray images: train at the level the
network implies").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rfr_deploy.adaptation.scoring_windows import alignment, sample_for_scoring
from rfr_deploy.adaptation.sure import SureScorer, combine, draw_probes, probe_count, sure_terms

MARGIN = 2.0
"""Values count where the denoised level lies more than this many rough σ from 0 and 1."""
TOLERANCE = 0.01
"""The relative error SURE allows the implied level: it scores over ±1 % around it."""


def implied_level(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    draws: Sequence[Sequence[torch.Tensor]],
    rough: float,
    model_sigma: float | None = None,
    regions: Sequence[torch.Tensor | None] | None = None,
) -> float | None:
    """σ ([0, 1] units) that ``model``'s residual and divergence on ``images`` imply (see the module
    docstring), with the probes ``draws`` and the rough level ``rough``; None where no value lies far
    enough from 0 and 1, or the divergence leaves nothing to divide by. ``model_sigma``: the level a
    noise-map network is given (its output, and so the level implied, depends on it); ``regions``: the
    part of each image to average over (:class:`~rfr_deploy.adaptation.sure.SureScorer`)."""
    margin = MARGIN * rough

    def away_from_the_ends(noisy: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return (out > margin) & (out < 1.0 - margin)

    parts = [
        sure_terms(model, y, model_sigma, b, where=away_from_the_ends, region=r)
        for y, b, r in zip(images, draws, regions or [None] * len(images), strict=True)
    ]
    parts = [p for p in parts if p.count]
    if not parts:
        return None
    terms = combine(parts)
    if terms.divergence >= 1.0 or terms.residual <= 0.0:
        return None
    return math.sqrt(terms.residual / (1.0 - terms.divergence))


def implied_levels(
    model: nn.Module, images: Sequence[torch.Tensor], rough: Sequence[float], seed: int, pixels: int = 0
) -> list[float | None]:
    """:func:`implied_level` of each image on its own, with the probes a :class:`SureScorer` of that
    image alone draws from ``seed``; ``rough`` holds the images' rough levels. An image with more than
    ``pixels`` pixels (0: no limit) is read on its scoring windows
    (:func:`~rfr_deploy.adaptation.scoring_windows.sample_for_scoring`)."""
    levels = []
    for y, r in zip(images, rough, strict=True):
        sample = sample_for_scoring([y], [y], pixels, seed, alignment(model))
        draws = draw_probes(sample.images, seed, probe_count(sample.images))
        levels.append(implied_level(model, sample.images, draws, r, regions=sample.regions))
    return levels


def tolerance_band(level: float, tolerance: float = TOLERANCE) -> tuple[float, float]:
    """The σ range (low, high) within ``tolerance`` of ``level``."""
    return level * (1.0 - tolerance), level * (1.0 + tolerance)


def implied_level_scorer(
    model: nn.Module | None,
    images: Sequence[torch.Tensor],
    rough: float,
    seed: int,
    model_sigma: float | None = None,
    regions: Sequence[torch.Tensor | None] | None = None,
) -> SureScorer | None:
    """SURE over ±:data:`TOLERANCE` around :func:`implied_level` of the pre-trained ``model`` on all of
    ``images`` (a noise-map network told ``model_sigma``; ``regions`` as in :func:`implied_level`), with the
    probes drawn from ``seed``; None without a model or a level (the fixed interpolation applies)."""
    if model is None:
        return None
    draws = draw_probes(images, seed, probe_count(images))
    level = implied_level(model, images, draws, rough, model_sigma, regions)
    if level is None:
        return None
    return SureScorer(images, tolerance_band(level), model_sigma, seed, draws=draws, regions=regions)
