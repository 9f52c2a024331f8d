"""Synthetic noise models (the noise-level estimator lives in :mod:`rfr_deploy.noise.level`).

Every noise model is an ``nn.Module`` whose ``forward(x, generator)`` returns the
noisy batch and the per-sample noise level σ (in [0, 1] units, i.e. σ/255 for
8-bit levels) that a noise-map network should be told. Randomness comes only from
the explicit ``torch.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import math
import statistics
from typing import Literal

import torch
from torch import nn


class GaussianNoise(nn.Module):
    """Additive white Gaussian noise of a given level ``sigma`` (8-bit grey levels).

    ``estimated`` marks a level estimated from the image rather than known (SURE then allows for
    the estimate's error, see :mod:`rfr_deploy.adaptation.sure`).
    """

    def __init__(self, sigma: float, estimated: bool = False):
        super().__init__()
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"sigma must be a finite non-negative number, got {sigma}")
        self.sigma = float(sigma)
        self.estimated = estimated

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.full((x.shape[0],), self.sigma / 255.0, device=x.device, dtype=x.dtype)
        return x + s.view(-1, 1, 1, 1) * _randn_like(x, generator), s

    def extra_repr(self) -> str:
        return f"sigma={self.sigma:g}" + (", estimated" if self.estimated else "")


class UniformSigmaGaussianNoise(nn.Module):
    """Gaussian noise whose level is drawn per sample, uniformly in ``[low, high]`` grey levels.

    The paper's choice when σ is unknown: cover the range the blind network was trained on.
    """

    def __init__(self, low: float = 0.0, high: float = 50.0):
        super().__init__()
        if not (0 <= low <= high):
            raise ValueError(f"need 0 <= low <= high, got [{low}, {high}]")
        self.low, self.high = float(low), float(high)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        u = torch.rand(x.shape[0], device=x.device, dtype=x.dtype, generator=generator)
        s = (self.low + (self.high - self.low) * u) / 255.0
        return x + s.view(-1, 1, 1, 1) * _randn_like(x, generator), s

    def extra_repr(self) -> str:
        return f"low={self.low:g}, high={self.high:g}"


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)


class QuantizedNoise(nn.Module):
    """Wraps a noise model so its output looks like an integer image file: clipped to [0, 1]
    and rounded to the ``bit_depth`` grid.

    Real noisy photos arrive clipped and quantized; adapting on unclipped noise teaches the
    network a distribution it never sees (dark and bright regions differ most).
    """

    def __init__(self, inner: nn.Module, bit_depth: int = 8):
        super().__init__()
        self.inner = inner
        self.levels = float(2**bit_depth - 1)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, sigma = self.inner(x, generator)
        return torch.round(noisy.clamp(0.0, 1.0) * self.levels) / self.levels, sigma

    def extra_repr(self) -> str:
        return f"levels={self.levels:g}"


def base_noise(noise: nn.Module) -> nn.Module:
    """The noise model inside a :class:`QuantizedNoise` (or ``noise`` itself)."""
    return noise.inner if isinstance(noise, QuantizedNoise) else noise


def is_gaussian(noise: nn.Module) -> bool:
    """Whether ``noise`` draws white Gaussian noise (known, estimated or uniform σ; quantized or not)."""
    return isinstance(base_noise(noise), GaussianNoise | UniformSigmaGaussianNoise)


NoiseChoice = Literal["auto", "gaussian", "camera"]
UnknownSigma = Literal["estimate", "uniform"]


def resolve_noise_kind(choice: NoiseChoice, trained_on: str) -> Literal["gaussian", "camera"]:
    """The adaptation noise for ``choice``: 'auto' follows what the weights were trained on.

    Weights trained with CBDNet's in-camera model (``WeightsMeta.noise == 'camera'``) adapt with it;
    everything else (Gaussian, or self-supervised on Gaussian noise) adapts with Gaussian noise.
    """
    if choice == "auto":
        return "camera" if trained_on == "camera" else "gaussian"
    return choice


def build_noise(
    kind: NoiseChoice,
    sigma: float | None,
    unknown_sigma: UnknownSigma,
    sigma_estimates: list[float],
    sigma_range: tuple[float, float] = (0.0, 50.0),
    bit_depth: int | None = None,
) -> nn.Module:
    """The synthetic noise adaptation draws from: camera model, known σ, estimated σ or uniform σ.

    The camera model aims at the known or estimated level (``unknown_sigma='estimate'``) or keeps the
    random levels of CBDNet's training (``'uniform'``). With ``bit_depth`` the synthetic noisy images are
    clipped and quantized like the input file.
    """
    if kind not in ("gaussian", "camera"):
        raise ValueError(f"build_noise needs a resolved noise kind, got {kind!r} (see resolve_noise_kind)")
    if kind == "camera":
        from rfr_deploy.noise.camera import CameraNoise

        level = (
            sigma if sigma is not None else statistics.median(sigma_estimates) if sigma_estimates else None
        )
        random_levels = sigma is None and unknown_sigma == "uniform"
        noise: nn.Module = CameraNoise(level=None if random_levels or not level else level / 255.0)
    elif sigma is not None:
        noise = GaussianNoise(sigma)
    elif unknown_sigma == "uniform":
        noise = UniformSigmaGaussianNoise(*sigma_range)
    else:
        noise = GaussianNoise(statistics.median(sigma_estimates), estimated=True)
    return QuantizedNoise(noise, bit_depth) if bit_depth else noise
