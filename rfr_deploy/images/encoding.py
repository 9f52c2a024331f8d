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
from rfr_deploy.images.decoding import Alpha, Extras
from rfr_deploy.images.listing import SUPPORTED_SUFFIXES

ALPHA_SUFFIXES = (".png", ".tif", ".tiff")
"""The output formats that keep an alpha channel."""


def write_image(
    path: str | os.PathLike,
    pixels: np.ndarray,
    bit_depth: int = 8,
    extras: Extras = Extras(),
) -> Path:
    """Write float ``H×W×C`` pixels in [0, 1] atomically: 8 or 16-bit integers (clipped), or with
    ``bit_depth`` 32 as they are (float32, TIFF only). Formats without the depth take the next one down
    (16-bit for PNG, 8-bit for JPEG and BMP). ``extras`` (an input's: :class:`Extras`) go back in where the
    format has room: the alpha as the last channel of a PNG or TIFF, at the same depth (JPEG and BMP drop
    it with a warning), the colour profile into PNG, TIFF and JPEG, the EXIF into PNG and JPEG."""
    path = Path(path)
    suffix = path.suffix.lower()
    bit_depth = _written_depth(path, suffix, bit_depth)
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if not np.isfinite(pixels).all():
        raise ImageError(f"{path}: refusing to write an image with non-finite values")
    alpha = extras.alpha
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
            _write_tiff(tmp, quantised, alpha, extras.icc_profile)
        elif suffix == ".png" and bit_depth == 16:
            _write_png16(tmp, quantised, extras)
        else:
            from PIL import Image as PILImage

            mode_array = quantised[:, :, 0] if quantised.shape[2] == 1 else quantised
            kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
            if suffix != ".bmp":
                kwargs.update(
                    (k, v) for k, v in (("icc_profile", extras.icc_profile), ("exif", extras.exif)) if v
                )
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


def _write_png16(path: Path, quantised: np.ndarray, extras: Extras) -> None:
    """16-bit samples through pypng, which writes no iCCP or eXIf chunk: where there are any, the file is
    written to memory first and they are added after its IHDR."""
    import png

    h, w, c = quantised.shape
    writer = png.Writer(width=w, height=h, bitdepth=16, greyscale=c in (1, 2), alpha=c in (2, 4))
    if not (extras.icc_profile or extras.exif):
        with open(path, "wb") as fh:
            writer.write(fh, quantised.reshape(h, w * c).tolist())
        return
    encoded = io.BytesIO()
    writer.write(encoded, quantised.reshape(h, w * c).tolist())
    header, *rest = png.Reader(bytes=encoded.getvalue()).chunks()
    added = []
    if extras.icc_profile:  # a profile name, compression method 0, the zlib stream
        added.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(extras.icc_profile)))
    if extras.exif:  # the TIFF header onwards, without the "Exif\0\0" of the JPEG form
        added.append((b"eXIf", extras.exif.removeprefix(b"Exif\0\0")))
    with open(path, "wb") as fh:
        png.write_chunks(fh, [header, *added, *rest])


def _pil_format(suffix: str) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}[
        suffix
    ]
