"""Stein's unbiased risk estimate of the network on the noisy input, as a training loss (GainTuning,
Mohan et al., NeurIPS 2021; Soltanayev & Chun, NeurIPS 2018).

For Y = X + n, n ~ N(0, σ²) white, and a denoiser f that is differentiable in its input,

    SURE(f, Y) = ‖f(Y) − Y‖² / N − σ² + 2σ² · div f(Y) / N

has the expectation of ‖f(Y) − X‖² / N: the supervised loss against the unknown clean image. The
divergence is estimated by one Monte-Carlo probe b ~ N(0, 1) per update, b·(f(Y + εb) − f(Y)) / ε, so
the term costs two forward/backward passes. The finite difference needs fp32: it is computed outside
any autocast region (a bf16 output's rounding, ~4e-3 relative, is larger than ε·∂f).

Like the recorrupted term, the loss depends on Y's own noise: the SURE scores that choose the
checkpoint and the interpolation (:mod:`rfr_deploy.adaptation.sure`) then see a network fitted to the
quantity they estimate, and their estimates favour the adapted network more than they should.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from rfr_deploy.adaptation.noisy_input import NoisyInputTerm
from rfr_deploy.adaptation.tiles import cut, own_pixels, window
from rfr_deploy.inference import Tile

SURE_LOSS_EPSILON = 1e-3
"""ε of the finite-difference divergence, [0, 1] units (the value of the SURE selection)."""


@dataclass
class SureLoss(NoisyInputTerm):
    """The SURE term of one run: the noisy images, their noise level, its weight."""

    epsilon: float = SURE_LOSS_EPSILON
    passes: ClassVar[int] = 2

    def draw(self, y: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The noisy batch ``y``, its copy shifted along one probe b ~ N(0, 1), and the level per sample."""
        sigma = torch.full((y.shape[0],), self.level, device=y.device, dtype=y.dtype)
        probe = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        return {"y": y, "probe": probe, "shifted": y + self.epsilon * probe, "sigma": sigma}

    def summed(self, model: nn.Module, drawn: dict[str, torch.Tensor], tile: Tile | None) -> torch.Tensor:
        """The weighted Monte-Carlo SURE of ``model`` summed over ``tile``'s pixels, without its constant
        −σ² per pixel (:attr:`constant`): ‖f(Y) − Y‖² + 2σ² b·(f(Y + εb) − f(Y)) / ε."""
        sigma = drawn["sigma"]
        with torch.autocast(sigma.device.type, enabled=False):
            out = own_pixels(model(window(drawn["y"], tile), sigma), tile).float()
            shifted = own_pixels(model(window(drawn["shifted"], tile), sigma), tile).float()
        divergence = (cut(drawn["probe"], tile) * (shifted - out)).sum() / self.epsilon
        return self.weight * (((out - cut(drawn["y"], tile)) ** 2).sum() + 2.0 * self.level**2 * divergence)

    @property
    def constant(self) -> float:
        return -self.weight * self.level**2
