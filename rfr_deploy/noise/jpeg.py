"""Synthetic noise as a JPEG file stores it: compressed with the file's own quantization tables.

A JPEG quantizes the DCT coefficients of each 8×8 block with the steps of its tables, coarser at high
frequencies and in the chroma; the noise the file holds went through that (at quality 75, Pillow's
default, much of the luma's fine-grained noise is gone, and most of the chroma's). A network adapted on
white noise, or on white noise with only its chroma subsampled (:mod:`rfr_deploy.noise.chroma`), is
taught to remove noise the file does not hold. :class:`JpegStoredNoise` passes the synthetic noisy image
through the same compression: the file's tables (read from its header, so a camera's own tables too),
its chroma subsampling, the decoder's bilinear chroma upsampling, 8-bit output
(:func:`rfr_deploy.noise.isp.compress_jpeg`, an approximation of libjpeg). The clean target is
compressed along with the noise, as the file's content was. The level it reports to noise-map networks
is the white noise's (benchmarks/README.md, "JPEGs: the noise their compression left").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rfr_deploy.noise.base import StoredNoise
from rfr_deploy.noise.isp import compress_jpeg, quantization_tables


@dataclass(frozen=True)
class JpegTables:
    """A JPEG's quantization steps, 64 each in row order as the decoded pixels are oriented: the luma's,
    and the chroma's (None for a gray file)."""

    luma: tuple[int, ...]
    chroma: tuple[int, ...] | None = None

    def __post_init__(self):
        for table in (self.luma, self.chroma):
            if table is not None and (len(table) != 64 or min(table) < 1):
                raise ValueError(f"a JPEG quantization table has 64 steps of at least 1, not {table!r}")

    def quality(self) -> int | None:
        """The IJG quality (libjpeg's, Pillow's) whose scaled standard tables these are; None for others
        (a camera's own tables)."""
        for quality in range(1, 101):
            luma, chroma = quantization_tables(torch.tensor([float(quality)]))
            if tuple(int(v) for v in luma.flatten()) == self.luma and (
                self.chroma is None or tuple(int(v) for v in chroma.flatten()) == self.chroma
            ):
                return quality
        return None


class JpegStoredNoise(StoredNoise):
    """``inner``'s noisy image compressed as the file was: quantized with ``tables``, its chroma
    subsampled by ``factors`` = (vertical, horizontal) (see the module's docstring)."""

    def __init__(self, inner: nn.Module, tables: JpegTables, factors: tuple[int, int] = (1, 1)):
        super().__init__(inner)
        self.tables, self.factors = tables, tuple(factors)
        luma = torch.tensor(tables.luma, dtype=torch.float32).view(1, 8, 8)
        chroma = torch.tensor(tables.chroma or tables.luma, dtype=torch.float32).view(1, 8, 8)
        self.register_buffer("luma_steps", luma, persistent=False)
        self.register_buffer("chroma_steps", chroma, persistent=False)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] == 3 and self.tables.chroma is None:
            raise ValueError("a gray JPEG's tables cannot compress an RGB image")
        noisy, sigma = self.inner(x, generator)
        steps = (self.luma_steps.to(noisy.dtype), self.chroma_steps.to(noisy.dtype))
        return compress_jpeg(noisy, *steps, self.factors), sigma

    def extra_repr(self) -> str:
        quality = self.tables.quality()
        return f"quality={quality if quality is not None else 'custom'}, factors={self.factors}"
