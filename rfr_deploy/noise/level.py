"""Estimating the level of additive white Gaussian noise from the noisy image alone.

Two published ideas, combined:

* Patch-covariance eigenvalues (Chen, Zhu & Heng, ICCV 2015): image structure occupies a few
  principal directions of the covariance of overlapping patches; the other eigenvalues all
  equal σ². σ² is the mean of the largest set of smallest eigenvalues whose mean equals their
  median, which is unbiased by the spread of sample eigenvalues (unlike the smallest one).
* Weak-texture patches (Liu, Tanaka & Okutomi, IEEE TIP 2013): on textured images the
  "structure-free" directions still hold some texture, so the estimate reads high. Patches
  whose gradient energy is no larger than pure noise of the current estimate would produce
  are nearly flat; re-estimating on those alone, and iterating, removes most of that bias.

The gradient-energy threshold is calibrated on simulated noise (its 99th percentile), so no
distributional approximation is needed. Patches whose mean, in any channel, is
near black or white are left out: clipping removes noise, and flat clipped regions would otherwise pass as weak texture.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

PATCH = 7
"""Patch side (pixels)."""

WEAK_TEXTURE_QUANTILE = 0.99
"""A patch counts as weak texture while its gradient energy is below this quantile of pure noise's."""

CLIP_MARGIN = 2.0
"""Patches whose mean lies within this many σ of 0 or 1 are left out (clipping would thin their noise)."""

MIN_PATCHES_PER_DIMENSION = 40
"""The weak-texture set keeps at least this many patches per patch dimension (c·p²) for a stable covariance."""


AGREEMENT = 0.02
"""The two estimators agree when they differ by at most this fraction. Texture makes the all-patch
estimate read high; clipping in 8-bit files (near black, white or saturated colours) makes it read low."""

AGREED_RANGE = (0.99, 1.01)
"""Where the true σ lies relative to the estimate when the estimators agree (no texture inflating
the all-patch estimate, which is then the more precise: within ±0.4 % on colour 256² crops at σ = 25)."""

DISAGREED_RANGE = (0.9, 1.03)
"""Relative range when they disagree: texture inflated the all-patch estimate, the weak-texture one
can still read up to 10 % high on textured gray crops."""


CHROMA_DROPPED = 0.2
"""A colour estimate below this fraction of the luma estimate (:func:`luma_sigma`) means the colour
patches have directions without noise: the chroma was subsampled (a 4:2:0 JPEG: half the dimensions of
a colour patch) or smoothed in the camera, and the colour estimate, read off the smallest eigenvalues,
collapses (σ = 25 read as about 1 on Kodak24 crops); the luma estimate is used. On 12 crops of Kodak24,
CBSD68 and McMaster (benchmarks/results/jpeg_noise_level.md) white noise read at least 0.49 of the luma
estimate at σ ≥ 5, but 0.23 on a textured crop at σ = 2 (its luma estimate inflated by the texture), and
4:2:0 JPEGs at most 0.21 at σ ≥ 5: 0.25, the first choice, switched that white-noise crop and cost it
7.8 dB with FFDNet; 0.2 does not (chosen on these crops: the margin is thin at low levels)."""

JPEG_CHROMA_KEPT = 0.65
"""In a full-chroma (4:4:4) JPEG the chroma is quantised with a coarser table than the luma, and at low
levels or qualities that takes much of its noise: the colour estimate then reads a fraction of the luma's
(1.85 against 4.74 on average at σ = 10 and quality 75), where the chroma kept its noise it reads about as
much (0.82–1.38 of the luma's at σ ≥ 10 and quality ≥ 90). Below this fraction a full-chroma JPEG's level
is the luma's. On 12 crops × 5 levels × 4 qualities (benchmarks/results/jpeg_noise_level_444.md) it
switched crops in 11 of the 20 rows, and official FFDNet told the level denoised better in 10 of them
(σ = 25 at quality 50: 23.50 → 27.72 dB; σ = 10 at quality 75: 30.57 → 30.82) and 0.13 dB worse in one
(σ = 5 at quality 95, one crop switched); nearer 1 the colour estimate, the more precise, is kept."""

ChromaStorage = Literal["plain", "jpeg", "subsampled"]
"""How a colour image's chroma was stored before its noise was read: not as a JPEG (``plain``), as a
full-chroma JPEG (``jpeg``: quantised coarser than the luma), or subsampled (``subsampled``: a 4:2:0 or
4:2:2 JPEG, whose chroma lost its noise)."""


LUMA = (0.299, 0.587, 0.114)
"""ITU-R BT.601 luma weights, as JPEG's YCbCr uses."""

GRAY_RANGE = (0.9, 1.0)
"""Relative range for gray images, around the all-patch estimate (see :func:`estimate_noise_level`)."""

FLAT_FRACTION = 0.2
"""Share of the patches :func:`estimate_sigma_on_flat` keeps: those where the denoised image is flattest."""


@dataclass(frozen=True)
class NoiseLevel:
    """An estimated Gaussian noise level and the range the true level is taken to lie in ([0, 1] units)."""

    sigma: float
    low: float
    high: float
    precise: bool = False
    """The two estimators agreed (colour images): the narrow :data:`AGREED_RANGE` holds, close enough for
    SURE. False for gray images and where they disagree."""


def chroma_storage(factors: tuple[int, int], jpeg: bool) -> ChromaStorage:
    """The :data:`ChromaStorage` of a file whose chroma was subsampled by ``factors`` ((1, 1): not), and that
    is a JPEG (``jpeg``) or not."""
    if tuple(factors) != (1, 1):
        return "subsampled"
    return "jpeg" if jpeg else "plain"


def estimate_noise_level(
    image: torch.Tensor, noise_map: bool = False, chroma: ChromaStorage = "plain"
) -> NoiseLevel:
    """σ of the Gaussian noise in ``image`` with an honest range, from two estimators.

    Colour images: the all-patch estimate is precise when no texture inflates it; the weak-texture
    estimate is robust to texture but a little noisier. When they agree within :data:`AGREEMENT` the
    all-patch value is used with the narrow :data:`AGREED_RANGE`; otherwise (texture or clipping) the
    weak-texture value with :data:`DISAGREED_RANGE`; where both read far below the luma's level
    (:data:`CHROMA_DROPPED`: a 4:2:0 JPEG), the luma's, with that range. ``chroma`` says how the file
    stored it (:data:`ChromaStorage`, from its header: :attr:`rfr_deploy.images.Image.chroma_subsampling`):
    subsampled, the luma's level, with no threshold to miss it; a full-chroma JPEG, the luma's where the
    colour estimate is below :data:`JPEG_CHROMA_KEPT` of it (at σ = 10 and quality 75 the colour patches
    read 0.84–1.47, above :data:`CHROMA_DROPPED`). SURE's choice between networks is sensitive to σ (see
    :mod:`rfr_deploy.adaptation.sure`), so the range matters as much as the value.

    Gray images: the all-patch value with :data:`GRAY_RANGE`, or, for the map of a noise-map network
    (``noise_map``), the weak-texture value with :data:`DISAGREED_RANGE`. A blind network's level is
    read from the network itself (:mod:`rfr_deploy.adaptation.implied_level`) and this only seeds it;
    a noise-map network is told this level. On the first 12 whole Set12 and BSD68 images at σ = 15, 25
    and 50 the weak-texture value's mean error was 0.6–2.6 %, the all-patch value's 0.9–10.8 %
    (benchmarks/results/noise_level_accuracy_whole_gray_ffdnet.md); told it, official FFDNet denoised
    whole Set12 at σ = 25 0.02 dB better and the first 12 BSD68 images at σ = 15 0.22 dB better
    (benchmarks/README.md, "A noise-map network with an unknown σ")."""
    if image.shape[-3] == 3 and _grey_in_colour(image):  # a grey image stored as RGB: its noise is grey
        return estimate_noise_level(_as_chw(image)[:1], noise_map)
    if chroma == "subsampled" and image.shape[-3] == 3:  # the chroma lost its noise: the luma's level
        luma = luma_sigma(image)
        return _around(luma, DISAGREED_RANGE)
    if noise_map and image.shape[-3] == 1:
        weak = estimate_sigma(image)
        return _around(weak, DISAGREED_RANGE)
    plain = estimate_sigma(image, iterations=0)
    if image.shape[-3] == 1:
        # Gray: textured crops fool both estimators alike (BSD68 test001 at σ = 25 reads 27.6 with
        # either), and trusting them cost up to 0.18 dB; only the range below the all-patch value,
        # which texture can only inflate, has kept every image within 0.02 dB of the pre-trained one.
        return _around(plain, GRAY_RANGE)
    weak, luma = estimate_sigma(image), luma_sigma(image)
    kept = JPEG_CHROMA_KEPT if chroma == "jpeg" else CHROMA_DROPPED
    if max(plain, weak) < kept * luma:  # chroma without its noise: the luma's level
        return _around(luma, DISAGREED_RANGE)
    agree = abs(plain / max(weak, 1e-12) - 1.0) <= AGREEMENT
    return _around(plain, AGREED_RANGE, precise=True) if agree else _around(weak, DISAGREED_RANGE)


def _around(sigma: float, relative: tuple[float, float], precise: bool = False) -> NoiseLevel:
    """σ with the range ``relative`` to it."""
    return NoiseLevel(sigma, sigma * relative[0], sigma * relative[1], precise=precise)


def _grey_in_colour(image: torch.Tensor) -> bool:
    """Whether the three channels of ``image`` are one (a grey image saved as RGB, or a grey palette)."""
    x = _as_chw(image)
    return bool(torch.equal(x[0], x[1]) and torch.equal(x[1], x[2]))


@torch.no_grad()
def luma_sigma(image: torch.Tensor) -> float:
    """σ of white Gaussian noise of equal level in each channel of the colour ``image`` (C×H×W or
    1×C×H×W), read on its luma alone (the weak-texture estimate): the luma of such noise has σ times
    the norm of :data:`LUMA`. Unlike the colour estimate it holds where the chroma lost its noise."""
    x = _as_chw(image)
    weights = x.new_tensor(LUMA).view(3, 1, 1)
    return estimate_sigma((x * weights).sum(dim=0, keepdim=True)) / float(weights.norm())


@torch.no_grad()
def estimate_sigma(
    image: torch.Tensor,
    patch: int = PATCH,
    stride: int | None = None,
    max_patches: int = 250_000,
    iterations: int = 8,
) -> float:
    """Estimate the level of additive white Gaussian noise in ``image`` (C×H×W or 1×C×H×W, [0, 1]).

    Returns σ in [0, 1] units (σ/255 for 8-bit grey levels). The patch stride grows with the image so that at most
    ``max_patches`` patches are used. ``iterations=0`` gives the plain covariance estimate over
    all patches.
    """
    x = _as_chw(image)
    p = min(patch, *x.shape[1:])
    if stride is None:
        stride = _stride(x, p, max_patches)
    cols = F.unfold(x.unsqueeze(0), kernel_size=p, stride=stride)[0].T  # (n, c·p²)
    sigma = _tail_sigma(cols)
    if iterations == 0 or p < 3:
        return sigma
    energy = _gradient_energy(x, p, stride)
    headroom = _headroom(cols, x.shape[0])
    keep = min(cols.shape[0], MIN_PATCHES_PER_DIMENSION * cols.shape[1])
    ratio, shrink = _weak_texture_calibration(x.shape[0], p)
    for _ in range(iterations):
        # Flat patches near black or white lose noise to clipping: leave them out by their mean,
        # which (unlike their extreme pixels) hardly depends on the noise drawn.
        usable = headroom > CLIP_MARGIN * sigma
        if int(usable.sum()) < keep:  # a mostly saturated image: the patches farthest from clipping
            usable = headroom >= headroom.kthvalue(headroom.numel() - keep + 1).values
        candidates = torch.where(usable, energy, torch.inf)
        weak = candidates < ratio * sigma**2
        if int(weak.sum()) < keep:
            weak = candidates <= candidates.kthvalue(keep).values
        updated = _tail_sigma(cols[weak]) / shrink
        converged = abs(updated - sigma) <= 1e-4 * max(sigma, 1e-6)
        sigma = updated
        if converged:
            break
    return sigma


@torch.no_grad()
def estimate_sigma_on_flat(
    image: torch.Tensor,
    denoised: torch.Tensor,
    patch: int = PATCH,
    fraction: float = FLAT_FRACTION,
    max_patches: int = 250_000,
) -> float:
    """σ of the white Gaussian noise in ``image`` from its patches where ``denoised`` (a denoiser's
    output for it, same shape) is flattest: the ``fraction`` of patches with the least gradient energy
    in ``denoised``, at least :data:`MIN_PATCHES_PER_DIMENSION` per patch dimension.

    The denoiser tells texture from noise far better than the noisy patches' own gradient energy
    (:func:`estimate_sigma`), so texture inflates this estimate less; its flattest areas are also where
    it smoothed the noise most, which makes the estimate read a little low on images with large flat
    regions, and so does clipping in flat areas near black or white, which are not left out.
    Not used by the adaptation: stop 29 tried SURE at the smaller of this and :func:`estimate_sigma`
    on gray images and withdrew it (benchmarks/README.md, "Gray images: SURE at the lower of two
    estimates"); benchmarks/noise_level_accuracy.py measures it.
    """
    x, d = _as_chw(image), _as_chw(denoised)
    if x.shape != d.shape:
        raise ValueError(f"image {tuple(x.shape)} and denoised {tuple(d.shape)} differ in shape")
    p = min(patch, *x.shape[1:])
    stride = _stride(x, p, max_patches)
    cols = F.unfold(x.unsqueeze(0), kernel_size=p, stride=stride)[0].T
    if p < 3:
        return _tail_sigma(cols)
    energy = _gradient_energy(d, p, stride)
    keep = min(cols.shape[0], max(MIN_PATCHES_PER_DIMENSION * cols.shape[1], int(fraction * cols.shape[0])))
    return _tail_sigma(cols[torch.topk(energy, keep, largest=False).indices])


def _as_chw(image: torch.Tensor) -> torch.Tensor:
    x = image.detach().to("cpu", torch.float64)
    return x[0] if x.ndim == 4 else x


def _stride(x: torch.Tensor, p: int, max_patches: int) -> int:
    """The patch stride that keeps at most ``max_patches`` p×p patches of ``x`` (C×H×W)."""
    _, h, w = x.shape
    return max(1, math.ceil(math.sqrt((h - p + 1) * (w - p + 1) / max_patches)))


def _headroom(cols: torch.Tensor, channels: int) -> torch.Tensor:
    """Distance of each patch's nearest channel mean to 0 or 1."""
    level = cols.view(cols.shape[0], channels, -1).mean(dim=2)
    return torch.minimum(level, 1.0 - level).amin(dim=1)


def _tail_sigma(cols: torch.Tensor) -> float:
    """σ from the eigenvalues of the covariance of patch vectors ``cols`` (n × d): see the module notes."""
    centred = cols - cols.mean(dim=0, keepdim=True)
    cov = centred.T @ centred / max(cols.shape[0] - 1, 1)
    eig = torch.linalg.eigvalsh(cov).clamp_min(0)  # ascending
    for i in range(eig.numel(), 0, -1):
        tail = eig[:i]
        tau = tail.mean()
        if int((tail > tau).sum()) == int((tail < tau).sum()):
            return float(tau.sqrt())
    return float(eig[0].sqrt())


def _gradient_energy(x: torch.Tensor, p: int, stride: int) -> torch.Tensor:
    """Sum over each p×p patch (and channel) of squared horizontal and vertical differences inside it."""
    c = x.shape[0]
    dh = (x[:, :, 1:] - x[:, :, :-1]) ** 2  # c × h × (w−1)
    dv = (x[:, 1:, :] - x[:, :-1, :]) ** 2  # c × (h−1) × w
    # A patch at (i, j) holds the horizontal differences of rows i..i+p−1, columns j..j+p−2, and the
    # vertical differences of rows i..i+p−2, columns j..j+p−1: box sums over those windows.
    eh = F.unfold(dh.unsqueeze(0), kernel_size=(p, p - 1), stride=stride)[0].view(c, -1, _count(x, p, stride))
    ev = F.unfold(dv.unsqueeze(0), kernel_size=(p - 1, p), stride=stride)[0].view(c, -1, _count(x, p, stride))
    return eh.sum(dim=(0, 1)) + ev.sum(dim=(0, 1))


def _count(x: torch.Tensor, p: int, stride: int) -> int:
    _, h, w = x.shape
    return ((h - p) // stride + 1) * ((w - p) // stride + 1)


@functools.lru_cache(maxsize=16)
def _weak_texture_calibration(channels: int, p: int) -> tuple[float, float]:
    """Calibration on unit-variance white noise (fixed seed): the :data:`WEAK_TEXTURE_QUANTILE` of
    a patch's gradient energy, and how much selecting patches below it shrinks the estimate
    (the selection favours patches whose noise happens to be weak)."""
    generator = torch.Generator().manual_seed(20130901)
    noise = torch.randn(channels, 256, 256, generator=generator, dtype=torch.float64)
    energy = _gradient_energy(noise, p, 1)
    threshold = float(torch.quantile(energy, WEAK_TEXTURE_QUANTILE))
    cols = F.unfold(noise.unsqueeze(0), kernel_size=p)[0].T
    return threshold, _tail_sigma(cols[energy < threshold]) / _tail_sigma(cols)


def residual_level(noisy: torch.Tensor, denoised: torch.Tensor) -> float:
    """RMS of ``noisy − denoised`` over the unsaturated values ([0, 1] units): the level of the noise a
    pre-trained network removes.

    Camera noise is spatially correlated after demosaicking and processing, and the white-noise
    estimator above reads it 3–17× too low (0.29–0.70 grey levels on central 128² crops of the Nam
    pairs, whose noise has an RMS of 2.4–5.6; 1.9–12 on SIDD, true 8.6–32). A network trained on camera
    noise removes most of it: the packaged CBDNet's residual RMS was 0.64–1.15× the true noise RMS on
    all 37 real pairs of ``shared/data/real`` (benchmarks/README.md, "Real camera noise").
    """
    keep = (noisy != 0.0) & (noisy != 1.0)
    if not bool(keep.any()):
        return 0.0
    return float((noisy - denoised)[keep].double().pow(2).mean().sqrt())
