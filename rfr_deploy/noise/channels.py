"""Noise shared by the three channels of a colour image, read off its pixels.

Colour networks are trained on noise drawn separately in each channel. Noise that is one value per pixel
added to all three channels (Photoshop's and GIMP's "monochromatic" noise, film grain, a sensor's noise
after the camera smoothed its chroma) or nearly so is correlated across them, and such a network leaves
most of it. Each channel alone still holds white noise, whatever the correlation ρ, so the gray network
run per channel (:attr:`~rfr_deploy.models.registry.WeightsMeta.per_channel`) suits it. On central 128²
crops of 12 Kodak24, CBSD68 and McMaster images at σ = 5–50 (benchmarks/results/luma_noise_auto.md,
M = 0), official CDnCNN-B lost 2.0–5.4 dB to the gray DnCNN-B run per channel at ρ = 0.5, 4.0–9.2 dB at
ρ = 1, and 1.0–2.8 dB already at ρ = 0.3; on white noise (ρ = 0) it was 0.2–1.4 dB better. Averaging
the three channels into one gray image instead keeps the noise of the chroma: never better
(benchmarks/results/luma_noise.md).

Adapted end to end (benchmarks/README.md, "Noise the colour channels share"), the packaged DnCNN per
channel ended 1.2–2.3 dB above its colour network at ρ = 0.5 and 1; a PNG of a decoded 4:2:0 JPEG reads as
shared too and did 0.16 dB better per channel than adapted on noise with its chroma subsampled.

What shows it: in an orthonormal opponent basis the noise of the two chroma axes has σ·√(1 − ρ), each
channel's has σ. :func:`chroma_share` is the ratio of the two estimates (about 1 for white noise, 0 for
noise the three channels share). Camera noise is correlated across the channels too, but also across
neighbouring pixels, which a gray network trained on white noise takes for detail: on real photos the
colour network did better, so the noise must also be white in space (:func:`neighbour_correlation`).

Jobs choose between the two networks by SURE where the noise reads as white in space
(:attr:`ChannelNoise.white`; :mod:`rfr_deploy.adaptation.channel_choice`), which also sees a colour
network that fails on an image's colours; :func:`shares_noise`, the threshold on the share alone, is what
``infer`` warns by, where the exported graph is one network or the other.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rfr_deploy.noise.level import NoiseLevel, estimate_noise_level, estimate_sigma

OPPONENT_CHROMA = (
    (2**-0.5, -(2**-0.5), 0.0),
    (6**-0.5, 6**-0.5, -2 * 6**-0.5),
)
"""Two orthonormal chroma axes of RGB, both orthogonal to (1, 1, 1): white noise of σ per channel has σ on
each, noise the channels share has none."""

SHARED_BELOW = 0.75
"""A colour image's noise counts as shared by its channels where :func:`chroma_share` is below this
(ρ above about 0.45). On the crops of benchmarks/results/luma_noise_auto.md white noise read 0.73–1.06
(0.65 on a textured CBSD68 crop at σ = 5, switched, which cost it 3.6 dB), ρ = 0.3 0.54–0.99, ρ = 0.5
0.50–0.95 and ρ = 0.8 0.28–0.86: 11 or 12 of 12 crops switched at ρ ≥ 0.5, 2–6 at ρ = 0.3 (the rest
keep 1–2.8 dB there, which a threshold nearer the white noise's would switch many white crops to get),
and 3 of 60 white-noise crops switched. McMaster's image 1, whose saturated colours the estimate of the
chroma reads as noise, kept the colour network in four runs at ρ ≥ 0.5 (σ ≤ 15), losing 3.5–11.4 dB."""

LEAST_LEVEL = 5 / 255
"""Below this level per channel ([0, 1] units) the image's own texture passes for noise in the estimates
(white noise read a share of 0.32 on a textured crop at σ = 2): the noise is not read as shared."""


SHARE_PATCHES = 40_000
"""At most about this many patches per estimate (a stride across larger images): a tenth of a second for
the four estimates on one core, where the level estimator's default takes several times that."""

CORRELATED_FROM = 0.2
"""The noise counts as white in space below this correlation of neighbouring pixels
(:func:`neighbour_correlation`). Camera noise, which demosaicking and the camera's processing spread over
neighbouring pixels, reads more: 0.23–0.36 on the 12 SIDD samples (benchmarks/results/
luma_noise_real_readings.md), 8 of which read as shared by the channels at a level of at least 5, and on
all 12 the gray network per channel lost 1.0–5.3 dB to the colour network
(benchmarks/results/luma_noise_real.md). Noise white in space on 128² test crops read −0.06–0.18: up to
0.18 on textured crops at σ = 5 (their flattest blocks keep some texture), 0.10 at σ = 10
(benchmarks/results/luma_noise_readings.md)."""

BLOCK = 8
"""Side of the blocks :func:`neighbour_correlation` reads (stride half of it, or more on large images)."""

FLATTEST = 0.1
"""Share of the blocks :func:`neighbour_correlation` reads: those whose residual off a plane is smallest."""

READ_SIDE = 1024
""":func:`shares_noise` reads a larger image on its central window of this side: several seconds on one
core for a 12-megapixel photo otherwise (most of it converting and filtering the whole image)."""

LEAST_SIDE = 64
"""Images smaller than this on a side are not read: too few patches for a stable covariance of the chroma's
(white noise on 20×24 pixels read a share of 0.69)."""


@torch.no_grad()
def chroma_share(image: torch.Tensor) -> tuple[float, float]:
    """(σ on the chroma axes / σ per channel, σ per channel) of the colour ``image`` (3×H×W or 1×3×H×W,
    [0, 1]): weak-texture estimates (:func:`~rfr_deploy.noise.level.estimate_sigma`), the per-channel one
    the mean of the three channels' own."""
    x = image.detach().reshape(-1, *image.shape[-2:]).to("cpu", torch.float64)
    if x.shape[0] != 3:
        raise ValueError(f"chroma_share needs a colour image, got {x.shape[0]} channel(s)")
    per_channel = _channel_level(x)
    axes = torch.tensor(OPPONENT_CHROMA, dtype=x.dtype)
    chroma = torch.einsum("ij,jhw->ihw", axes, x) + 0.5  # centred: the estimator leaves out the clipped ends
    return estimate_sigma(chroma, max_patches=SHARE_PATCHES) / max(per_channel, 1e-12), per_channel


@torch.no_grad()
def neighbour_correlation(image: torch.Tensor) -> float:
    """The correlation of horizontally and vertically neighbouring pixels of the noise of ``image`` (C×H×W
    or 1×C×H×W, [0, 1]), read on the flattest :data:`BLOCK`² blocks of each channel (:data:`FLATTEST`),
    off a plane fitted to each: about 0 for noise that is white in space (see :data:`CORRELATED_FROM`)."""
    x = image.detach().reshape(-1, *image.shape[-2:]).to("cpu", torch.float64)
    stride = max(BLOCK // 2, math.ceil(math.sqrt(x[0].numel() / SHARE_PATCHES)))
    off_plane = _off_plane(BLOCK, x.dtype)
    values = []
    for plane in x:
        blocks = F.unfold(plane[None, None], BLOCK, stride=stride)[0].T @ off_plane
        keep = max(16, int(FLATTEST * blocks.shape[0]))
        flat = blocks[blocks.pow(2).mean(dim=1).topk(keep, largest=False).indices].view(-1, BLOCK, BLOCK)
        across = (flat[:, :, 1:] * flat[:, :, :-1]).mean() + (flat[:, 1:] * flat[:, :-1]).mean()
        values.append(float(across / (2 * flat.pow(2).mean().clamp_min(1e-24))))
    return statistics.mean(values)


def _off_plane(side: int, dtype: torch.dtype) -> torch.Tensor:
    """The projection (side²×side², symmetric) that takes a flattened block to its residual off the best
    plane a + b·row + c·column."""
    rows, cols = torch.meshgrid(
        torch.arange(side, dtype=dtype), torch.arange(side, dtype=dtype), indexing="ij"
    )
    basis = torch.stack([torch.ones(side * side, dtype=dtype), rows.flatten(), cols.flatten()], dim=1)
    return torch.eye(side * side, dtype=dtype) - basis @ torch.linalg.pinv(basis)


def _channel_level(x: torch.Tensor) -> float:
    """The mean of the channels' weak-texture noise levels (C×H×W, float64)."""
    return statistics.mean(estimate_sigma(x[c : c + 1], max_patches=SHARE_PATCHES) for c in range(x.shape[0]))


@dataclass(frozen=True)
class ChannelNoise:
    """What :func:`read_channel_noise` read of a colour image's noise ([0, 1] units)."""

    share: float
    """:func:`chroma_share`: about 1 for white noise, √(1 − ρ) for noise of correlation ρ between the channels."""
    level: float
    """The mean of the channels' noise levels."""
    correlation: float
    """:func:`neighbour_correlation`: about 0 for noise white in space."""

    @property
    def white(self) -> bool:
        """Whether the noise reads as white in space, at a level its estimates can be trusted at
        (:data:`LEAST_LEVEL`, :data:`CORRELATED_FROM`): a gray network per channel may suit it."""
        return self.level >= LEAST_LEVEL and self.correlation < CORRELATED_FROM

    @property
    def shared(self) -> bool:
        """Whether the noise is (nearly) the same in the three channels and white in space
        (:data:`SHARED_BELOW`)."""
        return self.white and self.share < SHARED_BELOW


def implied_correlation(share: float) -> float:
    """The correlation ρ between the channels a :func:`chroma_share` of ``share`` implies, 1 − share², within
    [0, 1]. Texture the estimates take for noise makes the share read low and ρ high: white noise read
    0.10–0.15 on average, noise of ρ = 0.5 0.49–0.60 on six 128² crops at σ = 25 and 50
    (benchmarks/README.md, "Colour network or gray per channel, chosen by SURE" and "Shared noise: drawn at
    the correlation the chroma share implies, not lowered by the bias")."""
    return min(max(1.0 - share**2, 0.0), 1.0)


def read_channel_noise(image: torch.Tensor) -> ChannelNoise | None:
    """The noise of the colour ``image`` (3×H×W or 1×3×H×W, [0, 1]) read on its central :data:`READ_SIDE`
    window; None for an image smaller than :data:`LEAST_SIDE` on a side."""
    if min(image.shape[-2:]) < LEAST_SIDE:
        return None
    h, w = image.shape[-2:]
    top, left = max(0, (h - READ_SIDE) // 2), max(0, (w - READ_SIDE) // 2)
    image = image[..., top : top + READ_SIDE, left : left + READ_SIDE]
    share, level = chroma_share(image)
    return ChannelNoise(share, level, neighbour_correlation(image))


def shares_noise(image: torch.Tensor) -> bool:
    """Whether the noise of the colour ``image`` is (nearly) the same in its three channels and white in
    space, as a gray network run per channel takes it (:attr:`ChannelNoise.shared`)."""
    reading = read_channel_noise(image)
    return reading is not None and reading.shared


def per_channel_level(image: torch.Tensor, noise_map: bool = False) -> NoiseLevel:
    """The noise level of each channel of ``image`` (C×H×W or 1×C×H×W) read as a gray image's
    (:func:`~rfr_deploy.noise.level.estimate_noise_level`), averaged: what a gray network run on each
    channel alone sees."""
    x = image.reshape(-1, 1, *image.shape[-2:])
    levels = [estimate_noise_level(plane, noise_map) for plane in x]
    return NoiseLevel(*(statistics.mean(getattr(lv, k) for lv in levels) for k in ("sigma", "low", "high")))
