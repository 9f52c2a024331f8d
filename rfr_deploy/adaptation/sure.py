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
of a known or estimated level; :mod:`rfr_deploy.adaptation.scoring` decides which estimate applies to
which noise (SURE, generalised cross-validation, SURE with coloured probes, or none: the fixed interpolation).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rfr_deploy.inference import denoise

_PROBE_STREAM = 0x5EED_50BE_0000_0001
"""Offset of the probe generator's seed (see :func:`select_interpolation`)."""

CANDIDATES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
"""Interpolation weights tried: 0 is the pre-trained network, 1 the adapted one, 1.25 goes a little further."""


@dataclass
class SureTerms:
    """The data terms of SURE for one denoiser on one image, per value they average over."""

    residual: float
    """Mean squared residual ‖Y − h(Y)‖² over the unclipped values."""
    divergence: float
    """Mean divergence ∂h_i/∂Y_i over the unclipped values (Monte Carlo)."""
    count: int
    """How many values the terms average over."""
    boundary: dict[float, float] = field(default_factory=dict)
    """The clipping correction at each noise level asked for (see :func:`clipping_correction`)."""

    def mse(self, sigma: float) -> float:
        """Estimated mean squared error for Gaussian noise of level ``sigma`` ([0, 1] units)."""
        return self.residual - sigma**2 + 2.0 * sigma**2 * self.divergence + self.boundary.get(sigma, 0.0)

    def gcv(self) -> float:
        """Generalised cross-validation, ‖Y − h(Y)‖²/n / (1 − div h/n)² (Craven & Wahba 1979): an
        estimate of MSE + σ² that needs no σ.

        With r the residual and d the divergence per value, E r = MSE + σ²(1 − 2d), so
        GCV ≈ MSE(1 + 2d) + σ²(1 − d²): comparing two denoisers it errs by about 2(MSE − σ² d) Δd, which
        cancels for a Wiener-like shrinkage (MSE = σ² d), where SURE with a σ off by a fraction e errs
        by 4 e σ² Δd. Infinite for a divergence of 1 (the identity, which GCV cannot judge).
        """
        slack = 1.0 - self.divergence
        return self.residual / slack**2 if slack > 1e-6 else math.inf


@torch.no_grad()
def sure_terms(
    model: nn.Module,
    noisy: torch.Tensor,
    model_sigma: float | None = None,
    probes: Sequence[torch.Tensor] = (),
    epsilon: float = 1e-3,
    sigmas: Sequence[float] = (),
    clipping: bool = True,
    where: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    region: torch.Tensor | None = None,
) -> SureTerms:
    """The data terms of SURE: mean squared residual ‖Y − h(Y)‖²/n and divergence per value.

    Residual and divergence do not depend on σ, so one evaluation serves any assumed noise level;
    the clipping correction is computed for each level in ``sigmas``. ``probes`` are standard-normal
    tensors shaped like ``noisy`` (one is drawn when empty); pass the same probes to compare several
    denoisers of one image.

    ``clipping`` (default) accounts for an 8/16-bit file's clipping: a value saturated at 0 or 1
    carries less noise than σ, or none, yet plain SURE subtracts σ² for it, which drove the estimate
    negative on photographs with a few percent of saturated values. The terms then average over the
    unsaturated values only (:func:`unsaturated`), and Stein's identity on the truncated range adds
    its boundary term (:func:`clipping_correction`); the result estimates the error on those values,
    which stands for the whole image (benchmarks/results/sure_clipping_*). ``where`` replaces that
    choice: the values to average over, from the input and the output (e.g. away from 0 and 1,
    :mod:`rfr_deploy.adaptation.implied_level`). ``region`` (a bool mask that broadcasts to ``noisy``)
    restricts all of it to a part of the image: a scoring window cut with a margin
    (:mod:`rfr_deploy.adaptation.scoring_windows`), whose probes are then zero on the margin.
    """
    if not probes:
        probes = (torch.randn_like(noisy),)
    out = denoise(model, noisy, sigma=model_sigma)
    if where is not None:
        keep = where(noisy, out)
    else:
        keep = unsaturated(noisy) if clipping else torch.ones_like(noisy, dtype=torch.bool)
    within = noisy.numel()
    if region is not None:
        keep = keep & region
        within = int(region.expand_as(noisy).sum())
    count = int(keep.sum())
    if count == 0:  # ``where`` kept no value: nothing to average
        return SureTerms(0.0, 0.0, 0, {s: 0.0 for s in sigmas})
    divergence = 0.0
    for b in probes:
        b = b * keep  # a probe on the kept values only: the same expectation, less variance
        shifted = denoise(model, noisy + epsilon * b, sigma=model_sigma)
        divergence += float((b * (shifted - out)).double().sum()) / epsilon
    residual = float((((noisy - out) * keep).double() ** 2).sum()) / count
    clipped = count < within
    boundary = {s: clipping_correction(out, s, region) / count if clipped else 0.0 for s in sigmas}
    return SureTerms(residual, divergence / len(probes) / count, count, boundary)


def unsaturated(noisy: torch.Tensor) -> torch.Tensor:
    """Where ``noisy`` is not clipped: every value but exactly 0 and 1 (8/16-bit files hold those after
    clipping; an image with none of them keeps every value). All values when every one is clipped."""
    keep = (noisy != 0.0) & (noisy != 1.0)
    return keep if bool(keep.any()) else torch.ones_like(keep)


def clipping_correction(out: torch.Tensor, sigma: float, region: torch.Tensor | None = None) -> float:
    """Σ of the boundary terms of Stein's identity for Y = clip(X + N, 0, 1), restricted to 0 < Y < 1.

    For one value, E[(h − X)² 1(0 < Y < 1)] = E[((h − Y)² − σ² + 2σ² ∂h/∂Y) 1(0 < Y < 1)]
    + σ² φ_σ(X)(2h⁰ − X) + σ² φ_σ(1 − X)(2(1 − h¹) − (1 − X)), with φ_σ the density of N and h⁰, h¹
    the output where Y is clipped to 0 and 1. The clean X is taken as the (clamped) output and h⁰, h¹
    as h itself; values far from 0 and 1 add nothing. ``region``: the values summed over (None: all).
    """
    if sigma <= 0:
        return 0.0
    x = out.clamp(0.0, 1.0).double()
    h = out.double()

    def density(t: torch.Tensor) -> torch.Tensor:
        return torch.exp(-0.5 * (t / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))

    terms = density(x) * (2.0 * h - x) + density(1.0 - x) * (2.0 * (1.0 - h) - (1.0 - x))
    if region is not None:
        terms = terms * region
    return float(sigma**2 * terms.sum())


def combine(parts: Sequence[SureTerms]) -> SureTerms:
    """The terms of several images together, weighted by the values each averages over."""
    total = sum(p.count for p in parts)
    return SureTerms(
        residual=sum(p.residual * p.count for p in parts) / total,
        divergence=sum(p.divergence * p.count for p in parts) / total,
        count=total,
        boundary={s: sum(p.boundary[s] * p.count for p in parts) / total for s in parts[0].boundary},
    )


def sure_mse(
    model: nn.Module,
    noisy: torch.Tensor,
    noise_sigma: float,
    model_sigma: float | None = None,
    probes: Sequence[torch.Tensor] = (),
    epsilon: float = 1e-3,
    clipping: bool = True,
) -> float:
    """Monte-Carlo SURE of ``model`` on ``noisy`` (1×C×H×W, [0, 1]); ``noise_sigma`` in [0, 1] units.

    Returns the estimated mean squared error per pixel in [0, 1]² units.
    """
    terms = sure_terms(model, noisy, model_sigma, probes, epsilon, (noise_sigma,), clipping)
    return terms.mse(noise_sigma)


@dataclass
class Selection:
    interpolation: float
    """The chosen weight: result = pre-trained + interpolation × (adapted − pre-trained)."""
    estimates: dict[float, float]
    """SURE estimate (PSNR-like, dB: −10 log10 of the estimated MSE at the upper σ) of every candidate."""
    gain: float = 0.0
    """The chosen network's estimated MSE improvement over the first candidate, at the worst end of the σ
    range (:meth:`SureScorer.worst_gain`; 0 for the first candidate itself)."""


class SureScorer:
    """SURE of several denoisers of the same ``images``, all scored with the same probes.

    Differences between the scores are then precise (the probes' Monte-Carlo error is shared).
    ``noise_sigma`` is the level of the noise, or a range (low, high) when it is only estimated.
    ``probes`` per image defaults to :func:`probe_count`; ``draws`` (a list of probes per image) replaces
    the standard-normal ones (e.g. coloured ones, :mod:`rfr_deploy.adaptation.coloured_sure`);
    ``clipping``: see :func:`sure_terms`; ``regions`` (one per image, None: all of it): the part of each
    image the scores average over (windows of a large image, :mod:`rfr_deploy.adaptation.scoring_windows`).
    """

    criterion = "sure"
    """What the scores estimate, for reports and manifests."""
    scores_checkpoints = True
    """Whether the checkpoints along a run are scored too (:mod:`rfr_deploy.adaptation.checkpoints`)."""

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        noise_sigma: float | tuple[float, float],
        model_sigma: float | None,
        seed: int,
        probes: int | None = None,
        clipping: bool = True,
        draws: list[list[torch.Tensor]] | None = None,
        regions: Sequence[torch.Tensor | None] | None = None,
    ):
        self.images, self.model_sigma, self.clipping = images, model_sigma, clipping
        self.regions = list(regions) if regions is not None else [None] * len(images)
        self.low, self.high = (
            (noise_sigma, noise_sigma) if isinstance(noise_sigma, float | int) else noise_sigma
        )
        if draws is None:
            draws = draw_probes(images, seed, probe_count(images) if probes is None else probes)
        self.draws = draws

    def terms(self, net: nn.Module) -> SureTerms:
        """The terms of ``net`` over all the images, weighted by the values each averages over."""
        return combine(
            [
                sure_terms(
                    net,
                    y,
                    self.model_sigma,
                    b,
                    sigmas=(self.low, self.high),
                    clipping=self.clipping,
                    region=r,
                )
                for y, b, r in zip(self.images, self.draws, self.regions, strict=True)
            ]
        )

    def worst_gain(self, reference: SureTerms, terms: SureTerms) -> float:
        """The estimated MSE improvement of ``terms`` over ``reference``, at the worst end of the σ range.

        The improvement is linear in σ² (up to the clipping correction), so checking both ends covers
        the whole range.
        """
        return min(reference.mse(s) - terms.mse(s) for s in (self.low, self.high))

    def decibels(self, terms: SureTerms) -> float:
        """A PSNR-like figure: −10 log10 of the estimated MSE at the upper σ."""
        return -10.0 * math.log10(max(terms.mse(self.high), 1e-12))

    def candidates(self, fixed: float) -> tuple[float, ...]:
        """The interpolation weights to choose among: all of :data:`CANDIDATES` (``fixed``, the weight
        used without a scorer, plays no part here)."""
        return CANDIDATES


def select_interpolation(
    build: Callable[[float], nn.Module],
    images: Sequence[torch.Tensor],
    noise_sigma: float | tuple[float, float],
    model_sigma: float | None,
    seed: int,
    candidates: Sequence[float] = CANDIDATES,
    probes: int | None = None,
    clipping: bool = True,
) -> Selection:
    """The candidate weight whose network has the lowest SURE summed over ``images``.

    ``build(alpha)`` returns the network for interpolation weight ``alpha``. Every candidate is
    scored with the same probes (:class:`SureScorer`). A candidate counts by its worst-case
    improvement over the first candidate (the pre-trained network) across the σ range.
    """
    scorer = SureScorer(images, noise_sigma, model_sigma, seed, probes, clipping)
    return choose_interpolation(build, scorer, candidates)


def choose_interpolation(
    build: Callable[[float], nn.Module],
    scorer: SureScorer,
    candidates: Sequence[float] = CANDIDATES,
    known: Mapping[float, SureTerms] | None = None,
) -> Selection:
    """:func:`select_interpolation` with a given ``scorer``; ``known`` holds terms this scorer already
    computed for some candidates (their networks are not built or scored again)."""
    known = known or {}
    terms = {a: known[a] if a in known else scorer.terms(build(a)) for a in candidates}
    reference = terms[candidates[0]]
    worst_gain = {a: scorer.worst_gain(reference, terms[a]) for a in candidates}
    estimates = {a: scorer.decibels(terms[a]) for a in candidates}
    best = max(candidates, key=lambda a: (worst_gain[a], -abs(a - 0.5)))
    return Selection(best, estimates, worst_gain[best])


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
