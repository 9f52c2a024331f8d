"""Synthetic noise correlated between the channels of a colour image like the noise the image holds.

Noise that is nearly one value per pixel added to all three channels (monochromatic noise, film grain, a
sensor's noise after the camera smoothed its chroma: :mod:`rfr_deploy.noise.channels`) is what a colour
network trained on white noise leaves in place. Adapted on white synthetic noise, it is taught to remove
noise the image does not have: on six 128² crops with noise of σ = 25 per channel at a correlation of
0.5 the adapted packaged DnCNN reached 25.05 dB against 24.79 pre-trained. Drawn with the image's
correlation, the synthetic noise teaches it to remove the noise the image has: 26.93 (benchmarks/README.md,
"A colour network on shared noise: adapt on noise shared like the image's" and "Shared noise: drawn at the
correlation the chroma share implies, not lowered by the bias").

:class:`ChannelCorrelatedNoise` wraps a white Gaussian model: each value is √(1 − ρ) times the white
draw plus √ρ times one draw per pixel shared by the channels, both of the wrapped model's level, so
each channel holds noise of that level and the channels are correlated by ρ. It is no longer white, so
it answers :meth:`gaussian_level` with None (SURE with white probes, and the terms on the noisy input,
do not apply) and :meth:`source_level` with the wrapped model's level (the budget, a noise-map network's
level).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rfr_deploy.noise.base import GaussianLevel, gaussian_level_of


class ChannelCorrelatedNoise(nn.Module):
    """``inner``'s white Gaussian noise made correlated by ``rho`` between the channels, each channel
    keeping its level (see the module's docstring)."""

    def __init__(self, inner: nn.Module, rho: float):
        super().__init__()
        if gaussian_level_of(inner) is None:
            raise ValueError(f"channel-correlated noise needs a white Gaussian model to wrap, got {inner}")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"a correlation between the channels must be in [0, 1], got {rho}")
        self.inner, self.rho = inner, float(rho)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        noisy, sigma = self.inner(x, generator)
        shared = torch.randn(
            (x.shape[0], 1, *x.shape[2:]), device=x.device, dtype=x.dtype, generator=generator
        )
        return x + mix_channels(noisy - x, sigma.to(x.dtype).view(-1, 1, 1, 1) * shared, self.rho), sigma

    def gaussian_level(self) -> GaussianLevel | None:
        """None: the noise is no longer white."""
        return None

    def source_level(self) -> GaussianLevel | None:
        """The level each channel holds (the wrapped model's)."""
        return gaussian_level_of(self.inner)

    def extra_repr(self) -> str:
        return f"rho={self.rho:.3g}"


def mix_channels(own: torch.Tensor, shared: torch.Tensor, rho: float) -> torch.Tensor:
    """√(1 − ρ)·``own`` + √ρ·``shared``: independent draws of one level per value (N×C×H×W) and per pixel
    (N×1×H×W), mixed so that each channel keeps that level and the channels are correlated by ``rho``."""
    return math.sqrt(1.0 - rho) * own + math.sqrt(rho) * shared


def channel_correlation_of(noise: nn.Module) -> float | None:
    """The correlation between the channels of the :class:`ChannelCorrelatedNoise` within ``noise``
    (e.g. under :class:`~rfr_deploy.noise.base.QuantizedNoise`); None where there is none."""
    found = next((m for m in noise.modules() if isinstance(m, ChannelCorrelatedNoise)), None)
    return None if found is None else found.rho
