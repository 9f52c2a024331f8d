"""Running a denoiser on whole images: tensors in and out, self-ensemble, tiling."""

from __future__ import annotations

import math

import numpy as np
import torch

from rfr_deploy.memory import available_bytes, bytes_per_pixel
from rfr_deploy.transforms import DIHEDRAL, dihedral, dihedral_inverse

MEMORY_FRACTION = 0.5
"""Share of the free memory a single forward pass may use before the image is tiled."""


def to_tensor(pixels: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """``H×W×C`` float array → ``1×C×H×W`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None].to(device)


def to_pixels(tensor: torch.Tensor) -> np.ndarray:
    """``1×C×H×W`` (or ``C×H×W``) tensor → ``H×W×C`` float32 array."""
    t = tensor.detach().float().cpu()
    if t.ndim == 4:
        t = t[0]
    return t.permute(1, 2, 0).contiguous().numpy()


@torch.no_grad()
def denoise(
    model,
    noisy: torch.Tensor,
    sigma: float | None = None,
    ensemble: bool = False,
    tile: int | None = None,
    overlap: int = 32,
) -> torch.Tensor:
    """Clean estimate of ``noisy`` (``N×C×H×W``). ``sigma`` in [0, 1] units for noise-map models.

    ``ensemble`` averages the 8 dihedral transforms (×8 compute). ``tile`` forces
    tiles of that size; by default the image is tiled only when one pass would
    not fit in memory.
    """
    was_training = model.training
    model.eval()
    try:
        if tile is None:
            tile = auto_tile(model, noisy)
        if ensemble:
            return dihedral_mean(lambda x: _run(model, x, sigma, tile, overlap), noisy)
        return _run(model, noisy, sigma, tile, overlap)
    finally:
        model.train(was_training)


def dihedral_mean(run, noisy: torch.Tensor) -> torch.Tensor:
    """Mean of ``run`` over the eight dihedral transforms of ``noisy``, each result turned back."""
    out = torch.zeros_like(noisy)
    for k in range(DIHEDRAL):
        out += dihedral_inverse(run(dihedral(noisy, k)), k)
    return out / DIHEDRAL


def auto_tile(model, noisy: torch.Tensor) -> int | None:
    """Tile size that keeps a forward pass within :data:`MEMORY_FRACTION` of free memory, or None."""
    h, w = noisy.shape[-2:]
    per_pixel = bytes_per_pixel(model, noisy.shape[1], training=False) * noisy.shape[0]
    budget = MEMORY_FRACTION * available_bytes(noisy.device)
    if per_pixel * h * w <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel))
    return max(128, side - side % 32)


def _run(model, x: torch.Tensor, sigma: float | None, tile: int | None, overlap: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return model(x, sigma)
    if tile <= 2 * overlap:
        raise ValueError(f"tile ({tile}) must exceed twice the overlap ({overlap})")
    out = torch.empty_like(x)
    step = tile - 2 * overlap
    for y0 in range(0, h, step):
        for x0 in range(0, w, step):
            y1, x1 = min(y0 + step, h), min(x0 + step, w)
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y1 + overlap), min(w, x1 + overlap)
            patch = model(x[..., ya:yb, xa:xb], sigma)
            out[..., y0:y1, x0:x1] = patch[..., y0 - ya : y1 - ya, x0 - xa : x1 - xa]
    return out
