"""Decoding image files into :class:`Image`: float32 pixels in [0, 1], what the file holds besides them
(:class:`Extras`: alpha, colour profile, EXIF) and how a JPEG stored them."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rfr_deploy.errors import ImageError, ResourceError, first_line
from rfr_deploy.images.jpeg_header import read_jpeg_storage

MAX_PIXELS = 200_000_000
"""Images above this many pixels are refused before decoding (about 2.4 GB as float32 RGB)."""


@dataclass(frozen=True)
class Alpha:
    """An image's alpha channel, kept apart from its pixels (no network sees it) and written back into
    its outputs as it came."""

    values: np.ndarray
    """``H×W`` float32 in [0, 1], on the image's grid (exact at its bit depth)."""
    premultiplied: bool = False
    """A TIFF's associated alpha: the colour samples were stored multiplied by it (and are written back so)."""


@dataclass(frozen=True)
class Extras:
    """What a file holds besides its pixels, written back into the outputs as it came (where their format
    has room for it: :func:`~rfr_deploy.images.encoding.write_image`)."""

    alpha: Alpha | None = None
    """The alpha channel; None where there is none."""
    icc_profile: bytes | None = None
    """The embedded ICC colour profile; None where there is none."""
    exif: bytes | None = None
    """The EXIF block (Pillow's ``Exif\\0\\0`` + TIFF header form) of a JPEG or PNG, its orientation tag
    removed where the pixels were turned by it; None where there is none (and for TIFFs)."""


@dataclass(frozen=True)
class Image:
    """A decoded image: float32 ``H×W×C`` pixels in [0, 1] and where they came from."""

    pixels: np.ndarray
    bit_depth: int
    path: Path | None = None
    chroma_subsampling: tuple[int, int] | None = (1, 1)
    """How a JPEG stored the colour: its chroma's (vertical, horizontal) subsampling factors as the pixels
    are oriented, (2, 2) for 4:2:0; (1, 1) for full chroma and gray images; None for a colour image whose
    format does not say (what its pixels show: :func:`rfr_deploy.noise.chroma.find_subsampled_chroma`)."""
    jpeg_tables: tuple[tuple[int, ...], ...] | None = None
    """A JPEG's quantization tables (the luma's, then the chroma's for colour), 64 steps each in row
    order as the pixels are oriented; None for other formats."""
    extras: Extras = Extras()
    """What the file holds besides the pixels (alpha, colour profile, EXIF)."""

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def grey_rgb(self) -> bool:
        """Whether this is a grey image stored as RGB: three equal channels (a JPEG's too, whose chroma
        was a constant)."""
        p = self.pixels
        return (
            p.shape[2] == 3 and np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2])
        )

    def to_gray(self) -> Image:
        """A grey RGB image (:attr:`grey_rgb`) as the gray image it is: one channel, and of a JPEG's tables
        the luma's, which quantized all of it."""
        tables = self.jpeg_tables[:1] if self.jpeg_tables else None
        pixels = np.ascontiguousarray(self.pixels[:, :, :1])
        return dataclasses.replace(self, pixels=pixels, chroma_subsampling=(1, 1), jpeg_tables=tables)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Image:
    """Decode ``path`` into an :class:`Image`, or raise :class:`ImageError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty")
    try:
        kind, png_depth = _signature(path)
        chroma, tables = read_jpeg_storage(path) if kind == "jpeg" else (None, None)
        if kind == "tiff":
            decoded = _read_tiff(path, max_pixels)
        elif kind == "png" and png_depth == 16:
            decoded = _read_png16(path, max_pixels)
        else:
            decoded = _read_pillow(path, max_pixels)
    except (ImageError, ResourceError):
        raise
    except MemoryError as exc:
        raise ResourceError(f"{path}: not enough memory to decode this image") from exc
    except Exception as exc:  # decoders raise many types; name the file and the cause in one line
        raise ImageError(f"{path}: cannot decode image ({first_line(exc)})") from exc
    values = _to_unit_float(decoded.array, decoded.depth, path)
    pixels, alpha = values, None
    if values.shape[2] in (2, 4):  # the last channel is the alpha
        pixels = np.ascontiguousarray(values[:, :, :-1])
        alpha = Alpha(np.ascontiguousarray(values[:, :, -1]), decoded.premultiplied)
    colour = pixels.shape[2] == 3
    extras = Extras(alpha, decoded.icc_profile, decoded.exif)
    return Image(pixels, decoded.depth, path, chroma if colour else (1, 1), tables or None, extras)


class _Decoded(NamedTuple):
    """What a decoder gives: the samples (``H×W×C``, alpha last where there is one) and their depth."""

    array: np.ndarray
    depth: int
    premultiplied: bool = False
    icc_profile: bytes | None = None
    exif: bytes | None = None


# --------------------------------------------------------------------------- decoders


def _signature(path: Path) -> tuple[str, int]:
    """('png', bit depth), ('tiff', 0), ('jpeg', 8) or ('other', 0), from the file's first bytes (a 16-bit
    PNG named .jpg is still a PNG)."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", head[24] if len(head) == 26 else 8  # IHDR's bit depth; a short file: Pillow says why
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic and BigTIFF
        return "tiff", 0
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg", 8
    return "other", 0


def _read_pillow(path: Path, max_pixels: int) -> _Decoded:
    from PIL import Image as PILImage
    from PIL import ImageOps

    PILImage.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clearer message
    try:
        im = PILImage.open(path)
    except PILImage.UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image file or an unsupported format") from exc
    with im:
        _check_size(path, im.width * im.height, max_pixels)
        mode, icc = im.mode, im.info.get("icc_profile") or None
        try:
            im.load()
        except OSError as exc:
            raise ImageError(f"{path}: image data is truncated or corrupt ({first_line(exc)})") from exc
        ImageOps.exif_transpose(im, in_place=True)  # a camera's rotated JPEG, as viewers show it
        exif = im.info.get("exif") or None  # its orientation tag gone where the pixels were turned
        if mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            mode = im.mode
        if mode in ("1", "L", "RGB", "LA", "RGBA"):
            array = np.asarray(im.convert(mode if mode != "1" else "L"))
            depth = 8
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.asarray(im).astype(np.uint16 if mode != "I" else np.int64)
            depth = 16
            if mode == "I" and (array.min() < 0 or array.max() > 65535):
                raise ImageError(f"{path}: 32-bit integer images are not supported")
            array = array.astype(np.uint16)
        elif mode == "CMYK":
            raise ImageError(f"{path}: CMYK images are not supported; convert to RGB first")
        elif mode == "F":
            array = np.asarray(im).astype(np.float32)
            depth = 32
        else:
            raise ImageError(f"{path}: unsupported image mode '{mode}'")
    return _Decoded(_channels_last(array, path), depth, icc_profile=icc, exif=exif)


def _read_png16(path: Path, max_pixels: int) -> _Decoded:
    import png  # pypng

    reader = png.Reader(filename=str(path))
    try:
        width, height, rows, info = reader.asDirect()
        _check_size(path, width * height, max_pixels)
        array = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    except png.FormatError as exc:
        raise ImageError(f"{path}: image data is truncated or corrupt ({first_line(exc)})") from exc
    planes, bits = info["planes"], info["bitdepth"]
    array = array.reshape(height, width, planes)
    if bits < 16:  # an sBIT chunk: pypng shifted the samples down to its depth
        array = np.round(array * (65535 / ((1 << bits) - 1))).astype(np.uint16)
    icc, exif = _png_header_extras(path)
    return _Decoded(_channels_last(array, path), 16, icc_profile=icc, exif=exif)


def _png_header_extras(path: Path) -> tuple[bytes | None, bytes | None]:
    """A PNG's colour profile and EXIF from the chunks before its pixels (pypng skips both; Pillow reads
    them with the header). Its orientation tag is kept: these pixels were not turned."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        return im.info.get("icc_profile") or None, im.info.get("exif") or None


def _read_tiff(path: Path, max_pixels: int) -> _Decoded:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            images = [s for s in tif.series if not getattr(s.keyframe, "is_reduced", False)]  # not thumbnails
            if (len(tif.pages) > 1 and "S" not in axes and series.ndim > 2) or len(images) > 1:
                raise ImageError(
                    f"{path}: multi-page TIFF ({len(tif.pages)} pages); expected a single 2-D image"
                )
            page = tif.pages[0]
            _check_size(path, int(page.imagelength) * int(page.imagewidth), max_pixels)
            try:
                array = series.asarray()
            except ValueError as exc:  # a compression (LZW, JPEG) tifffile decodes only with imagecodecs
                if "imagecodecs" not in str(exc):
                    raise
                return _read_pillow_tiff(path, max_pixels, exc, int(tif.pages[0].bitspersample))
            extra = tuple(int(e) for e in (getattr(page, "extrasamples", ()) or ()))
            inverted = page.photometric == tifffile.PHOTOMETRIC.MINISWHITE
            orientation = page.tags.get("Orientation")
            icc = page.iccprofile or None
    except tifffile.TiffFileError as exc:
        raise ImageError(f"{path}: not a valid TIFF file ({first_line(exc)})") from exc
    if inverted and array.dtype.kind == "u":  # 0 is white: store as 0 is black
        array = np.iinfo(array.dtype).max - array
    if array.ndim == 3 and axes.endswith("SYX"):
        array = np.moveaxis(array, 0, -1)  # planar configuration
    if orientation is not None:
        array = _oriented(array, int(orientation.value))
    if array.dtype == np.uint8:
        depth = 8
    elif array.dtype == np.uint16:
        depth = 16
    elif array.dtype in (np.float32, np.float64, np.float16):
        depth = 32
        array = array.astype(np.float32)
    else:
        raise ImageError(f"{path}: unsupported TIFF sample type {array.dtype}")
    if array.ndim == 3 and array.shape[2] in (2, 4) and len(extra) != 1:
        raise ImageError(
            f"{path}: {array.shape[2]} channels; expected 1 (gray) or 3 (RGB), with an optional alpha"
        )
    alpha = {"premultiplied": extra == (1,)}  # 1: associated alpha
    return _Decoded(_channels_last(array, path), depth, icc_profile=icc, **alpha)


_ORIENTATIONS = {  # a TIFF's Orientation tag (EXIF's): stored rows and columns as a viewer shows them
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}


def _oriented(array: np.ndarray, orientation: int) -> np.ndarray:
    """``array`` (``H×W[×C]``) turned as its Orientation tag says, as Pillow turns JPEGs and other TIFFs."""
    turn = _ORIENTATIONS.get(orientation)
    return array if turn is None else np.ascontiguousarray(turn(array))


def _read_pillow_tiff(path: Path, max_pixels: int, cause: Exception, bits: int) -> _Decoded:
    """A TIFF of ``bits`` per sample that tifffile cannot decode here, through Pillow where it reads all
    the bits (8-bit, 16-bit gray: it keeps 8 of 16-bit colour); else the one-line error naming the cure."""
    try:
        decoded = _read_pillow(path, max_pixels)
    except ImageError:
        decoded = None
    if decoded is None or decoded.depth != bits:
        raise ImageError(f"{path}: cannot decode image ({first_line(cause)}: pip install imagecodecs)")
    return decoded


def _channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    """``array`` as ``H×W×C``: gray or RGB, each with an optional alpha last."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ImageError(f"{path}: expected a 2-D image, got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{path}: image has no pixels")
    channels = array.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f"{path}: {channels} channels; expected 1 (gray) or 3 (RGB), with an optional alpha")
    return array


def _to_unit_float(array: np.ndarray, depth: int, path: Path) -> np.ndarray:
    if depth == 32:
        if not np.isfinite(array).all():
            raise ImageError(f"{path}: image contains non-finite values (NaN or Inf)")
        if array.min() < -0.5 or array.max() > 1.5:
            raise ImageError(
                f"{path}: floating-point image values span [{array.min():.3g}, {array.max():.3g}]; expected [0, 1]"
            )
        return np.ascontiguousarray(array, dtype=np.float32)
    scale = 65535.0 if depth == 16 else 255.0
    return np.ascontiguousarray(array.astype(np.float32) / scale)


def _check_size(path: Path, pixels: int, max_pixels: int) -> None:
    if pixels > max_pixels:
        raise ResourceError(
            f"{path}: image has {pixels / 1e6:.0f} megapixels, above the limit of {max_pixels / 1e6:.0f}; "
            "split it into tiles first"
        )
