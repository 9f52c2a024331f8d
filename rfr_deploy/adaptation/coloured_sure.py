"""SURE for noise that is not white: probes coloured like the pre-trained network's residual.

Real photographs carry noise that demosaicking and the camera's processing made spatially and
across-channel correlated, so Gaussian SURE at a white-noise estimate of its level misjudges it (the
estimator reads such noise 3–17× too low and SURE then prefers networks that keep it;
benchmarks/results/real_guard_*). For noise of covariance Σ,

    E‖h(Y) − X‖² = E[‖h(Y) − Y‖² − tr Σ + 2 tr(Σ J_h)],     tr(Σ J_h) = E_u[uᵀ J_h u],  u ~ N(0, Σ),

so SURE holds with probes drawn with the noise's own covariance (the Monte-Carlo divergence
uᵀ(h(Y + εu) − h(Y))/ε). The pre-trained network's residual r = Y − f(Y) is the best picture of the
noise there is without a clean reference; circular convolution of r with white noise w,
u = (r ⊛ w)/√(HW), is a Gaussian field with r's own (circular) auto- and cross-channel covariance.
The probes are kept at unit mean square with the residual's RMS as their level, the form
:class:`~rfr_deploy.adaptation.sure.SureScorer` takes (SURE with level s and unit probes z is
‖h − Y‖² − s² + 2 s² zᵀJz: the coloured formula above).

What the residual holds of the image itself (detail the network removed) makes the level and the
divergence term a little larger. On the 37 real pairs of ``shared/data/real`` it still overrated the
adapted network on Nam's photographs by 0.3–0.8 dB, so it is trusted only to step *back*:
:class:`ColouredSureScorer` chooses among the weights up to the fixed interpolation, never beyond
(benchmarks/README.md, "A guard for camera noise").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rfr_deploy.adaptation.sure import CANDIDATES, SureScorer, probe_count, unsaturated

_COLOURED_STREAM = 0xC01_0BED
"""Offset of the coloured probes' seed (independent of the white probes' stream)."""


def residual_probes(
    noisy: torch.Tensor, pseudo_clean: torch.Tensor, count: int, generator: torch.Generator
) -> tuple[float, list[torch.Tensor]]:
    """The residual's RMS ([0, 1] units) and ``count`` unit-mean-square probes coloured like it.

    ``noisy`` and ``pseudo_clean`` are 1×C×H×W; one white field per probe is shared by the channels,
    so the probes keep the residual's correlation between channels. Saturated values (0 or 1 in
    the noisy file) carry no noise and are left out of the residual.
    """
    residual = torch.where(unsaturated(noisy), noisy - pseudo_clean, 0.0).double()
    residual = residual - residual.mean(dim=(-2, -1), keepdim=True)
    height, width = residual.shape[-2:]
    level = float(residual.pow(2).mean().sqrt())
    if level == 0.0:
        return 0.0, []
    spectrum = torch.fft.rfft2(residual)
    probes = []
    for _ in range(count):
        white = torch.randn((height, width), generator=generator, dtype=torch.float64)
        field = torch.fft.irfft2(spectrum * torch.fft.rfft2(white), s=(height, width))
        probes.append((field / field.pow(2).mean().sqrt()).to(noisy.dtype))
    return level, probes


def draw_residual_probes(
    images: Sequence[torch.Tensor], pseudo_clean: Sequence[torch.Tensor], seed: int, count: int
) -> tuple[float, list[list[torch.Tensor]]]:
    """:func:`residual_probes` for a set of images: the RMS over all of them and the probes of each.

    Reproducible from ``seed`` (on the CPU generator, then moved to each image's device).
    """
    generator = torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + _COLOURED_STREAM) % 2**63)
    levels, draws = [], []
    for y, x in zip(images, pseudo_clean, strict=True):
        level, probes = residual_probes(y.cpu(), x.cpu(), count, generator)
        levels.append((level**2, y.numel()))
        draws.append([b.to(y.device) for b in probes])
    total = sum(n for _, n in levels)
    return math.sqrt(sum(v * n for v, n in levels) / total), draws


class ColouredSureScorer(SureScorer):
    """SURE with probes coloured like the pre-trained residual (see the module docstring), at the
    residual's RMS: the guard for noise aimed at that residual (camera noise at an unknown level,
    :func:`~rfr_deploy.noise.base.aims_at_residual`). Where the pre-trained network leaves the noise in
    (Gaussian weights on real photographs) the residual is no picture of it, and the guard would keep
    the pre-trained network.

    It chooses the interpolation only up to the fixed one (:meth:`candidates`) and does not choose
    checkpoints (:attr:`scores_checkpoints`). :meth:`create` returns None where the residual is zero
    (nothing to colour the probes with)."""

    criterion = "coloured-sure"
    scores_checkpoints = False

    @classmethod
    def create(
        cls,
        images: Sequence[torch.Tensor],
        pseudo_clean: Sequence[torch.Tensor],
        model_sigma: float | None,
        seed: int,
        regions: Sequence[torch.Tensor | None] | None = None,
    ) -> ColouredSureScorer | None:
        level, draws = draw_residual_probes(images, pseudo_clean, seed, probe_count(images))
        if any(not probes for probes in draws):
            return None
        return cls(images, level, model_sigma, seed, draws=draws, regions=regions)

    def candidates(self, fixed: float) -> tuple[float, ...]:
        """0 (the pre-trained network) and the steps of :data:`~rfr_deploy.adaptation.sure.CANDIDATES`
        up to the ``fixed`` interpolation, which is always one of them."""
        return tuple(sorted({a for a in CANDIDATES if a < fixed} | {0.0, fixed}))
