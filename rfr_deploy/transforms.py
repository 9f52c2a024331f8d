"""The eight dihedral transforms (rotations by 90° and flips) of an image tensor."""

from __future__ import annotations

import torch

DIHEDRAL = 8


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply transform ``k`` ∈ [0, 8): rotate by ``k % 4`` quarter turns, then flip left-right if ``k ≥ 4``."""
    y = torch.rot90(x, k % 4, dims=(-2, -1)) if k % 4 else x
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def dihedral_inverse(x: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral` with the same ``k``."""
    y = torch.flip(x, dims=(-1,)) if k >= 4 else x
    return torch.rot90(y, -(k % 4), dims=(-2, -1)) if k % 4 else y
