"""Helpers shared by the tests of SURE and of the level a network implies."""

import torch
from torch import nn

from rfr_deploy.adaptation.scoring import assumed_level


class Blur(nn.Module):
    """A linear denoiser: (1 − w)·y + w·(3×3 box blur of y), called like the zoo's denoisers."""

    def __init__(self, weight: float):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))

    def forward(self, x, sigma=None):
        blurred = nn.functional.avg_pool2d(nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        return torch.lerp(x, blurred, self.weight)


def gaussian_level(noise, images):
    """The Gaussian level the scorer assumes for ``noise`` on ``images`` (None: no level)."""
    found = assumed_level(noise, images)
    return found[0] if found is not None else None


def noisy_copy(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """``clean`` plus white Gaussian noise of level ``sigma`` drawn from a generator seeded ``seed``."""
    return clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
