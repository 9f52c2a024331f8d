"""Loss terms computed on the noisy input itself, added to the restore-from-restored loss.

Restore-from-restored trains on (X̃ + N, X̃): its target is the network's own output. For Gaussian
noise of one known (or estimated) level σ the noisy image Y also gives losses whose expectation is
the error against the clean image: recorrupted pairs (:mod:`rfr_deploy.adaptation.recorrupt`) and
Stein's unbiased risk estimate (:mod:`rfr_deploy.adaptation.sure_loss`). Both cut their batch of Y
exactly like the pseudo-clean batch (same patches, same dihedral transform). Both are sums over pixels
of the network's outputs on inputs drawn once per update (:meth:`NoisyInputTerm.draw`), so an update
computed in tiles (:mod:`rfr_deploy.adaptation.tiles`) adds each tile's share (:meth:`NoisyInputTerm.summed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from rfr_deploy.adaptation.plan import clean_batch
from rfr_deploy.inference import Tile
from rfr_deploy.noise.base import gaussian_level_of


@dataclass
class NoisyInputTerm:
    """A weighted loss term on the noisy images of one run, whose noise is Gaussian of level ``level``."""

    images: list[torch.Tensor]
    level: float
    """σ of the noise in ``images``, [0, 1] units."""
    weight: float

    passes: ClassVar[int] = 1
    """Forward/backward passes of the network the term adds to an update."""

    def batch(
        self, index: int, k: int, offsets: list[tuple[int, int]] | None, batch: int, patch: int | None
    ) -> torch.Tensor:
        """The noisy training batch cut and transformed exactly like the pseudo-clean one."""
        return clean_batch(self.images[index], k, offsets, batch, patch)

    def draw(self, y: torch.Tensor, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """One update's random draws on the noisy batch ``y``, over the whole batch (from ``generator``)."""
        raise NotImplementedError

    def summed(self, model: nn.Module, drawn: dict[str, torch.Tensor], tile: Tile | None) -> torch.Tensor:
        """The weighted term summed over the pixels of ``tile`` (None: the whole batch), the network run
        on the tile's window (:func:`~rfr_deploy.adaptation.tiles.window`)."""
        raise NotImplementedError

    @property
    def constant(self) -> float:
        """The part of the term that does not depend on the network (per pixel)."""
        return 0.0

    def loss(self, model: nn.Module, y: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The weighted term on the noisy batch ``y`` (its random draws from ``generator``), in one pass."""
        return self.summed(model, self.draw(y, generator), None) / y.numel() + self.constant


def gaussian_input_level(noise: nn.Module) -> float | None:
    """σ ([0, 1] units) of the noise in the input as the terms see it: the level of Gaussian noise,
    known or estimated; None for every other noise model (random σ, camera noise), where the noise
    of the input is not white Gaussian of one known level."""
    declared = gaussian_level_of(noise)
    if declared is not None and declared.sigma is not None and declared.sigma > 0:
        return declared.sigma
    return None
