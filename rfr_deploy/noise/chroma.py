"""Synthetic noise as a JPEG with subsampled chroma stores it: the chroma's detail averaged away.

A JPEG with 4:2:0 chroma subsampling (Pillow's default, and most cameras') keeps the luma at full
resolution and its two chroma planes (Cb, Cr) at half the resolution in both directions (4:2:2: across
only). Noise that was white in RGB when the file was written is, once decoded, still white in the luma
but smooth in the chroma: correlated across the channels and across neighbouring pixels. A network
adapted on white RGB noise is taught to remove noise the image does not have and not the noise it has
(benchmarks/README.md, "JPEGs with subsampled chroma: the noise they hold").

:class:`ChromaSubsampledNoise` wraps a white noise model and passes what it draws through the same round
trip: RGB → YCbCr (JPEG's full-range BT.601 matrix), each chroma plane averaged over the subsampling
blocks and brought back with the decoder's bilinear ("fancy") upsampling, → RGB. The DCT quantization is
left out. The level it reports to noise-map networks is the white noise's, as the level estimated from
such an image is (:func:`rfr_deploy.noise.level.estimate_noise_level` reads it off the luma).

A file that does not say how its chroma was stored (a PNG or TIFF written from a decoded JPEG, a frame
of a video) still shows it: :func:`find_subsampled_chroma` reads the trace the decoder's upsampling
leaves in the pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rfr_deploy.noise.base import StoredNoise
from rfr_deploy.noise.isp import YCBCR, subsample_chroma, upsample_chroma

FACTORS = ((2, 2), (1, 2), (2, 1))
"""The chroma subsampling factors (vertical, horizontal) modelled: 4:2:0, 4:2:2, and 4:2:2 turned on its side."""

THIRD_DIFFERENCE = (-1.0, 3.0, -3.0, 1.0)
"""Zero on every other pixel of a plane upsampled ×2 by the decoder's bilinear ("fancy") filter: on pixels
2k−1 … 2k+2 it cancels the two half-resolution samples they are interpolated from."""

CHROMA_TRACE = 0.12
"""A direction's chroma counts as subsampled where, on the pixels where the third difference cancels the
upsampling, its median magnitude (the larger of Cb's and Cr's) is below this fraction of the luma's
there, each scaled to the white-noise level. White noise reads about 1, a decoded 4:2:0 JPEG the
rounding's share. On central 128² and 256² crops of the 110 Kodak24, CBSD68 and McMaster images
(benchmarks/results/chroma_trace.md), at σ ≥ 5 every white-noise PNG read full chroma, and 4:2:0 JPEGs
read 2×2 on all crops from σ = 8 at quality 90 and from σ = 15 at quality 75. At low levels JPEG's
quantization smooths the chroma as well: at σ = 5, 35–42 of 110 full-chroma (4:4:4) JPEGs of quality 90
read 2×2, and so did most 4:2:2 ones at σ ≤ 8. Below σ = 5 the image's own chroma (these sets were
JPEGs or Photo CD scans themselves) passes for the noise's: :data:`TRACE_LEVEL`."""

TRACE_SAMPLES = 1 << 20
"""At most about this many pixels per plane are read for each direction (whole lines along it)."""

TRACE_LEVEL = 5 / 255
"""The least noise level at which :func:`find_subsampled_chroma` reads the chroma's trace ([0, 1] units)."""


class ChromaSubsampledNoise(StoredNoise):
    """``inner``'s noise with its chroma averaged over ``factors`` = (vertical, horizontal) blocks and
    upsampled back, as a JPEG with subsampled chroma stores it (see the module's docstring)."""

    def __init__(self, inner: nn.Module, factors: tuple[int, int] = (2, 2)):
        super().__init__(inner)
        if tuple(factors) not in FACTORS:
            raise ValueError(f"chroma subsampling factors must be one of {FACTORS}, not {tuple(factors)}")
        self.factors = tuple(factors)
        to_ycc = torch.tensor(YCBCR, dtype=torch.float64)
        self.register_buffer("to_ycc", to_ycc.float(), persistent=False)
        self.register_buffer("to_rgb", torch.linalg.inv(to_ycc).float(), persistent=False)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[1] != 3:
            raise ValueError(f"chroma subsampling needs RGB images, got {x.shape[1]} channel(s)")
        noisy, sigma = self.inner(x, generator)
        return x + self.subsample(noisy - x), sigma

    def subsample(self, noise: torch.Tensor) -> torch.Tensor:
        """``noise`` (N×3×H×W, RGB) with its chroma averaged over the blocks and brought back."""
        ycc = torch.einsum("ij,njhw->nihw", self.to_ycc.to(noise.dtype), noise)
        chroma = upsample_chroma(subsample_chroma(ycc[:, 1:], self.factors), self.factors, noise.shape[-2:])
        ycc = torch.cat([ycc[:, :1], chroma], dim=1)
        return torch.einsum("ij,njhw->nihw", self.to_rgb.to(noise.dtype), ycc)

    def extra_repr(self) -> str:
        return f"factors={self.factors}"


@torch.no_grad()
def find_subsampled_chroma(image: torch.Tensor, sigma: float | None) -> tuple[int, int]:
    """The (vertical, horizontal) factors by which the chroma of the colour ``image`` (C×H×W or 1×C×H×W,
    [0, 1]) was subsampled before its noise reached the file, read from the pixels: (2, 2) for a
    decoded 4:2:0 JPEG saved as PNG, (1, 1) where nothing shows, the image is gray or too small, or its
    noise level ``sigma`` is unknown or below :data:`TRACE_LEVEL`. See :data:`CHROMA_TRACE`."""
    x = image.reshape(-1, *image.shape[-2:]).float()
    if x.shape[0] != 3 or min(x.shape[-2:]) < 16 or sigma is None or sigma < TRACE_LEVEL:
        return (1, 1)
    to_ycc = torch.tensor(YCBCR, dtype=x.dtype)
    ycc = torch.einsum("ij,jhw->ihw", to_ycc / to_ycc.norm(dim=1, keepdim=True), x).unsqueeze(1)
    kernel = torch.tensor(THIRD_DIFFERENCE, dtype=x.dtype)
    stride = max(1, ycc[0].numel() // TRACE_SAMPLES)  # lines across the direction read: the rest adds little
    factors = []
    for axis, shape in ((2, (1, 1, 4, 1)), (3, (1, 1, 1, 4))):  # vertical, horizontal
        lines = ycc[..., ::stride] if axis == 2 else ycc[..., ::stride, :]
        differences = F.conv2d(lines, kernel.view(shape)).abs()
        factors.append(2 if _upsampling_trace(differences, axis) < CHROMA_TRACE else 1)
    found = tuple(factors)
    return found if found in FACTORS else (1, 1)


def _upsampling_trace(differences: torch.Tensor, axis: int) -> float:
    """The chroma's median third difference over the luma's, on whichever parity of pixels along ``axis``
    holds less chroma (the one where an upsampled plane cancels)."""
    best = None
    for parity in (0, 1):
        part = differences.narrow(axis, parity, differences.shape[axis] - parity)
        index = torch.arange(0, part.shape[axis], 2)
        medians = part.index_select(axis, index).flatten(1).median(dim=1).values
        chroma, luma = float(medians[1:].max()), float(medians[0])
        if best is None or chroma < best[0]:
            best = (chroma, luma)
    return best[0] / max(best[1], 1e-12)
