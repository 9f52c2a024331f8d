"""Which estimate of the error scores a run's candidates (checkpoints, interpolation weights), by noise.

- Known σ: SURE at that σ (:class:`~rfr_deploy.adaptation.sure.SureScorer`).
- Gaussian noise drawn correlated between the channels like the images' (:mod:`rfr_deploy.noise.correlated`):
  SURE with probes correlated alike, over the level each channel holds (or the given one)
  (:meth:`~rfr_deploy.adaptation.channel_choice.SharedNoiseSure.with_correlation`).
- White Gaussian noise of an estimated (or random) σ on one colour image whose noise its channels share
  (:attr:`~rfr_deploy.noise.channels.ChannelNoise.shared`) denoised by a colour network: SURE with probes
  correlated between the channels like the noise, over the level each channel holds
  (:class:`~rfr_deploy.adaptation.channel_choice.SharedNoiseSure`). The updates drew white noise, and GCV
  and SURE with white probes, which assume it too, kept adapted networks that did worse.
- Estimated (or random) σ on other colour images where the two noise-level estimators agree: SURE over the
  narrow range around the estimate (:attr:`~rfr_deploy.noise.level.NoiseLevel.precise`).
- Estimated (or random) σ on colour images where they disagree (texture, clipping): generalised cross-validation
  (:class:`GcvScorer`), which needs no σ. SURE over the wide range that disagreement leaves kept
  (almost) every such image at its pre-trained result; GCV chose what SURE at the true σ chose on half of
  them and gained on five of six (benchmarks/results/interpolation_sweep_*_p64_gcv.md).
- An estimated σ whose error is known to be small (:attr:`~rfr_deploy.noise.base.GaussianLevel.tolerance`:
  the level a blind network implies, which jobs train gray images at, :mod:`rfr_deploy.jobs.noise_aim`):
  SURE over that band.
- Other estimated σ on gray images: SURE over ±1 % around the level the pre-trained network's own
  residual implies (:mod:`rfr_deploy.adaptation.implied_level`; a noise-map network's, told the
  estimate). With official FFDNet told the weak-texture estimate, over whole Set12 (σ = 15, 25, 50) and
  the first 12 BSD68 images (σ = 15, 25) it gained +0.037 dB where the fixed quarter step gained +0.021
  (benchmarks/README.md, "A noise-map network with an unknown σ"). Without a level, a fixed quarter step
  (:func:`gray_with_estimated_level`). Gray images with a random σ: SURE over the range below the
  estimate.
- Camera noise aimed at the pre-trained network's residual (its unknown level read from Y − f(Y):
  :func:`~rfr_deploy.noise.base.aims_at_residual`): SURE with probes coloured like that residual
  (:class:`~rfr_deploy.adaptation.coloured_sure.ColouredSureScorer`), which may only step back from the
  fixed interpolation towards the pre-trained network. On the 37 real pairs at 128² it removed both
  SIDD losses of the fixed α = 0.5 (−0.204, −0.168 dB → 0) at the same mean gain (benchmarks/README.md,
  "A guard for camera noise").
- Other noise that is not white Gaussian (camera noise at a given level or CBDNet's random levels,
  where the residual of a Gaussian-trained network is not a picture of the noise: the guard then
  threw away +2.8 and +4.7 dB), or an image with no noise found (σ̂ = 0, a zero residual): none
  (the fixed interpolation applies).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rfr_deploy.adaptation.channel_choice import SharedNoiseSure
from rfr_deploy.adaptation.coloured_sure import ColouredSureScorer
from rfr_deploy.adaptation.implied_level import implied_level_scorer, tolerance_band
from rfr_deploy.adaptation.scoring_windows import alignment, sample_for_scoring
from rfr_deploy.adaptation.sure import SureScorer, SureTerms
from rfr_deploy.noise.base import aims_at_residual, gaussian_level_of, source_level_of
from rfr_deploy.noise.channels import per_channel_level
from rfr_deploy.noise.correlated import channel_correlation_of
from rfr_deploy.noise.level import NoiseLevel, estimate_noise_level


class GcvScorer(SureScorer):
    """Scores candidates by generalised cross-validation (:meth:`SureTerms.gcv`) with the same probes for
    every candidate, as :class:`SureScorer` does. ``noise_sigma`` (the estimated range) only sets the
    levels of the clipping terms, which GCV does not use."""

    criterion = "gcv"

    def worst_gain(self, reference: SureTerms, terms: SureTerms) -> float:
        """The improvement of ``terms`` over ``reference`` by GCV (both estimate MSE + σ²); −∞ for a
        candidate GCV cannot judge (:meth:`SureTerms.gcv`), +∞ against such a reference."""
        score = terms.gcv()
        return -math.inf if math.isinf(score) else reference.gcv() - score

    def decibels(self, terms: SureTerms) -> float:
        """−10 log10 of GCV, the estimate of MSE + σ² (not a PSNR: subtracting an imprecise σ̂² would
        leave mostly the error of σ̂), within ±120 dB."""
        return -10.0 * math.log10(min(max(terms.gcv(), 1e-12), 1e12))


def make_scorer(
    noise: nn.Module,
    images: Sequence[torch.Tensor],
    pseudo_clean: Sequence[torch.Tensor],
    model_sigma: float | None,
    seed: int,
    pretrained: nn.Module | None = None,
    pixels: int = 0,
) -> SureScorer | None:
    """The scorer for a run on ``images`` with ``noise`` (see the module docstring), its probes drawn from
    ``seed``; None where the fixed interpolation applies. ``pseudo_clean`` (the pre-trained network's
    outputs) gives the residual that colours the probes for noise that is not white Gaussian;
    ``pretrained`` (the network itself) the level of gray images with an estimated σ. Images with more
    than ``pixels`` pixels (0: no limit) are scored on windows covering about that many
    (:mod:`rfr_deploy.adaptation.scoring_windows`); noise levels are still estimated on whole images."""
    sample = sample_for_scoring(images, pseudo_clean, pixels, seed, alignment(pretrained))
    scored, regions = sample.images, sample.regions
    declared = gaussian_level_of(noise)
    correlation = channel_correlation_of(noise)
    if correlation is not None:
        levels = correlated_levels(noise, images)
        return SharedNoiseSure.with_correlation(scored, levels, correlation, model_sigma, seed, regions)
    if declared is None:
        if not aims_at_residual(noise):
            return None
        return ColouredSureScorer.create(scored, sample.pseudo_clean, model_sigma, seed, regions)
    if declared.sigma is not None and declared.tolerance is not None:
        band = tolerance_band(declared.sigma, declared.tolerance)
        return SureScorer(scored, band, model_sigma, seed, regions=regions)
    if gray_with_estimated_level(noise, images, denoised_per_channel(pretrained)):
        return implied_level_scorer(pretrained, scored, declared.sigma, seed, model_sigma, regions)
    found = assumed_level(noise, images)
    if found is None:
        return None
    level, estimates = found
    colour = all(y.shape[1] > 1 for y in images)
    if estimates and colour and len(images) == 1 and not denoised_per_channel(pretrained):
        shared = SharedNoiseSure.create(images[0], scored, model_sigma, seed, regions)
        if shared is not None:
            return shared
    if estimates and colour and not all(v.precise for v in estimates):
        return GcvScorer(scored, level, model_sigma, seed, regions=regions)
    return SureScorer(scored, level, model_sigma, seed, regions=regions)


def correlated_levels(noise: nn.Module, images: Sequence[torch.Tensor]) -> tuple[float, float]:
    """The range (low, high) of the level per channel of the noise in ``images``, which ``noise`` draws
    correlated between the channels (:mod:`rfr_deploy.noise.correlated`): its level where it was given,
    else the widest range of the levels their channels hold
    (:func:`~rfr_deploy.noise.channels.per_channel_level`)."""
    drawn = source_level_of(noise)
    if drawn.sigma is not None and not drawn.estimated:
        return drawn.sigma, drawn.sigma
    levels = [per_channel_level(y) for y in images]
    return min(v.low for v in levels), max(v.high for v in levels)


def assumed_level(
    noise: nn.Module, images: Sequence[torch.Tensor]
) -> tuple[tuple[float, float], list[NoiseLevel]] | None:
    """The range (low, high) of the Gaussian level of the noise in ``images`` ([0, 1] units) the scorer
    assumes, and the per-image estimates it came from (none for a known σ).

    Known σ: that σ (low = high). Estimated σ, or random σ (level unknown): the range
    :func:`~rfr_deploy.noise.level.estimate_noise_level` gives, the widest over the images, around
    the level used. None where no scorer applies: camera noise or any other model that is not white
    Gaussian (:meth:`~rfr_deploy.noise.base.NoiseModel.gaussian_level` is None), an image with no
    noise to estimate (σ̂ = 0: flat or smaller than the estimator's patches), and gray images with
    an estimated σ (see :func:`gray_with_estimated_level`).
    """
    declared = gaussian_level_of(noise)
    if declared is None:
        return None
    if declared.sigma is not None and not declared.estimated:
        return (declared.sigma, declared.sigma), []
    if gray_with_estimated_level(noise, images):
        return None
    estimates = [estimate_noise_level(y) for y in images]
    if any(v.sigma <= 0.0 for v in estimates):
        return None  # no noise found (a flat or tiny image): no level for SURE to assume
    low = min(v.low / v.sigma for v in estimates)
    high = max(v.high / v.sigma for v in estimates)
    if declared.sigma is not None:
        level = declared.sigma
    else:
        level = sorted(v.sigma for v in estimates)[len(estimates) // 2]
    return (level * low, level * high), estimates


def denoised_per_channel(model: nn.Module | None) -> bool:
    """Whether ``model`` is a gray network run on each channel of colour images alone
    (:attr:`~rfr_deploy.models.registry.WeightsMeta.per_channel`)."""
    meta = getattr(model, "meta", None)
    return bool(getattr(meta, "per_channel", False))


def gray_with_estimated_level(
    noise: nn.Module, images: Sequence[torch.Tensor], per_channel: bool = False
) -> bool:
    """Gray images adapted with a σ estimated from them: SURE at the all-patch estimate's range is not
    trusted there, nor GCV (the network's own level is: :mod:`rfr_deploy.adaptation.implied_level`).
    Colour images a gray network denoises channel by channel (``per_channel``) count as gray: their
    noise may be shared by the channels, and only each channel's own level is read the same way.

    With σ estimated on gray 256² crops, SURE over the range [0.9 σ̂, σ̂] kept (almost) every image
    at its pre-trained result, and a narrower range let a mis-estimated image lose 0.18 dB; a fixed
    quarter step (:data:`rfr_deploy.adaptation.config.ESTIMATED_GRAY_INTERPOLATION`) kept 52–100 % of the known-σ
    gain with no image below −0.05 dB (benchmarks/results/table3_*fixed025*). GCV, which needs no σ,
    chose too long steps on textured gray crops (BSD68: one lost 0.13 dB;
    benchmarks/results/interpolation_sweep_BSD68_s25_crop256_p64_gcv.md).
    """
    declared = gaussian_level_of(noise)
    estimated = declared is not None and declared.sigma is not None and declared.estimated
    return estimated and (per_channel or all(y.shape[1] == 1 for y in images))
