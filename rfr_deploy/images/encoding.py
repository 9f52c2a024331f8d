"""Writing images: atomically, at the depth asked for where the format has it, alpha included."""

from __future__ import annotations

import io
import os
import warnings
import zlib
from pathlib import Path

import numpy as np

from rfr_deploy.errors import ImageError
from rfr_deploy.files import atomic_write
from rfr_deploy.images.decoding import Alpha
from rfr_deploy.images.listing import SUPPORTED_SUFFIXES

ALPHA_SUFFIXES = (".png", ".tif", ".tiff")
"""The output formats that keep an alpha channel."""


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    bit_depth: int = 8,
    alpha: Alpha | None = None,
    icc_profile: bytes | None = None,
) -> Path:
    """Write float ``H×W×C`` pixels in [0, 1] atomically: 8 or 16-bit integers (clipped), or with
    ``bit_depth`` 32 as they are (float32, TIFF only). Formats without the depth take the next one down
    (16-bit for PNG, 8-bit for JPEG and BMP). ``alpha`` (the input's: :class:`Alpha`) is written as the
    last channel by PNG and TIFF, at the same depth; JPEG and BMP drop it with a warning. ``icc_profile``
    (the input's colour profile) is embedded by PNG, TIFF and JPEG."""
    path = Path(path)
    suffix = path.suffix.lower()
    bit_depth = _written_depth(path, suffix, bit_depth)
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if not np.isfinite(pixels).all():
        raise ImageError(f"{path}: refusing to write an image with non-finite values")
    if alpha is not None and suffix not in ALPHA_SUFFIXES:
        warnings.warn(f"{path.name}: alpha channel dropped ({suffix} has none)", UserWarning, stacklevel=2)
        alpha = None
    if alpha is not None:
        if alpha.values.shape != pixels.shape[:2]:
            raise ImageError(
                f"{path}: alpha of shape {alpha.values.shape} for pixels of shape {pixels.shape}"
            )
        pixels = np.concatenate([pixels, alpha.values[:, :, None]], axis=2)
    quantised = np.ascontiguousarray(pixels) if bit_depth == 32 else _integers(pixels, bit_depth)
    with atomic_write(path) as tmp:
        if suffix in (".tif", ".tiff"):
            _write_tiff(tmp, quantised, alpha, icc_profile)
        elif suffix == ".png" and bit_depth == 16:
            _write_png16(tmp, quantised, icc_profile)
        else:
            from PIL import Image as PILImage

            mode_array = quantised[:, :, 0] if quantised.shape[2] == 1 else quantised
            kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
            if icc_profile and suffix != ".bmp":
                kwargs["icc_profile"] = icc_profile
            PILImage.fromarray(mode_array).save(tmp, format=_pil_format(suffix), **kwargs)
    return path


def _written_depth(path: Path, suffix: str, bit_depth: int) -> int:
    """The depth ``path``'s format writes for ``bit_depth``: the next one down where it has not that one."""
    if suffix not in SUPPORTED_SUFFIXES:
        raise ImageError(f"{path}: unsupported output format '{suffix}' (use .png, .tif or .jpg)")
    if bit_depth not in (8, 16, 32):
        raise ImageError(f"{path}: bit depth must be 8, 16 or 32, not {bit_depth}")
    if bit_depth == 32 and suffix not in (".tif", ".tiff"):
        bit_depth = 16
    if bit_depth == 16 and suffix in (".jpg", ".jpeg", ".bmp"):
        bit_depth = 8
    return bit_depth


def _integers(pixels: np.ndarray, bit_depth: int) -> np.ndarray:
    scale = 65535.0 if bit_depth == 16 else 255.0
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return np.clip(np.round(pixels * scale), 0, scale).astype(dtype)


def _write_tiff(path: Path, samples: np.ndarray, alpha: Alpha | None, icc_profile: bytes | None) -> None:
    """``samples`` (``H×W×C``, alpha last where given) as one contiguous TIFF page, photometric said (tifffile
    will otherwise store float RGB as separate gray pages)."""
    import tifffile

    layout = {"photometric": "rgb" if samples.shape[2] >= 3 else "minisblack", "planarconfig": "contig"}
    if alpha is not None:
        layout["extrasamples"] = ["assocalpha" if alpha.premultiplied else "unassalpha"]
    data = samples[:, :, 0] if samples.shape[2] == 1 else samples
    tifffile.imwrite(path, data, iccprofile=icc_profile, **(layout if data.ndim == 3 else {}))


def quantize(pixels: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Round to the grid of an integer image of ``bit_depth`` bits, as a written file would (32: float, as
    it is)."""
    if bit_depth == 32:
        return np.asarray(pixels, dtype=np.float32)
    scale = 65535.0 if bit_depth == 16 else 255.0
    return (np.clip(np.round(np.asarray(pixels) * scale), 0, scale) / scale).astype(np.float32)


def _write_png16(path: Path, quantised: np.ndarray, icc_profile: bytes | None) -> None:
    import png

    h, w, c = quantised.shape
    writer = png.Writer(width=w, height=h, bitdepth=16, greyscale=c in (1, 2), alpha=c in (2, 4))
    if not icc_profile:
        with open(path, "wb") as fh:
            writer.write(fh, quantised.reshape(h, w * c).tolist())
        return
    encoded = io.BytesIO()  # pypng writes no iCCP chunk: added after IHDR, where PNG wants it
    writer.write(encoded, quantised.reshape(h, w * c).tolist())
    chunks = list(png.Reader(bytes=encoded.getvalue()).chunks())
    iccp = (b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))  # name, compression method 0
    with open(path, "wb") as fh:
        png.write_chunks(fh, [chunks[0], iccp, *chunks[1:]])


def _pil_format(suffix: str) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}[
        suffix
    ]
