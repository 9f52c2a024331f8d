"""Synthetic noise as a JPEG file stores it: compressed with the file's own quantization tables.

A JPEG quantizes the DCT coefficients of each 8×8 block with the steps of its tables, coarser at high
frequencies and in the chroma; the noise the file holds went through that (at quality 75, Pillow's
default, much of the luma's fine-grained noise is gone, and most of the chroma's). A network adapted on
white noise, or on white noise with only its chroma subsampled (:mod:`rfr_deploy.noise.chroma`), is
taught to remove noise the file does not hold. :class:`JpegStoredNoise` passes the synthetic noisy image
through the same compression: the file's tables (read from its header, so a camera's own tables too),
its chroma subsampling if any (a gray file's one plane, a colour file's luma and chroma at full or
reduced resolution), the decoder's bilinear chroma upsampling, 8-bit output
(:func:`rfr_deploy.noise.isp.compress_jpeg`, an approximation of libjpeg). The clean target is
compressed along with the noise, as the file's content was (benchmarks/README.md, "JPEGs: the noise
their compression left").

The level read off such a file is what the compression left. Where it was estimated, the white noise
drawn before compression is aimed (:func:`aim_white_level`): the level at which, compressed onto the
pseudo-clean image, it reads the file's level. A noise-map network is told the white noise's level, the
aimed one where it was aimed, in training and when it denoises the file
(:mod:`rfr_deploy.jobs.noise_aim`; drawn at the level read off the file, the compressed noise was weaker
than the file's: the official FFDNet gained +1.25 dB on four 4:2:0 crops at σ = 10, aimed +2.00,
benchmarks/README.md, "A noise-map network told the file's level").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rfr_deploy.noise.base import StoredNoise
from rfr_deploy.noise.isp import compress_jpeg, quantization_tables
from rfr_deploy.noise.level import chroma_storage, estimate_noise_level

AIM_PIXELS = 512 * 512
"""The most pixels :func:`aim_white_level` reads (a central crop)."""
AIM_RANGE = 8
"""The highest white level :func:`aim_white_level` tries, in multiples of the level read off the file."""
AIM_ITERATIONS = 6
"""Bisections of the white level by :func:`aim_white_level` (a factor of 2 to within 1.2 %)."""
TOLD_FLOOR = 0.5
"""The least level a noise-map network is told on a JPEG (:func:`told_level`), in multiples of the luma
steps' level (:meth:`JpegTables.step_level`). Where the compression took nearly all the noise (smooth
crops, low σ, quality ≤ 75) the aimed level reads near 0 and the network left the blocking in place:
official FFDNet on 180 crops per layout (12 crops × σ 0/2/5/10/25 × quality 50/75/90, without adaptation)
rose by 0.07 dB on average on 4:2:0 files and 0.16 on 4:4:4 ones, on 30 and 39 crops by over 0.05 (up to
1.21 and 2.37), and fell by over 0.05 on 6 and 7 (at most 0.14 and 0.24, nearly clean files); a floor of
one step level fell on 55 and 49 crops, by up to 1.42 and 2.09 dB (benchmarks/README.md, "A floor under the
told level")."""


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

    def step_level(self) -> float:
        """The RMS error of a uniform quantizer with the luma's 64 steps, ``sqrt(mean(q²) / 12)``, in [0, 1]
        units: the error the compression leaves on coefficients it does not zero (3.87 grey levels at IJG
        quality 90, 9.75 at 75, 19.37 at 50)."""
        return (sum(q * q for q in self.luma) / (12 * len(self.luma))) ** 0.5 / 255

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
        return self.compress(noisy), sigma

    def compress(self, noisy: torch.Tensor) -> torch.Tensor:
        """``noisy`` (N×C×H×W, C = 1 or 3) compressed and decoded as the file was."""
        steps = (self.luma_steps.to(noisy.dtype), self.chroma_steps.to(noisy.dtype))
        return compress_jpeg(noisy, *steps, self.factors)

    def jpeg_quality(self) -> int | str:
        """The IJG quality of the file's tables, or 'custom'."""
        quality = self.tables.quality()
        return quality if quality is not None else "custom"

    def extra_repr(self) -> str:
        return f"quality={self.jpeg_quality()}, factors={self.factors}"


@torch.no_grad()
def aim_white_level(
    noise: JpegStoredNoise,
    target: torch.Tensor,
    level: float,
    generator: torch.Generator,
    noise_map: bool = False,
) -> float:
    """The level of white noise that, added to ``target`` (a pseudo-clean image, 1×C×H×W) and
    compressed as ``noise`` compresses it, reads ``level`` as the job read the file's for the network
    (:func:`read_stored_level`; ``noise_map``: a noise-map network's estimator) on top of what the
    compressed target reads alone (in quadrature: the noise the network kept), as the file's noise was
    read: the compression removed part
    of the noise drawn before it, the more so at low levels. One draw, scaled, on a central crop of
    at most :data:`AIM_PIXELS`: the level read grows with the scale, which is bracketed (up to
    :data:`AIM_RANGE` times ``level``) and bisected :data:`AIM_ITERATIONS` times on a log scale. Never
    below ``level``: compression takes noise away, and where the compressed noise reads above the file's
    level that is the estimator's error (aiming below it cost 0.30 and 0.47 dB on two 4:2:0 crops,
    benchmarks/README.md, "Every JPEG")."""
    h, w = target.shape[-2:]
    side = int(AIM_PIXELS**0.5)
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    x = target[..., top : top + side, left : left + side].float()
    draw = torch.randn(x.shape, generator=generator, device=x.device)

    def read(white: float) -> float:
        return read_stored_level(noise, x + white * draw, noise_map)

    wanted = (level**2 + read(0.0) ** 2) ** 0.5  # on top of what the target itself reads
    low, high = level, level
    while read(high) < wanted and high < AIM_RANGE * level:
        low, high = high, high * 2
    for _ in range(AIM_ITERATIONS if high > low else 0):
        middle = (low * high) ** 0.5
        low, high = (middle, high) if read(middle) < wanted else (low, middle)
    return (low * high) ** 0.5


def told_level(aimed: float, tables: JpegTables) -> float:
    """The level a noise-map network is told on a JPEG with ``tables``: the ``aimed`` white level
    (:func:`aim_white_level`), at least :data:`TOLD_FLOOR` times the steps' level."""
    return max(aimed, TOLD_FLOOR * tables.step_level())


def read_stored_level(noise: JpegStoredNoise, image: torch.Tensor, noise_map: bool = False) -> float:
    """The level of white noise in ``image`` compressed as ``noise`` compresses, read as a job reads the
    level off such a file for a blind network, or with ``noise_map`` a noise-map network
    (:func:`~rfr_deploy.noise.level.estimate_noise_level` told the chroma was stored as a JPEG's)."""
    chroma = chroma_storage(noise.factors, jpeg=True)
    return estimate_noise_level(noise.compress(image), noise_map, chroma).sigma
