"""In-camera signal processing operators, vectorised in torch: Bayer mosaic, demosaic, JPEG.

Used by the camera noise model (:mod:`rfr_deploy.noise.camera`); every function works on
batches with per-sample settings (pattern, quality) held in tensors, on any device,
without host synchronisation.

* Bayer colour filter arrays in the four layouts (RGGB, BGGR, GRBG, GBRG).
* Demosaicing by gradient-corrected linear interpolation (Malvar, He & Cutler,
  ICASSP 2004), the method of MATLAB's ``demosaic`` that CBDNet's noise model uses.
* An approximate JPEG round trip: JFIF YCbCr, 4:2:0 chroma subsampling (box filter
  down, bilinear up), 8×8 orthonormal DCT, quantisation with the IJG-scaled tables
  of Annex K of the standard, 8-bit output. Not bit-exact with libjpeg (no entropy
  coding is needed for the pixels; rounding of intermediate values differs).

Constants reach a device once and are cached there, so that the operators issue no
host-to-device copies after a first (warm-up) call, as CUDA graph capture requires.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rfr_deploy.noise.level import LUMA

_ON_DEVICE: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}


def _constant(t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Module constant ``t`` on ``device`` (and in ``dtype``), copied there once."""
    key = (id(t), torch.device(device), dtype or t.dtype)
    cached = _ON_DEVICE.get(key)
    if cached is None:
        cached = _ON_DEVICE[key] = t.to(device=device, dtype=dtype or t.dtype)
    return cached


BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
# Sites of a 2×2 Bayer tile: 0 = red, 1 = green in a red row, 2 = green in a blue row, 3 = blue.
_TILES = torch.tensor(
    [
        [[0, 1], [2, 3]],  # RGGB
        [[3, 2], [1, 0]],  # BGGR
        [[1, 0], [3, 2]],  # GRBG
        [[2, 3], [0, 1]],  # GBRG
    ]
)

# Malvar-He-Cutler 5×5 filters (÷8): green at red/blue sites; red/blue at a green site whose row
# holds that colour; red/blue at a green site whose column holds it; red at blue and blue at red.
_MALVAR = (
    torch.tensor(
        [
            [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
            [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]],
            [[0, 0, -1, 0, 0], [0, -1, 4, -1, 0], [0.5, 0, 5, 0, 0.5], [0, -1, 4, -1, 0], [0, 0, -1, 0, 0]],
            [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]],
        ]
    ).unsqueeze(1)
    / 8.0
)
_MALVAR_SQUARED = _MALVAR.square()


# Colour channel each site's filter passes, and, per site, where demosaicing takes each output
# channel from: 0 = the raw value, 1 + k = Malvar filter k.
_SITE_CHANNEL = torch.tensor([0, 1, 1, 2])
_SITE_SOURCES = torch.tensor(
    [
        [0, 1, 4],  # red site: R raw, G from filter 0, B from filter 3
        [2, 0, 3],  # green in a red row: R along the row, G raw, B along the column
        [3, 0, 2],  # green in a blue row: R along the column, G raw, B along the row
        [4, 1, 0],  # blue site
    ]
)


def bayer_sites(pattern: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """CFA site map ``N×1×H×W`` (0 red, 1 green in a red row, 2 green in a blue row, 3 blue).

    ``pattern`` holds one index into :data:`BAYER_PATTERNS` per sample.
    """
    tiles = _constant(_TILES, pattern.device)[pattern]  # N×2×2
    rows = torch.arange(height, device=pattern.device) % 2
    cols = torch.arange(width, device=pattern.device) % 2
    return tiles[:, rows[:, None], cols[None, :]].unsqueeze(1)


def mosaic(rgb: torch.Tensor, sites: torch.Tensor) -> torch.Tensor:
    """The raw Bayer image ``N×1×H×W``: at each site, the channel its colour filter passes."""
    return rgb.gather(1, _constant(_SITE_CHANNEL, sites.device)[sites])


def demosaic(raw: torch.Tensor, sites: torch.Tensor, variance: bool = False) -> torch.Tensor:
    """Malvar-He-Cutler demosaicing of ``raw`` (``N×1×H×W``) → ``N×3×H×W``.

    With ``variance=True`` the input is a per-site variance map of independent noise and
    the output its variance after demosaicing (the filters' squared weights).
    """
    kernels = _constant(_MALVAR_SQUARED if variance else _MALVAR, raw.device, raw.dtype)
    filtered = F.conv2d(F.pad(raw, (2, 2, 2, 2), mode="reflect"), kernels)  # reflection keeps the CFA phase
    sources = _constant(_SITE_SOURCES, sites.device)[sites[:, 0]].permute(0, 3, 1, 2)  # N×3×H×W
    return torch.cat([raw, filtered], dim=1).gather(1, sources)


# ----------------------------------------------------------------------------------------- JPEG

_LUMA_TABLE = torch.tensor(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    dtype=torch.float32,
)
_CHROMA_TABLE = torch.full((8, 8), 99.0)
_CHROMA_TABLE[:4, :4] = torch.tensor(
    [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]], dtype=torch.float32
)
YCBCR = (LUMA, (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
"""RGB → YCbCr as JPEG (JFIF) defines it, without the chroma offset."""
_RGB_TO_YCBCR = torch.tensor(YCBCR)
_YCBCR_TO_RGB = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]])


_CHROMA_OFFSET = torch.tensor([0.0, 128 / 255, 128 / 255]).view(1, 3, 1, 1)
_DCT = torch.cos((2 * torch.arange(8.0)[None, :] + 1) * torch.arange(8.0)[:, None] * math.pi / 16) * 0.5
_DCT[0] /= math.sqrt(2)  # orthonormal DCT-II: rows k, columns n


def quantization_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IJG quality scaling of the Annex K tables: per-sample ``N×8×8`` luma and chroma steps."""
    q = quality.clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)[:, None, None]

    def scaled(table: torch.Tensor) -> torch.Tensor:
        t = _constant(table, quality.device, quality.dtype)
        return torch.floor((t * scale + 50.0) / 100.0).clamp(1, 255)

    return scaled(_LUMA_TABLE), scaled(_CHROMA_TABLE)


def _quantize_plane(plane: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """8×8 block DCT, quantisation with per-sample ``steps`` (N×8×8), inverse DCT; plane N×1×H×W."""
    n, _, h, w = plane.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = F.pad(plane, (0, pw, 0, ph), mode="replicate") * 255.0 - 128.0
    hb, wb = (h + ph) // 8, (w + pw) // 8
    blocks = x.reshape(n, hb, 8, wb, 8).permute(0, 1, 3, 2, 4)  # N×hb×wb×8×8
    d = _constant(_DCT, x.device, x.dtype)
    coef = d @ blocks @ d.T
    s = steps[:, None, None]
    coef = torch.round(coef / s) * s
    blocks = d.T @ coef @ d
    x = blocks.permute(0, 1, 3, 2, 4).reshape(n, 1, hb * 8, wb * 8)
    return ((x + 128.0) / 255.0)[..., :h, :w]


def jpeg_round_trip(x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Compress and decompress ``x`` (``N×C×H×W``, C = 1 or 3, [0, 1]) at per-sample ``quality`` ∈ [1, 100]."""
    luma_steps, chroma_steps = quantization_tables(quality.to(x.dtype))
    return compress_jpeg(x, luma_steps, chroma_steps)


def subsample_chroma(chroma: torch.Tensor, factors: tuple[int, int]) -> torch.Tensor:
    """Chroma planes (N×C×H×W) averaged over blocks of the (vertical, horizontal) ``factors``, as a JPEG
    encoder subsamples them (the edges repeated to whole blocks)."""
    (fy, fx), (h, w) = factors, chroma.shape[-2:]
    return F.avg_pool2d(F.pad(chroma, (0, (-w) % fx, 0, (-h) % fy), mode="replicate"), (fy, fx))


def upsample_chroma(small: torch.Tensor, factors: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Subsampled chroma planes brought back to ``size`` (H, W) by the decoder's bilinear ("fancy")
    upsampling."""
    if tuple(factors) != (1, 1):
        small = F.interpolate(small, scale_factor=tuple(factors), mode="bilinear", align_corners=False)
    return small[..., : size[0], : size[1]]


def compress_jpeg(
    x: torch.Tensor, luma_steps: torch.Tensor, chroma_steps: torch.Tensor, factors: tuple[int, int] = (2, 2)
) -> torch.Tensor:
    """Compress and decompress ``x`` (``N×C×H×W``, C = 1 or 3, [0, 1]) with the quantization steps
    ``luma_steps`` and ``chroma_steps`` (``N×8×8``, or ``1×8×8`` for all) and the chroma subsampled by
    the (vertical, horizontal) ``factors``."""
    x = x.clamp(0, 1)
    if x.shape[1] == 1:
        out = _quantize_plane(x, luma_steps)
    else:
        offset = _constant(_CHROMA_OFFSET, x.device, x.dtype)
        ycc = torch.einsum("ij,njhw->nihw", _constant(_RGB_TO_YCBCR, x.device, x.dtype), x) + offset
        h, w = x.shape[-2:]
        y = _quantize_plane(ycc[:, 0:1], luma_steps)
        small = subsample_chroma(ycc[:, 1:3], factors)
        small = torch.cat([_quantize_plane(small[:, i : i + 1], chroma_steps) for i in range(2)], dim=1)
        chroma = upsample_chroma(small, factors, (h, w))
        ycc = torch.cat([y, chroma], dim=1) - offset
        out = torch.einsum("ij,njhw->nihw", _constant(_YCBCR_TO_RGB, x.device, x.dtype), ycc)
    return torch.round(out.clamp(0, 1) * 255.0) / 255.0
