"""Updates whose batch does not fit in memory, computed tile by tile: the whole batch's gradient.

A training step on a whole image, or on a large patch, keeps every layer's activations for the
backward pass: one step on a 512² image took 5.7 kB per pixel for DnCNN, 4.0 kB for CBDNet and 15 kB
for RIDNet (``benchmarks/results/training_step_memory.md``). Where the estimate of
:func:`rfr_deploy.memory.bytes_per_pixel` does not fit in half the free memory, the update used to train on smaller patches, whose side
depended on the memory free at that moment, so the same command and seed trained different networks on
different machines. Instead, the batch is now split into tiles that fit: the noise is drawn once for the whole batch (the same draw as without tiles), each tile is read
with the network's reach (:func:`tile_margin`) as extra pixels on every side inside the batch (the tiles
of inference, :func:`rfr_deploy.inference.plan_tiles`), its loss is taken over its own
pixels, and the backward passes accumulate into one gradient before the one optimizer step. The
optional terms on the noisy input (:mod:`rfr_deploy.adaptation.noisy_input`) draw once per update too and
add their tile's share, so no setting trains on patches sized by the memory free.

For a network whose output depends on at most that many pixels on each side (DnCNN, FFDNet, FDnCNN,
CBDNet, RDN) the tile's output at its own pixels is the batch's, and so is every activation those outputs
depend on: the accumulated gradient is the batch's, up to the order of the sums, whatever the tile side.
(Up to stop 55 tiles were read with a fixed 32 pixels, short of CBDNet's 48 and RDN's 41: the packaged
CBDNet's adaptation to SIDD's 512² pairs then gave the one-pass result to the fourth decimal of a dB, in
1.14-1.29× the time.) Networks with global pooling (RIDNet's and MIRNet's channel attention) see each
tile's statistics instead of the batch's, as they do in tiled inference: the packaged RIDNet's gain
moved by +0.007 dB (``benchmarks/results/tiled_updates_sidd_*.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from rfr_deploy.adaptation.scoring_windows import MARGIN
from rfr_deploy.inference import Tile, plan_tiles, tile_overlap

SMALLEST_CORE = 64
"""The smallest side of a tile's own pixels (the core, within its margins)."""


def tile_margin(model: object) -> int:
    """The extra pixels a training tile of ``model`` is read with on every side: the overlap of its
    inference tiles (:func:`rfr_deploy.inference.tile_overlap`, its reach), :data:`MARGIN` for a bare module."""
    return tile_overlap(model) if hasattr(model, "entry") else MARGIN


def tile_side(fits: int, align: int, margin: int = MARGIN) -> int:
    """The side of the tiles (core and ``margin`` on each side) an update that fits ``fits``² pixels is
    computed in: ``fits``, but at least a core of :data:`SMALLEST_CORE` (a multiple of ``align``) within
    its margins (rounded up to ``align``)."""
    return max(fits, 2 * (-(-margin // align) * align) + SMALLEST_CORE + (-SMALLEST_CORE) % align)


def training_tiles(height: int, width: int, side: int, align: int = 1, margin: int = MARGIN) -> list[Tile]:
    """The tiles of a height×width batch: cores that partition it, each read with ``margin`` (rounded up
    to ``align``) extra pixels on every side inside the batch (:func:`rfr_deploy.inference.plan_tiles`,
    the tiler of inference)."""
    return plan_tiles(height, width, side, margin, align)


def window(batch: torch.Tensor, tile: Tile | None) -> torch.Tensor:
    """What the network reads of ``batch`` for ``tile``: its core and margins (None: the whole batch)."""
    return batch if tile is None else batch[(..., *tile.read)]


def own_pixels(out: torch.Tensor, tile: Tile | None) -> torch.Tensor:
    """The tile's own pixels (its core) within the network's output on its :func:`window`."""
    return out if tile is None else out[(..., *tile.keep)]


def cut(batch: torch.Tensor, tile: Tile | None) -> torch.Tensor:
    """The tile's own pixels of a batch-sized tensor (a target, a probe)."""
    return batch if tile is None else batch[(..., *tile.write)]


PixelSum = Callable[[Tile | None], torch.Tensor]
"""A loss term summed over the pixels of a tile (None: the whole batch), its forward passes run on the
tile's :func:`window`."""


def backward_by_tile(parts: Sequence[PixelSum], tiles: Sequence[Tile | None], count: int) -> torch.Tensor:
    """Accumulate into the parameters' gradients the gradient of the sum of ``parts`` over the batch
    divided by ``count`` (a mean over the batch's ``count`` values), one tile at a time (``[None]``: in
    one pass); returns that loss (detached)."""
    losses = []
    for tile in tiles:
        part = sum((summed(tile) for summed in parts[1:]), parts[0](tile)) / count
        part.backward()
        losses.append(part.detach())
    return sum(losses[1:], losses[0])
