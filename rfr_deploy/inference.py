"""Running a denoiser on whole images: tensors in and out, self-ensemble, tiling.

Images too large for one forward pass run in overlapping tiles (:func:`run_tiled`, also used by
``exporters.onnx_runtime``): each tile is read with ``overlap`` extra pixels on every side that has a
neighbour, run, and only its core is written back. For a network whose output pixel depends on a
(2r+1)×(2r+1) window of the input (receptive field 2r+1), an overlap of at least r makes the tiled
result equal to a whole-image run, up to floating-point rounding: every kept pixel saw the same
inputs. Tile origins are aligned to ``align`` (the network's ``pad_multiple``) so that networks
working at reduced resolution (FFDNet's 2×2 pixel unshuffle) see the same sub-pixel grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from rfr_deploy.errors import ConfigError
from rfr_deploy.layout import run_channels_last
from rfr_deploy.memory import available_bytes, bytes_per_pixel
from rfr_deploy.transforms import DIHEDRAL, dihedral, dihedral_inverse

MEMORY_FRACTION = 0.5
"""Share of the free memory a single forward pass may use before the image is tiled."""
GLOBAL_OVERLAP = 32
"""The tile overlap of networks that pool over the whole image, whose tiles are approximate whatever it is."""


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
    overlap: int | None = None,
    channels_last: bool | None = None,
    on_tile: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Clean estimate of ``noisy`` (``N×C×H×W``). ``sigma`` in [0, 1] units for noise-map models.

    ``ensemble`` averages the 8 dihedral transforms (×8 compute). ``tile`` forces
    tiles of that size; by default the image is tiled only when one pass would
    not fit in memory, in tiles overlapping by ``overlap`` (default :func:`tile_overlap`).
    ``channels_last``: the layout of the pass
    (:func:`rfr_deploy.layout.run_channels_last`; None: channels-last for convolutional networks on the CPU).
    ``on_tile(done, total)`` hears of each tile of a tiled pass done (a progress bar).
    """
    was_training = model.training
    model.eval()
    try:
        if tile is None:
            tile = auto_tile(model, noisy, overlap)

        def compute(layout: torch.memory_format) -> torch.Tensor:
            def run(x: torch.Tensor) -> torch.Tensor:
                return _run(model, x.contiguous(memory_format=layout), sigma, (tile, overlap), on_tile)

            return dihedral_mean(run, noisy) if ensemble else run(noisy)

        return run_channels_last(model, noisy, compute, channels_last)
    finally:
        model.train(was_training)


def dihedral_mean(run, noisy: torch.Tensor) -> torch.Tensor:
    """Mean of ``run`` over the eight dihedral transforms of ``noisy``, each result turned back."""
    out = torch.zeros_like(noisy)
    for k in range(DIHEDRAL):
        out += dihedral_inverse(run(dihedral(noisy, k)), k)
    return out / DIHEDRAL


def tile_overlap(model) -> int:
    """The overlap of ``model``'s tiles: its reach (:attr:`~rfr_deploy.models.denoiser.Denoiser.reach`), so
    that tiles equal a whole-image pass; :data:`GLOBAL_OVERLAP` for networks with whole-image statistics."""
    return GLOBAL_OVERLAP if model.entry.global_statistics else model.reach


def auto_tile(model, noisy: torch.Tensor, overlap: int | None = None) -> int | None:
    """Tile size that keeps a forward pass within :data:`MEMORY_FRACTION` of free memory, or None; at least
    128 pixels, and a core of 64 within the ``overlap`` (default :func:`tile_overlap`) on each side."""
    h, w = noisy.shape[-2:]
    per_pixel = bytes_per_pixel(model, noisy.shape[1], training=False) * noisy.shape[0]
    budget = MEMORY_FRACTION * available_bytes(noisy.device)
    if per_pixel * h * w <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel))
    grid = model.entry.pad_multiple
    smallest = 2 * _round_up(tile_overlap(model) if overlap is None else overlap, grid) + _round_up(64, grid)
    return max(128, smallest, side - side % 32)


def _run(
    model, x: torch.Tensor, sigma: float | None, tiling: tuple[int | None, int | None], on_tile
) -> torch.Tensor:
    (tile, overlap), (h, w) = tiling, x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return model(x, sigma)
    overlap = tile_overlap(model) if overlap is None else overlap
    return run_tiled(lambda part: model(part, sigma), x, tile, overlap, model.entry.pad_multiple, on_tile)


@dataclass(frozen=True)
class Tile:
    read: tuple[slice, slice]
    """Rows and columns read from the input (core plus overlap)."""
    write: tuple[slice, slice]
    """Rows and columns of the output this tile fills (its core)."""
    keep: tuple[slice, slice]
    """The core's rows and columns within the tile's own output."""


def plan_tiles(height: int, width: int, tile: int, overlap: int, align: int = 1) -> list[Tile]:
    """Tiles of at most ``tile``×``tile`` input pixels covering a ``height``×``width`` image."""
    core = tile_core(tile, overlap, align)
    overlap = _round_up(overlap, align)
    return [
        Tile(read=(ry, rx), write=(wy, wx), keep=(ky, kx))
        for ry, wy, ky in _spans(height, core, overlap)
        for rx, wx, kx in _spans(width, core, overlap)
    ]


def tile_core(tile: int, overlap: int, align: int = 1) -> int:
    """Side of the part of each ``tile`` that is written (the core, a multiple of ``align``) once
    ``overlap`` pixels, rounded up to ``align``, are read on each side; :class:`ConfigError` when none
    is left."""
    if overlap < 0 or tile <= 0:
        raise ConfigError("tile must be positive and overlap non-negative")
    rounded = _round_up(overlap, align)
    core = tile - 2 * rounded
    core -= core % align
    if core <= 0:
        need = 2 * rounded + align
        raise ConfigError(
            f"tiles of {tile} pixels leave nothing to write with an overlap of {rounded} on each side: "
            f"give a tile of at least {need} or a smaller overlap"
        )
    return core


def run_tiled(
    fn: Callable,
    image,
    tile: int,
    overlap: int,
    align: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
):
    """Apply ``fn`` (``N×C×h×w`` → ``N×C'×h×w``) to ``image`` (``N×C×H×W``) tile by tile; ``on_tile(done,
    total)`` hears of each tile done (a progress bar).

    ``image`` is a tensor or a NumPy array; the result is of the kind ``fn`` returns."""
    height, width = image.shape[-2:]
    out = None
    tiles = plan_tiles(height, width, tile, overlap, align)
    for done, t in enumerate(tiles, 1):
        result = fn(image[..., t.read[0], t.read[1]])
        if on_tile is not None:
            on_tile(done, len(tiles))
        if out is None:
            shape = (*result.shape[:-2], height, width)
            is_tensor = isinstance(result, torch.Tensor)
            out = result.new_empty(shape) if is_tensor else np.empty(shape, dtype=result.dtype)
        out[..., t.write[0], t.write[1]] = result[..., t.keep[0], t.keep[1]]
    assert out is not None
    return out


def _spans(size: int, core: int, overlap: int) -> Iterator[tuple[slice, slice, slice]]:
    for start in range(0, size, core):
        stop = min(start + core, size)
        lo, hi = max(0, start - overlap), min(size, stop + overlap)
        yield slice(lo, hi), slice(start, stop), slice(start - lo, stop - lo)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple if multiple > 1 else value
