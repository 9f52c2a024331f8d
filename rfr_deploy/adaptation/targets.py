"""What the updates train on: the pseudo-clean targets X̃ = f(Y), the side of the training patches and
of the tiles an update is computed in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rfr_deploy.adaptation.config import LARGE_IMAGE_PATCH, WHOLE_IMAGE_PIXELS, AdaptConfig
from rfr_deploy.adaptation.plan import SMALLEST_PATCH
from rfr_deploy.adaptation.scoring_windows import alignment
from rfr_deploy.adaptation.tiles import tile_margin, tile_side
from rfr_deploy.inference import denoise
from rfr_deploy.memory import available_bytes, bytes_per_pixel, side_that_fits

TRAINING_MEMORY_FRACTION = 0.5
"""Share of the free memory a training step may use before it is computed in tiles."""


def pseudo_clean(model, noisy: torch.Tensor, sigma: float | None, ensemble: bool) -> torch.Tensor:
    """X̃ = f(Y), optionally as the ×8 dihedral self-ensemble."""
    return denoise(model, noisy, sigma=sigma, ensemble=ensemble).detach()


def training_targets(
    model,
    images: list[torch.Tensor],
    sigma: float | None,
    ensemble: bool,
    given: Sequence[torch.Tensor] | None,
) -> list[torch.Tensor]:
    """The pseudo-clean targets X̃ = f(Y), or copies of the ``given`` targets (``refresh_every``
    overwrites them in place)."""
    if given is None:
        return [pseudo_clean(model, y, sigma, ensemble) for y in images]
    if len(given) != len(images) or any(t.shape != y.shape for t, y in zip(given, images, strict=False)):
        raise ValueError("targets: one tensor per noisy image, of the same shape")
    return [t.detach().to(device=y.device, dtype=y.dtype).clone() for t, y in zip(given, images, strict=True)]


@dataclass(frozen=True)
class TrainingLayout:
    """What one update trains on."""

    patch: int | None
    """Side of the square training patches; None: whole images."""
    tile: int | None = None
    """Side of the tiles an update's batch is computed in (:mod:`~rfr_deploy.adaptation.tiles`) where it
    would not fit in memory in one pass; None: one pass."""


def training_layout(
    model: nn.Module, targets: list[torch.Tensor], config: AdaptConfig, passes: int
) -> TrainingLayout:
    """The patch side: ``config.patch``; where None, None (whole images) for images of at most
    :data:`WHOLE_IMAGE_PIXELS`, :data:`LARGE_IMAGE_PATCH` for larger ones; never more than the smallest
    target's side (whole images where that is under :data:`SMALLEST_PATCH`). Where a training step
    (``passes`` forward/backward passes of ``config.batch``) would not fit in memory, the update runs in
    tiles that do: the same gradient for networks of a bounded receptive field, so the memory free
    decides the time, not the network trained."""
    largest = max(t.shape[-2] * t.shape[-1] for t in targets)
    patch = config.patch or (LARGE_IMAGE_PATCH if largest > WHOLE_IMAGE_PIXELS else None)
    if patch is not None:
        patch = min(patch, *(min(t.shape[-2:]) for t in targets))
        patch = patch if patch >= SMALLEST_PATCH else None  # an image smaller than any patch: whole images
    per_pixel = bytes_per_pixel(model, targets[0].shape[1], training=True) * config.batch * passes
    budget = TRAINING_MEMORY_FRACTION * available_bytes(targets[0].device)
    fits = side_that_fits(per_pixel, patch * patch if patch else largest, budget, multiple=8, smallest=32)
    return TrainingLayout(
        patch, None if fits is None else tile_side(fits, alignment(model), tile_margin(model))
    )
