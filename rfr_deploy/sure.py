"""Stein's unbiased risk estimate: the error of a denoiser on the noisy image itself, without the clean one.

For Y = X + N with white Gaussian N of level σ and a denoiser h,

    SURE(h, Y) = ‖Y − h(Y)‖²/n − σ² + (2σ²/n) · div h(Y)

has the same expectation as the true mean squared error ‖X − h(Y)‖²/n (Stein 1981). The
divergence is estimated by Monte Carlo with random probes b: div h(Y) ≈ bᵀ(h(Y + εb) − h(Y))/ε
(Ramani, Blu & Unser 2008). Differences between two denoisers of the same image are estimated
far more precisely than either error, because both see the same Y and the same probes.

Adaptation uses it to choose, per image, how far to move from the pre-trained weights towards
the adapted ones (see :func:`select_interpolation`). The pre-trained network is always one of
the candidates, so the choice avoids ending below the pre-trained output. It needs Gaussian noise
of a known or estimated level; camera noise (signal dependent) keeps the fixed interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .inference import denoise
from .noise import GaussianNoise, base_noise, is_gaussian
from .noise_level import estimate_noise_level

_PROBE_STREAM = 0x5EED_50BE_0000_0001
"""Offset of the probe generator's seed (see :func:`select_interpolation`)."""

CANDIDATES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
"""Interpolation weights tried: 0 is the pre-trained network, 1 the adapted one, 1.25 goes a little further."""


@torch.no_grad()
def sure_terms(
    model: nn.Module,
    noisy: torch.Tensor,
    model_sigma: float | None = None,
    probes: Sequence[torch.Tensor] = (),
    epsilon: float = 1e-3,
) -> tuple[float, float]:
    """The two data terms of SURE: mean squared residual ‖Y − h(Y)‖²/n and divergence per pixel.

    They do not depend on σ, so one evaluation serves any assumed noise level (see :func:`sure_mse`).
    ``probes`` are standard-normal tensors shaped like ``noisy`` (one is drawn when empty); pass the
    same probes to compare several denoisers of one image.
    """
    if not probes:
        probes = (torch.randn_like(noisy),)
    out = denoise(model, noisy, sigma=model_sigma)
    divergence = 0.0
    for b in probes:
        shifted = denoise(model, noisy + epsilon * b, sigma=model_sigma)
        divergence += float((b * (shifted - out)).double().sum()) / epsilon
    residual = float(((noisy - out).double() ** 2).mean())
    return residual, divergence / len(probes) / noisy.numel()


def sure_from_terms(residual: float, divergence: float, noise_sigma: float) -> float:
    return residual - noise_sigma**2 + 2.0 * noise_sigma**2 * divergence


def sure_mse(
    model: nn.Module,
    noisy: torch.Tensor,
    noise_sigma: float,
    model_sigma: float | None = None,
    probes: Sequence[torch.Tensor] = (),
    epsilon: float = 1e-3,
) -> float:
    """Monte-Carlo SURE of ``model`` on ``noisy`` (1×C×H×W, [0, 1]); ``noise_sigma`` in [0, 1] units.

    Returns the estimated mean squared error per pixel in [0, 1]² units.
    """
    return sure_from_terms(*sure_terms(model, noisy, model_sigma, probes, epsilon), noise_sigma)


def gaussian_level(noise: nn.Module, images: Sequence[torch.Tensor]) -> tuple[float, float] | None:
    """The range (low, high) of the Gaussian level of the noise in ``images`` ([0, 1] units) SURE should assume.

    Known σ: that σ (low = high). Estimated σ, or uniform σ (level unknown): the range
    :func:`~rfr_deploy.noise_level.estimate_noise_level` gives, the widest over the images, around
    the level used. Camera noise or any other model: None (SURE for Gaussian noise does not apply).
    Gray images with an estimated σ: None as well: SURE needs σ to about half a percent, and on a
    single gray image neither estimator is that precise (see :func:`gray_with_estimated_level`).
    """
    if not is_gaussian(noise):
        return None
    inner = base_noise(noise)
    if isinstance(inner, GaussianNoise) and not inner.estimated:
        return inner.sigma / 255.0, inner.sigma / 255.0
    if gray_with_estimated_level(noise, images):
        return None
    levels = [estimate_noise_level(y) for y in images]
    low = min(v.low / v.sigma for v in levels)
    high = max(v.high / v.sigma for v in levels)
    if isinstance(inner, GaussianNoise):
        level = inner.sigma / 255.0
    else:
        level = sorted(v.sigma for v in levels)[len(levels) // 2] / 255.0
    return level * low, level * high


def gray_with_estimated_level(noise: nn.Module, images: Sequence[torch.Tensor]) -> bool:
    """Gray images adapted with a σ estimated from them: SURE's choice is not trusted there.

    With σ estimated on gray 256² crops, SURE over the range [0.9 σ̂, σ̂] kept (almost) every image
    at its pre-trained result, and a narrower range let a mis-estimated image lose 0.18 dB; a fixed
    quarter step (:data:`rfr_deploy.adapt.ESTIMATED_GRAY_INTERPOLATION`) kept 52–100 % of the known-σ
    gain with no image below −0.05 dB (benchmarks/results/table3_*fixed025*).
    """
    inner = base_noise(noise)
    return isinstance(inner, GaussianNoise) and inner.estimated and all(y.shape[1] == 1 for y in images)


@dataclass
class Selection:
    interpolation: float
    """The chosen weight: result = pre-trained + interpolation × (adapted − pre-trained)."""
    estimates: dict[float, float]
    """SURE estimate (PSNR-like, dB: −10 log10 of the estimated MSE at the upper σ) of every candidate."""


class SureScorer:
    """SURE of several denoisers of the same ``images``, all scored with the same probes.

    Differences between the scores are then precise (the probes' Monte-Carlo error is shared).
    ``noise_sigma`` is the level of the noise, or a range (low, high) when it is only estimated.
    ``probes`` per image defaults to :func:`probe_count`.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        noise_sigma: float | tuple[float, float],
        model_sigma: float | None,
        seed: int,
        probes: int | None = None,
    ):
        self.images, self.model_sigma = images, model_sigma
        self.low, self.high = (
            (noise_sigma, noise_sigma) if isinstance(noise_sigma, float | int) else noise_sigma
        )
        self.draws = draw_probes(images, seed, probe_count(images) if probes is None else probes)
        self.pixels = sum(y.numel() for y in images)

    def terms(self, net: nn.Module) -> tuple[float, float]:
        """The pixel-weighted mean residual and divergence of ``net`` over the images."""
        parts = [
            sure_terms(net, y, self.model_sigma, b) for y, b in zip(self.images, self.draws, strict=True)
        ]
        sizes = [y.numel() for y in self.images]
        return (
            sum(r * n for (r, _), n in zip(parts, sizes, strict=True)) / self.pixels,
            sum(d * n for (_, d), n in zip(parts, sizes, strict=True)) / self.pixels,
        )

    def worst_gain(self, reference: tuple[float, float], terms: tuple[float, float]) -> float:
        """The estimated MSE improvement of ``terms`` over ``reference``, at the worst end of the σ range.

        The improvement is linear in σ², so checking both ends covers the whole range.
        """
        return min(sure_from_terms(*reference, s) - sure_from_terms(*terms, s) for s in (self.low, self.high))

    def decibels(self, terms: tuple[float, float]) -> float:
        """A PSNR-like figure: −10 log10 of the estimated MSE at the upper σ."""
        return -10.0 * math.log10(max(sure_from_terms(*terms, self.high), 1e-12))


def select_interpolation(
    build: Callable[[float], nn.Module],
    images: Sequence[torch.Tensor],
    noise_sigma: float | tuple[float, float],
    model_sigma: float | None,
    seed: int,
    candidates: Sequence[float] = CANDIDATES,
    probes: int | None = None,
) -> Selection:
    """The candidate weight whose network has the lowest SURE summed over ``images``.

    ``build(alpha)`` returns the network for interpolation weight ``alpha``. Every candidate is
    scored with the same probes (:class:`SureScorer`). A candidate counts by its worst-case
    improvement over the first candidate (the pre-trained network) across the σ range.
    """
    scorer = SureScorer(images, noise_sigma, model_sigma, seed, probes)
    terms = {alpha: scorer.terms(build(alpha)) for alpha in candidates}
    reference = terms[candidates[0]]
    worst_gain = {a: scorer.worst_gain(reference, terms[a]) for a in candidates}
    estimates = {a: scorer.decibels(terms[a]) for a in candidates}
    best = max(candidates, key=lambda a: (worst_gain[a], -abs(a - 0.5)))
    return Selection(best, estimates)


PROBE_ELEMENTS = 4 * 256 * 256
"""Probes are added until they cover this many values (at least 2, at most 16 per image)."""


def probe_count(images: Sequence[torch.Tensor]) -> int:
    """How many divergence probes per image keep the Monte-Carlo error of SURE differences small.

    The error of one probe's divergence estimate shrinks with the number of pixels it averages
    over; small images need more probes for the same precision (on 128² colour crops two probes
    let SURE pick an α that lost up to 0.06 dB). Two for a 256² colour image, four for 256² gray,
    sixteen for 128² gray.
    """
    elements = sum(y.numel() for y in images)
    return max(2, min(16, math.ceil(PROBE_ELEMENTS / max(elements, 1))))


def draw_probes(images: Sequence[torch.Tensor], seed: int, count: int) -> list[list[torch.Tensor]]:
    """``count`` standard-normal probes per image, reproducible from ``seed``.

    The probes must be independent of the noise in the images. Benchmarks seed their noise with
    small integers; probes drawn from a generator seeded the same way would *be* that noise, and a
    denoiser's response along its own noise is nothing like its divergence. Hence a separate stream.
    """
    generator = torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + _PROBE_STREAM) % 2**63)
    return [
        [torch.randn(y.shape, generator=generator).to(y.device, y.dtype) for _ in range(count)]
        for y in images
    ]
