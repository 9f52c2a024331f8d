"""Noise2Self: self-supervised training from noisy images only (Batson & Royer, ICML 2019).

A denoiser that never sees the value of a pixel when predicting it (J-invariance)
cannot learn the identity; with noise independent across pixels, minimising the
self-supervised loss ``‖f_J(y)_J − y_J‖`` over masked sets J then minimises the
supervised loss up to a constant. Each update masks a set J — a regular grid with
spacing ``grid`` at a random phase per sample (the paper's default, ``grid=4``), or
a random subset of the same density — replaces the masked pixels using only
unmasked ones, runs the network on that input and scores the output on the masked
pixels alone.

Replacement (``replace``): ``"interpolate"`` (the paper's choice) puts the mean of the
unmasked pixels of the 3×3 neighbourhood, weighted ½ diagonally; ``"neighbor"`` copies
a random unmasked pixel of the 3×3 neighbourhood (as in Noise2Void). Both are exactly
J-invariant for any mask. At inference the network is applied to the whole image, or,
as in the paper's J-invariant reconstruction, once per grid phase
(:meth:`Noise2SelfObjective.j_invariant_denoise`).

Clean images are never seen: :func:`rfr_deploy.jobs.pretrain.pretrain` synthesises the
noisy inputs from clean patches and hands only those to the objective.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

MaskKind = Literal["grid", "random"]
Replacement = Literal["interpolate", "neighbor"]

_WEIGHTS = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]])


class Noise2SelfObjective:
    """``objective(model, noisy, sigma, generator) -> loss`` for ``rfr-deploy pretrain --objective noise2self``."""

    def __init__(
        self,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.mse_loss,
        grid: int = 4,
        mask: MaskKind = "grid",
        replace: Replacement = "interpolate",
    ):
        if grid < 2:
            raise ValueError("grid must be at least 2 (one masked pixel per grid×grid cell)")
        if mask not in ("grid", "random"):
            raise ValueError(f"mask must be 'grid' or 'random', not {mask!r}")
        if replace not in ("interpolate", "neighbor"):
            raise ValueError(f"replace must be 'interpolate' or 'neighbor', not {replace!r}")
        self.loss_fn, self.grid, self.mask, self.replace = loss_fn, grid, mask, replace

    def __repr__(self) -> str:
        return f"Noise2SelfObjective(grid={self.grid}, mask={self.mask!r}, replace={self.replace!r})"

    def __call__(
        self,
        model,
        noisy: torch.Tensor,
        sigma: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        mask = self.make_mask(noisy, generator)
        out = model(self.masked_input(noisy, mask, generator), sigma)
        full = mask.expand_as(noisy)
        # Score the masked pixels only: the loss of the masked difference, rescaled from all
        # pixels to the masked ones (exact for element-wise mean losses such as L1 and MSE).
        loss = self.loss_fn(out * full, noisy * full)
        return loss * (full.numel() / full.sum().clamp_min(1.0))

    def make_mask(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``N×1×H×W`` mask (1 = masked) for the batch ``x``."""
        n, _, h, w = x.shape
        g = self.grid
        if self.mask == "random":
            u = torch.rand((n, 1, h, w), device=x.device, generator=generator)
            return (u < 1.0 / g**2).to(x.dtype)
        phase = torch.randint(g * g, (n, 1, 1, 1), device=x.device, generator=generator)
        rows = (torch.arange(h, device=x.device) % g).view(1, 1, h, 1)
        cols = (torch.arange(w, device=x.device) % g).view(1, 1, 1, w)
        return ((rows == phase // g) & (cols == phase % g)).to(x.dtype)

    def masked_input(
        self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``x`` with its masked pixels replaced from unmasked neighbours only."""
        keep = 1.0 - mask
        if self.replace == "interpolate":
            c = x.shape[1]
            weights = _WEIGHTS.to(device=x.device, dtype=x.dtype).expand(c, 1, 3, 3)
            total = F.conv2d(F.pad(x * keep, (1, 1, 1, 1), mode="reflect"), weights, groups=c)
            norm = F.conv2d(F.pad(keep, (1, 1, 1, 1), mode="reflect"), weights[:1])
            fill = total / norm.clamp_min(1e-6)
        else:
            fill = _random_unmasked_neighbour(x, keep, generator)
        return x * keep + fill * mask

    @torch.no_grad()
    def j_invariant_denoise(self, model, noisy: torch.Tensor, sigma=None) -> torch.Tensor:
        """The paper's J-invariant reconstruction: each pixel from the pass in which it was masked
        (``grid²`` passes over the whole grid of phases). Shows what the training objective
        optimises; networks trained long enough also denoise well when applied directly."""
        n, _, h, w = noisy.shape
        out = torch.zeros_like(noisy)
        rows = (torch.arange(h, device=noisy.device) % self.grid).view(1, 1, h, 1)
        cols = (torch.arange(w, device=noisy.device) % self.grid).view(1, 1, 1, w)
        for phase in range(self.grid**2):
            mask = ((rows == phase // self.grid) & (cols == phase % self.grid)).to(noisy.dtype)
            out += model(self.masked_input(noisy, mask.expand(n, 1, h, w)), sigma) * mask
        return out


def _random_unmasked_neighbour(x: torch.Tensor, keep: torch.Tensor, generator) -> torch.Tensor:
    """Per pixel, the value of one of its 8 neighbours drawn uniformly among the unmasked ones."""
    n, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    kp = F.pad(keep, (1, 1, 1, 1), mode="reflect")
    offsets = [(dy, dx) for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    values = torch.stack([xp[..., dy : dy + h, dx : dx + w] for dy, dx in offsets], dim=1)  # N×8×C×H×W
    usable = torch.stack([kp[..., dy : dy + h, dx : dx + w] for dy, dx in offsets], dim=1)  # N×8×1×H×W
    score = torch.rand(usable.shape, device=x.device, generator=generator, dtype=x.dtype) + usable
    choice = score.argmax(dim=1, keepdim=True)  # an unmasked neighbour wherever one exists
    picked = values.gather(1, choice.expand(n, 1, c, h, w)).squeeze(1)
    return picked * usable.amax(dim=1)  # 0 where all eight neighbours are masked (probability ≈ grid⁻¹⁶)
