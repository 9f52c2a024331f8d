"""Scoring a large image on windows spread over it instead of the whole of it.

Every score of a run (the pre-trained network, each checkpoint, each interpolation weight; nine on the
CPU's Gaussian default) costs 1 + probes forward passes over the scored images, so on a photograph of
several megapixels scoring, not the updates, took most of the time: the updates train on patches and
cost the same on any image. Images with more than ``pixels`` pixels are therefore scored on windows that
cover about that many, one at a random place in each cell of a grid over the image (a stratified
sample, reproducible from the run's seed).

Each window is cut with :data:`MARGIN` extra pixels on every side inside the image, and the scores
average over the window alone (its *region*, :func:`rfr_deploy.adaptation.sure.sure_terms`): for a
network whose output depends on at most MARGIN pixels on each side (DnCNN, FFDNet, FDnCNN) the
window's output, residual and divergence are the whole image's at those pixels, so SURE on the sample
is an unbiased estimate of the error over those pixels, and every candidate is compared on the same
pixels and probes. The packaged CBDNet (a U-Net, whose receptive field is wider than the margin) and
RDN come within 1.3e-5 of the whole image's output on SIDD's 1024² sample, and CBDNet's SURE estimate
agrees to 1e-5 dB. Networks with global pooling (RIDNet's and MIRNet's channel attention) see the
window's statistics instead of the image's, as they do in tiled inference. The packaged RIDNet's
outputs there differ by up to 4.7e-3, and its SURE estimate by 0.024 dB
(benchmarks/results/scoring_windows_exactness_sidd3.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCORE_PIXELS = 2**19
"""Images with more pixels than this are scored on windows covering about this many (512k: more than
every image in ``shared/data`` but SIDD's 1024² sample, which the studies use as crops; Kodak24's
768×512 = 393k are scored whole)."""
WINDOW = 256
"""Side of a scoring window (its region; the cut is up to 2 × :data:`MARGIN` wider)."""
MARGIN = 32
"""Extra pixels cut on each side of a window, inside the image: at least the receptive radius of the
networks whose windows are exact (DnCNN's 20 layers: 20; FFDNet's 15 at half resolution: 30)."""
_WINDOW_STREAM = 0x5CA1_AB1E
"""Offset of the windows' seed (independent of the noise's and the probes' streams)."""


@dataclass
class ScoringSample:
    """What a scorer scores: the images (whole, or one cut per window), the pseudo-clean targets cut
    alike, and for each cut the region the scores average over (None: all of it)."""

    images: list[torch.Tensor]
    pseudo_clean: list[torch.Tensor]
    regions: list[torch.Tensor | None]


def sample_for_scoring(
    images: Sequence[torch.Tensor],
    pseudo_clean: Sequence[torch.Tensor],
    pixels: int,
    seed: int,
    align: int = 1,
) -> ScoringSample:
    """The windows of every image larger than ``pixels`` (0: no limit), each image's drawn from ``seed``;
    smaller images whole. ``align``: window and cut origins are multiples of it (the network's
    ``pad_multiple``, so that a cut sees the whole image's sub-pixel grid)."""
    sample = ScoringSample([], [], [])
    generator = torch.Generator().manual_seed((seed * 0x9E3779B97F4A7C15 + _WINDOW_STREAM) % 2**63)
    for y, x in zip(images, pseudo_clean, strict=True):
        height, width = y.shape[-2:]
        if not pixels or height * width <= pixels:
            sample.images.append(y)
            sample.pseudo_clean.append(x)
            sample.regions.append(None)
            continue
        for top, left, size in window_origins(height, width, pixels, generator, align):
            cut, region = cut_window(y, top, left, size, align)
            sample.images.append(y[cut])
            sample.pseudo_clean.append(x[cut])
            sample.regions.append(region)
    return sample


def alignment(model: object) -> int:
    """The multiple window origins keep for ``model``: its ``pad_multiple`` (1 for a bare module)."""
    return getattr(getattr(model, "entry", None), "pad_multiple", 1)


def window_origins(
    height: int, width: int, pixels: int, generator: torch.Generator, align: int = 1
) -> list[tuple[int, int, tuple[int, int]]]:
    """(top, left, (window height, width)) of windows covering about ``pixels`` of a height×width image:
    a grid of about pixels / WINDOW² cells shaped like the image, one window at a uniformly random
    place in each (clamped to the image, origins rounded down to ``align``)."""
    size = (min(WINDOW, height), min(WINDOW, width))
    count = max(1, math.ceil(pixels / (size[0] * size[1])))
    rows = min(count, max(1, round(math.sqrt(count * height / width))))
    cols = math.ceil(count / rows)
    origins = []
    for r in range(rows):
        for c in range(cols):
            centre_y = (r + float(torch.rand((), generator=generator))) * height / rows
            centre_x = (c + float(torch.rand((), generator=generator))) * width / cols
            top = _clamp(int(centre_y) - size[0] // 2, height - size[0]) // align * align
            left = _clamp(int(centre_x) - size[1] // 2, width - size[1]) // align * align
            origins.append((top, left, size))
    return origins


def cut_window(
    image: torch.Tensor, top: int, left: int, size: tuple[int, int], align: int = 1
) -> tuple[tuple[slice, ...], torch.Tensor]:
    """The slices that cut a window of ``size`` at (top, left) with :data:`MARGIN` around it inside
    ``image``, and the window's region within the cut (a 1×1×h×w bool mask)."""
    height, width = image.shape[-2:]
    margin = aligned_margin(align)
    y0, x0 = max(0, top - margin), max(0, left - margin)
    y1, x1 = min(height, top + size[0] + margin), min(width, left + size[1] + margin)
    region = torch.zeros((1, 1, y1 - y0, x1 - x0), dtype=torch.bool, device=image.device)
    region[..., top - y0 : top - y0 + size[0], left - x0 : left - x0 + size[1]] = True
    return (Ellipsis, slice(y0, y1), slice(x0, x1)), region


def aligned_margin(align: int = 1) -> int:
    """:data:`MARGIN` rounded up to a multiple of ``align``."""
    return math.ceil(MARGIN / align) * align


def _clamp(value: int, upper: int) -> int:
    return min(max(value, 0), upper)
