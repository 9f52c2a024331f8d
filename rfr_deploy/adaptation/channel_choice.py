"""The colour network, or the gray one run on each channel alone: which SURE expects to do better on an image.

A colour network was trained on noise drawn separately in each channel. It leaves most of the noise the
channels share (:mod:`rfr_deploy.noise.channels`), and some colour networks also fail on colours their
training images lacked: official CDnCNN-B made McMaster's saturated image 1 worse than its noisy input at
σ = 5 (26.6 dB), where DnCNN-B on each channel reached 35.9 (benchmarks/results/luma_noise_auto.json).
A threshold on how much of the noise the channels share sees the first and not the second, and errs
around it (benchmarks/results/luma_noise_auto.md: 1.3–2.2 dB left at ρ = 0.3). SURE scores both networks
on the image itself.

For noise of level σ in each channel, white in space, correlated by ρ between the channels, Stein's
identity holds with the noise's covariance (:mod:`rfr_deploy.adaptation.coloured_sure`): probes of unit
variance whose channels are correlated alike, b = √ρ·s + √(1 − ρ)·o with s one standard-normal value per
pixel and o one per value, in :func:`~rfr_deploy.adaptation.sure.sure_terms`. ρ is read off the chroma
share (ρ = 1 − share²) less :data:`CORRELATION_BIAS`: texture the estimates take for noise makes the
share read low, and too large a ρ counts the colour network's averaging across the channels as
divergence it does not have. Against a grid of biases and margins (in dB and in σ̂²) on 384 crops, none did
more than 0.01 dB better where the grid was chosen (benchmarks/results/channel_choice_rules.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rfr_deploy.adaptation.scoring_windows import alignment, sample_for_scoring
from rfr_deploy.adaptation.sure import SureScorer, combine, probe_count, sure_terms
from rfr_deploy.noise.channels import implied_correlation, per_channel_level, read_channel_noise
from rfr_deploy.noise.correlated import mix_channels

CORRELATION_BIAS = 0.15
"""What is taken off the correlation the chroma share implies (see the module's docstring)."""

MARGIN_DB = 0.3
"""The gray network per channel is chosen only where SURE expects it to do at least this much better. The
colour network gains more from adapting: in a partial end-to-end run at σ = 25 (a one-off,
benchmarks/README.md) it gained −0.01 to +0.37 dB on seven 128² crops, the gray one per channel +0.01 on
the two it took (SURE's guard kept α = 0.25 there), one of which it lost 0.69 dB on that way. On the 70 crops
the bias was chosen on, the margin changed the pre-trained outputs by −0.09 dB (packaged networks) and
+3.8 dB (official) summed over all of them. A larger margin where the colour network adapts on noise
correlated like the image's (stop 66, 15 crops, both networks adapted): 1.5 dB, chosen on nine crops
(+0.10 dB there at σ = 25, nothing at σ = 50), gained 0.15 at σ = 25 and lost 0.25 at σ = 50 on the other
six (benchmarks/README.md, "Colour network or gray per channel, now that the colour network adapts on shared
noise: the margin")."""

CHOICE_PIXELS = 2**16
"""An image larger than this is scored on windows covering about this many pixels (one 256² window)."""

CHOICE_PROBES = 2
"""Divergence probes per scored image or window."""

_CHOICE_STREAM = 0xC4A7_7E15
"""Offset of the probes' and windows' seed (independent of the noise's and the other scores' streams)."""


def _probe_generator(seed: int) -> torch.Generator:
    """The generator of the correlated probes and windows' seed ``seed`` (its own stream)."""
    return torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + _CHOICE_STREAM) % 2**63)


def channel_correlation(share: float) -> float:
    """The correlation of the noise between the channels that a chroma share implies
    (:func:`~rfr_deploy.noise.channels.implied_correlation`), less :data:`CORRELATION_BIAS`, at least 0."""
    return max(implied_correlation(share) - CORRELATION_BIAS, 0.0)


def correlated_probes(
    image: torch.Tensor, rho: float, count: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """``count`` probes shaped like ``image`` (N×C×H×W), unit variance per value, correlation ``rho``
    between the channels of a pixel."""
    shape = image.shape
    probes = []
    for _ in range(count):
        own = torch.randn(shape, generator=generator)
        shared = torch.randn((shape[0], 1, *shape[2:]), generator=generator)
        probes.append(mix_channels(own, shared, rho).to(image.device, image.dtype))
    return probes


@torch.no_grad()
def per_channel_advantage(
    colour: nn.Module, per_channel: nn.Module, image: torch.Tensor, level: float, share: float, seed: int = 0
) -> float:
    """How much better, in dB, SURE expects the gray network run per channel (``per_channel``) to denoise
    ``image`` (1×3×H×W, [0, 1]) than ``colour``, for noise of ``level`` per channel ([0, 1] units) whose
    :func:`~rfr_deploy.noise.channels.chroma_share` is ``share``: both scored with the same probes on the
    same windows; −∞ where either estimate is not positive. A noise-map network is told ``level``."""
    generator = _probe_generator(seed)
    sample = sample_for_scoring([image], [image], CHOICE_PIXELS, seed, alignment(colour))
    rho = channel_correlation(share)
    probes = [correlated_probes(y, rho, CHOICE_PROBES, generator) for y in sample.images]
    scores = []
    for model in (colour, per_channel):
        told = level if getattr(getattr(model, "meta", None), "noise_map", False) else None
        parts = [
            sure_terms(model, y, told, p, sigmas=(level,), region=region)
            for y, p, region in zip(sample.images, probes, sample.regions, strict=True)
        ]
        scores.append(combine(parts).mse(level))
    colour_mse, per_channel_mse = scores
    if colour_mse <= 0 or per_channel_mse <= 0:
        return -math.inf
    return 10 * math.log10(colour_mse / per_channel_mse)


def per_channel_scores_better(
    colour: nn.Module, per_channel: nn.Module, image: torch.Tensor, level: float, share: float, seed: int = 0
) -> bool:
    """Whether SURE expects the gray network run per channel to denoise ``image`` better than ``colour`` by
    :data:`MARGIN_DB` at least (:func:`per_channel_advantage`)."""
    return per_channel_advantage(colour, per_channel, image, level, share, seed) >= MARGIN_DB


class SharedNoiseSure(SureScorer):
    """SURE for a colour network on one colour image whose noise its channels share
    (:attr:`~rfr_deploy.noise.channels.ChannelNoise.shared`): probes correlated between the channels like the
    noise (:func:`correlated_probes`), over the range of the level each channel holds
    (:func:`~rfr_deploy.noise.channels.per_channel_level`). The adaptation drew white noise, so the adapted
    network can do worse than the pre-trained one on such an image; generalised cross-validation and SURE
    with white probes, which assume white noise, chose α = 1–1.25 there and lost up to 0.73 dB
    (benchmarks/README.md, "A colour network on shared noise"). The noise is read again here (a tenth of a
    second or so), once per run."""

    criterion = "shared-noise-sure"

    @classmethod
    def create(cls, image: torch.Tensor, scored: list[torch.Tensor], model_sigma, seed: int, regions):
        """The scorer for ``image`` (1×3×H×W) scored on ``scored`` (its windows), or None where its noise
        does not read as shared by the channels."""
        reading = read_channel_noise(image)
        if reading is None or not reading.shared:
            return None
        level = per_channel_level(image)
        rho = channel_correlation(reading.share)
        return cls.with_correlation(scored, (level.low, level.high), rho, model_sigma, seed, regions)

    @classmethod
    def with_correlation(
        cls,
        scored: list[torch.Tensor],
        levels: tuple[float, float],
        rho: float,
        model_sigma,
        seed: int,
        regions,
    ):
        """The scorer of ``scored`` (images or windows) for noise of ``levels`` (low, high) per channel
        correlated by ``rho`` between the channels: the synthetic noise's where the run drew it so
        (:mod:`rfr_deploy.noise.correlated`)."""
        generator = _probe_generator(seed)
        count = probe_count(scored)
        draws = [correlated_probes(y, rho, count, generator) for y in scored]
        return cls(scored, levels, model_sigma, seed, draws=draws, regions=regions)
