"""Recorrupted-to-recorrupted pairs from the noisy input itself (Pang et al., CVPR 2021).

Restore-from-restored trains on (X̃ + N, X̃): the target is the network's own output, so the adapted
network learns to reproduce what X̃ gets wrong as well as what it gets right. For Gaussian noise of
level σ, the noisy image Y = X + n yields training pairs whose target is, on average, the clean image:

    input  Ŷ = Y + a·z,    target  Ȳ = Y − z / a,    z ~ N(0, σ²)

The errors of input and target, n + a·z and n − z/a, are uncorrelated (E[(n + a z)(n − z/a)] = σ² − σ²
= 0), so E‖f(Ŷ) − Ȳ‖² = E‖f(Ŷ) − X‖² + const: the gradient of a supervised loss against the unknown
clean image, for inputs a little noisier than Y (σ√(1 + a²)). On its own a single image's pairs
overfit its noise; added to the restore-from-restored loss they pull the adapted network towards X
where X̃ is biased. Measured (benchmarks/results/interpolation_sweep_*_r2r*): on gray 128² crops it
raises the best point of the adaptation path from +0.127 to +0.155 dB (Set12) and from +0.044 to
+0.056 dB (BSD68); on colour CBSD68 crops it does not help (+0.021 → +0.023) and makes large steps
worse. Off by default.

Because the pairs come from Y itself, the adapted weights depend on Y's noise, which the SURE
selection of :mod:`rfr_deploy.adaptation.sure` cannot see (it probes the network with the weights fixed): its
estimates then favour larger steps than the best one. SURE's estimate minus the true gain at α = 1,
mean over the images: Set12 +0.039 dB without the term, +0.109 with it; BSD68 +0.034 and +0.123;
CBSD68 +0.004 and +0.093. One smooth BSD68 crop lost 0.22 dB that way.

The level must be the one of Y's noise: an error in σ leaves a correlation σ² − σ̂² between input
and target noise, which pulls towards the identity (σ̂ < σ) or towards over-smoothing (σ̂ > σ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from rfr_deploy.adaptation.noisy_input import NoisyInputTerm
from rfr_deploy.adaptation.tiles import cut, own_pixels, window
from rfr_deploy.inference import Tile

RECORRUPTION_SCALE = 0.5
"""a: the input carries σ√(1 + a²) = 1.12 σ of noise, the target σ√(1 + 1/a²) = 2.24 σ."""


@dataclass
class Recorruption(NoisyInputTerm):
    """The recorrupted-to-recorrupted term of one run: the noisy images, their noise level, its weight."""

    scale: float = RECORRUPTION_SCALE

    def draw(self, y: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """The pair recorrupted from the noisy batch ``y``: input, target and the input's noise level per
        sample."""
        z = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype) * self.level
        sigma = torch.full(
            (y.shape[0],), self.level * math.sqrt(1.0 + self.scale**2), device=y.device, dtype=y.dtype
        )
        return {"input": y + self.scale * z, "target": y - z / self.scale, "sigma": sigma}

    def summed(self, model: nn.Module, drawn: dict[str, torch.Tensor], tile: Tile | None) -> torch.Tensor:
        """Weighted squared error of the model on the pair, over ``tile``'s pixels (squared whatever the
        main loss: the pair's target is unbiased for the squared error only)."""
        out = own_pixels(model(window(drawn["input"], tile), drawn["sigma"]), tile).float()
        return self.weight * ((out - cut(drawn["target"], tile)) ** 2).sum()
