"""Overlapping tiles for images too large for one forward pass.

Each tile is read with ``overlap`` extra pixels on every side that has a
neighbour, run, and only its core is written back. For a network whose output
pixel depends on a (2r+1)×(2r+1) window of the input (receptive field 2r+1), an
overlap of at least r makes the tiled result equal to a whole-image run, up to
floating-point rounding: every kept pixel saw the same inputs. Tile origins are
aligned to ``align`` (the network's ``pad_multiple``) so that networks working at
reduced resolution (FFDNet's 2×2 pixel unshuffle) see the same sub-pixel grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np


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
    if overlap < 0 or tile <= 0:
        raise ValueError("tile must be positive and overlap non-negative")
    overlap = _round_up(overlap, align)
    core = tile - 2 * overlap
    core -= core % align
    if core <= 0:
        raise ValueError(f"tile {tile} leaves no core with overlap {overlap} (needs tile > 2 × overlap)")
    return [
        Tile(read=(ry, rx), write=(wy, wx), keep=(ky, kx))
        for ry, wy, ky in _spans(height, core, overlap)
        for rx, wx, kx in _spans(width, core, overlap)
    ]


def run_tiled(
    fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, tile: int, overlap: int, align: int = 1
) -> np.ndarray:
    """Apply ``fn`` (``N×C×h×w`` → ``N×C'×h×w``) to ``image`` (``N×C×H×W``) tile by tile."""
    height, width = image.shape[-2:]
    out: np.ndarray | None = None
    for t in plan_tiles(height, width, tile, overlap, align):
        result = fn(np.ascontiguousarray(image[..., t.read[0], t.read[1]]))
        if out is None:
            out = np.empty((*result.shape[:-2], height, width), dtype=result.dtype)
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
