"""Additive white Gaussian noise, of a known, estimated or random level (σ in [0, 1] units).

The noise models follow :class:`rfr_deploy.noise.base.NoiseModel`: ``forward(x, generator)`` returns
the noisy batch and the per-sample σ, drawn only from the explicit ``torch.Generator``. The level
estimator lives in :mod:`rfr_deploy.noise.level`. Registered as the noise model ``"gaussian"``.
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from rfr_deploy.noise.base import GaussianLevel, check_sigma
from rfr_deploy.noise.registry import NoiseSettings, register_noise
from rfr_deploy.units import GREY_LEVELS


class GaussianNoise(nn.Module):
    """Additive white Gaussian noise of a given level ``sigma`` ([0, 1] units: 25/255 for 25 grey levels).

    ``estimated`` marks a level estimated from the image rather than known (the selection then allows
    for the estimate's error, see :mod:`rfr_deploy.adaptation.scoring`), ``tolerance`` that estimate's
    relative error where it is known to be small (:attr:`~rfr_deploy.noise.base.GaussianLevel.tolerance`).
    """

    def __init__(self, sigma: float, estimated: bool = False, tolerance: float | None = None):
        super().__init__()
        self.sigma = check_sigma(sigma)
        self.estimated = estimated or tolerance is not None
        self.tolerance = tolerance

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.full((x.shape[0],), self.sigma, device=x.device, dtype=x.dtype)
        return x + s.view(-1, 1, 1, 1) * _randn_like(x, generator), s

    def gaussian_level(self) -> GaussianLevel:
        return GaussianLevel(self.sigma, self.sigma, estimated=self.estimated, tolerance=self.tolerance)

    def extra_repr(self) -> str:
        estimated = f", estimated ±{self.tolerance:.0%}" if self.tolerance is not None else ", estimated"
        return f"sigma={self.sigma:g}" + (estimated if self.estimated else "")


class UniformSigmaGaussianNoise(nn.Module):
    """Gaussian noise whose level is drawn per sample, uniformly in ``[low, high]`` ([0, 1] units).

    The paper's choice when σ is unknown: cover the range the blind network was trained on
    (σ ∈ [0, 50/255] by default).
    """

    def __init__(self, low: float = 0.0, high: float = 50 / 255):
        super().__init__()
        low, high = check_sigma(low, "low"), check_sigma(high, "high")
        if not low <= high:
            raise ValueError(f"need 0 <= low <= high, got [{low}, {high}]")
        self.low, self.high = low, high

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator)
        # Scaled on the grey-level range and then by 1/255, in the batch's dtype: the levels drawn are
        # the same floats as when the range was given in grey levels (the published results' draws).
        low, high = self.low * GREY_LEVELS, self.high * GREY_LEVELS
        s = (low + (high - low) * u) / GREY_LEVELS
        return x + s.view(-1, 1, 1, 1) * _randn_like(x, generator), s

    def gaussian_level(self) -> GaussianLevel:
        return GaussianLevel(self.low, self.high, random=True)

    def extra_repr(self) -> str:
        return f"low={self.low:g}, high={self.high:g}"


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


def build_gaussian(settings: NoiseSettings) -> nn.Module:
    """Known σ; else (unknown σ) the estimated level, or random levels in ``settings.sigma_range``."""
    if settings.sigma is not None:
        return GaussianNoise(settings.sigma)
    if settings.unknown_sigma == "uniform":
        return UniformSigmaGaussianNoise(*settings.sigma_range)
    return GaussianNoise(statistics.median(settings.estimates), estimated=True, tolerance=settings.tolerance)


register_noise("gaussian", build_gaussian)
