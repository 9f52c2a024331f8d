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
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rfr_deploy.noise.base import GaussianLevel, aims_at_residual, gaussian_level_of
from rfr_deploy.noise.level import LUMA

YCBCR = (LUMA, (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
"""RGB → YCbCr as JPEG (JFIF) defines it, without the chroma offset (noise has none)."""
FACTORS = ((2, 2), (1, 2), (2, 1))
"""The chroma subsampling factors (vertical, horizontal) modelled: 4:2:0, 4:2:2, and 4:2:2 turned on its side."""


class ChromaSubsampledNoise(nn.Module):
    """``inner``'s noise with its chroma averaged over ``factors`` = (vertical, horizontal) blocks and
    upsampled back, as a JPEG with subsampled chroma stores it (see the module's docstring)."""

    def __init__(self, inner: nn.Module, factors: tuple[int, int] = (2, 2)):
        super().__init__()
        if tuple(factors) not in FACTORS:
            raise ValueError(f"chroma subsampling factors must be one of {FACTORS}, not {tuple(factors)}")
        self.inner, self.factors = inner, tuple(factors)
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
        h, w = noise.shape[-2:]
        fy, fx = self.factors
        ycc = torch.einsum("ij,njhw->nihw", self.to_ycc.to(noise.dtype), noise)
        chroma = F.pad(ycc[:, 1:], (0, (-w) % fx, 0, (-h) % fy), mode="replicate")
        chroma = F.avg_pool2d(chroma, (fy, fx))
        chroma = F.interpolate(chroma, scale_factor=(fy, fx), mode="bilinear", align_corners=False)
        ycc = torch.cat([ycc[:, :1], chroma[..., :h, :w]], dim=1)
        return torch.einsum("ij,njhw->nihw", self.to_rgb.to(noise.dtype), ycc)

    def gaussian_level(self) -> GaussianLevel | None:
        """None: the noise is no longer white (SURE and the terms on the noisy input do not apply)."""
        return None

    def source_level(self) -> GaussianLevel | None:
        """The level of the white noise before its chroma was averaged (the wrapped model's)."""
        return gaussian_level_of(self.inner)

    def aims_at_residual(self) -> bool:
        """The wrapped model's."""
        return aims_at_residual(self.inner)

    def extra_repr(self) -> str:
        return f"factors={self.factors}"
