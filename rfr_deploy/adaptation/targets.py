"""What the updates train on: the pseudo-clean targets X̃ = f(Y) and the side of the training patches."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from rfr_deploy.adaptation.config import LARGE_IMAGE_PATCH, WHOLE_IMAGE_PIXELS, AdaptConfig
from rfr_deploy.inference import denoise
from rfr_deploy.memory import available_bytes, bytes_per_pixel, side_that_fits

TRAINING_MEMORY_FRACTION = 0.5
"""Share of the free memory a training step may use before it trains on patches."""


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


def training_patch(
    model: nn.Module, targets: list[torch.Tensor], config: AdaptConfig, passes: int
) -> int | None:
    """The side of the square training patches: ``config.patch``; where None, None (whole images) for
    images of at most :data:`WHOLE_IMAGE_PIXELS`, the side of that many pixels for larger ones, and in
    either case a smaller side where a training step (``passes`` forward/backward passes of
    ``config.batch``) would not fit in memory. Never more than the smallest target's side."""
    patch = config.patch or _default_patch(model, targets, config.batch * passes)
    if patch is not None:
        patch = min(patch, *(min(t.shape[-2:]) for t in targets))
    return patch


def _default_patch(model, targets: list[torch.Tensor], batch: int) -> int | None:
    largest = max(t.shape[-2] * t.shape[-1] for t in targets)
    capped = LARGE_IMAGE_PATCH if largest > WHOLE_IMAGE_PIXELS else None
    per_pixel = bytes_per_pixel(model, targets[0].shape[1], training=True) * batch
    budget = TRAINING_MEMORY_FRACTION * available_bytes(targets[0].device)
    pixels = largest if capped is None else capped * capped
    side = side_that_fits(per_pixel, pixels, budget, multiple=8, smallest=32)
    if side is not None:
        warnings.warn(
            f"training on {side}² patches, what the memory free now allows for this network (the default: "
            f"whole images up to {WHOLE_IMAGE_PIXELS:,} pixels, {LARGE_IMAGE_PATCH}² patches beyond), so the result depends "
            "on the memory free; --patch makes it reproducible",
            stacklevel=4,
        )
    return side or capped
