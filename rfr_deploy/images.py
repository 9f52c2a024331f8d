"""Reading and writing images, with a clear one-line error for every bad input.

Images travel through the library as float32 ``H×W×C`` arrays in [0, 1]
(``C`` = 1 or 3). Supported on disk: PNG (8/16-bit, via Pillow and pypng),
TIFF (8/16-bit integer and 32-bit float, via tifffile; compressions tifffile cannot
decode without ``imagecodecs`` through Pillow) and JPEG; gray, gray+alpha, RGB, RGBA
and palette images. The decoder follows the file's signature, not its name; alpha is
dropped with a warning, palettes are expanded, EXIF orientation is applied (JPEG,
8-bit PNG, TIFF). Writes go to a temporary name and are renamed into place, so an
interrupted run never leaves a half-written file; a folder's hidden files (such as
the temporary files of a run that was killed) are not read as images.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfr_deploy.errors import ImageError, ResourceError, first_line
from rfr_deploy.files import atomic_write

MAX_PIXELS = 200_000_000
"""Images above this many pixels are refused before decoding (about 2.4 GB as float32 RGB)."""

SUPPORTED_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


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

    @property
    def channels(self) -> int:
        return int(self.pixels.shape[2])

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
        chroma, tables = _jpeg_storage(path) if kind == "jpeg" else (None, None)
        if kind == "tiff":
            array, depth = _read_tiff(path, max_pixels)
        elif kind == "png" and png_depth == 16:
            array, depth = _read_png16(path, max_pixels)
        else:
            array, depth = _read_pillow(path, max_pixels)
    except (ImageError, ResourceError):
        raise
    except MemoryError as exc:
        raise ResourceError(f"{path}: not enough memory to decode this image") from exc
    except Exception as exc:  # decoders raise many types; name the file and the cause in one line
        raise ImageError(f"{path}: cannot decode image ({first_line(exc)})") from exc
    pixels = _to_unit_float(array, depth, path)
    colour = pixels.shape[2] == 3
    return Image(pixels, depth, path, chroma if colour else (1, 1), tables if tables else None)


def write_image(path: str | os.PathLike, pixels: np.ndarray, bit_depth: int = 8) -> Path:
    """Write float ``H×W×C`` pixels in [0, 1] atomically: 8 or 16-bit integers (clipped), or with
    ``bit_depth`` 32 as they are (float32, TIFF only). Formats without the depth take the next one down
    (16-bit for PNG, 8-bit for JPEG and BMP)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ImageError(f"{path}: unsupported output format '{suffix}' (use .png, .tif or .jpg)")
    if bit_depth not in (8, 16, 32):
        raise ImageError(f"{path}: bit depth must be 8, 16 or 32, not {bit_depth}")
    if bit_depth == 32 and suffix not in (".tif", ".tiff"):
        bit_depth = 16
    if bit_depth == 16 and suffix in (".jpg", ".jpeg", ".bmp"):
        bit_depth = 8
    pixels = np.asarray(pixels, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if not np.isfinite(pixels).all():
        raise ImageError(f"{path}: refusing to write an image with non-finite values")
    if bit_depth == 32:
        quantised = np.ascontiguousarray(pixels)
    else:
        scale = 65535.0 if bit_depth == 16 else 255.0
        dtype = np.uint16 if bit_depth == 16 else np.uint8
        quantised = np.clip(np.round(pixels * scale), 0, scale).astype(dtype)
    with atomic_write(path) as tmp:
        if suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, quantised[:, :, 0] if quantised.shape[2] == 1 else quantised)
        elif suffix == ".png" and bit_depth == 16:
            _write_png16(tmp, quantised)
        else:
            from PIL import Image as PILImage

            mode_array = quantised[:, :, 0] if quantised.shape[2] == 1 else quantised
            kwargs = {"quality": 95} if suffix in (".jpg", ".jpeg") else {}
            PILImage.fromarray(mode_array).save(tmp, format=_pil_format(suffix), **kwargs)
    return path


def quantize(pixels: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Round to the grid of an integer image of ``bit_depth`` bits, as a written file would (32: float, as
    it is)."""
    if bit_depth == 32:
        return np.asarray(pixels, dtype=np.float32)
    scale = 65535.0 if bit_depth == 16 else 255.0
    return (np.clip(np.round(np.asarray(pixels) * scale), 0, scale) / scale).astype(np.float32)


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and directories (non-recursive) into a list of image paths, each folder's sorted; a
    file named twice (``a.png ./a.png``, or a file and its folder) is listed once, where it first came."""
    paths: dict[Path, Path] = {}
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if is_listed_image(q))
            if not found:
                raise ImageError(f"{p}: directory holds no images ({', '.join(SUPPORTED_SUFFIXES)})")
            for q in found:
                paths.setdefault(q.resolve(), q)
        else:
            paths.setdefault(p.resolve(), p)
    return list(paths.values())


def is_listed_image(path: Path) -> bool:
    """Whether a folder's ``path`` is one of its images: a file with an image suffix, not hidden (the
    temporary ``.<stem>.*.part.png`` of an interrupted write, macOS's ``._`` files)."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith(".") and path.is_file()


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


def _jpeg_storage(path: Path) -> tuple[tuple[int, int], tuple[tuple[int, ...], ...]]:
    """How a JPEG stored its pixels, from its headers, as its EXIF orientation turns them: the (vertical,
    horizontal) subsampling of a colour file's chroma ((1, 1) for full chroma, gray or unusual layouts),
    and the quantization tables of its luma and chroma (empty for unusual layouts, or unreadable)."""
    from PIL import Image as PILImage

    with PILImage.open(path) as im:
        layers = getattr(im, "layer", None) or []  # (component id, horizontal, vertical, table) each
        orientation = im.getexif().get(0x0112, 1)
        tables = getattr(im, "quantization", None) or {}
        mode = im.mode
    turned = orientation in (5, 6, 7, 8)  # these turn the image by 90°
    if len(layers) != 3 or mode != "RGB":  # gray: its one table
        return (1, 1), _tables(tables, layers[:1], turned) if mode == "L" else ()
    (_, hy, vy, _), *chroma = layers
    factors = {(vy // v, hy // h) for _, h, v, _ in chroma if h and v and hy % h == 0 and vy % v == 0}
    if len(factors) != 1:
        return (1, 1), ()
    fy, fx = factors.pop()
    return ((fx, fy) if turned else (fy, fx)), _tables(tables, layers[:2], turned)


def _tables(tables: dict, layers: list, turned: bool) -> tuple[tuple[int, ...], ...]:
    """The quantization tables ``layers`` use, 64 steps each in row order as the pixels are oriented
    (transposed where the image is turned by 90°); empty where one cannot be read."""
    found = [tuple(int(v) for v in tables.get(int(layer[3])) or ()) for layer in layers]
    if not found or any(len(t) != 64 for t in found):
        return ()
    return tuple(tuple(t[8 * c + r] for r in range(8) for c in range(8)) if turned else t for t in found)


def _read_pillow(path: Path, max_pixels: int) -> tuple[np.ndarray, int]:
    from PIL import Image as PILImage
    from PIL import ImageOps

    PILImage.MAX_IMAGE_PIXELS = None  # we apply our own limit below, with a clearer message
    try:
        im = PILImage.open(path)
    except PILImage.UnidentifiedImageError as exc:
        raise ImageError(f"{path}: not an image file or an unsupported format") from exc
    with im:
        _check_size(path, im.width * im.height, max_pixels)
        mode = im.mode
        try:
            im.load()
        except OSError as exc:
            raise ImageError(f"{path}: image data is truncated or corrupt ({first_line(exc)})") from exc
        ImageOps.exif_transpose(im, in_place=True)  # a camera's rotated JPEG, as viewers show it
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
    return _channels_last(array, path), depth


def _read_png16(path: Path, max_pixels: int) -> tuple[np.ndarray, int]:
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
    return _channels_last(array, path), 16


def _read_tiff(path: Path, max_pixels: int) -> tuple[np.ndarray, int]:
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
    return _channels_last(array, path), depth


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


def _read_pillow_tiff(path: Path, max_pixels: int, cause: Exception, bits: int) -> tuple[np.ndarray, int]:
    """A TIFF of ``bits`` per sample that tifffile cannot decode here, through Pillow where it reads all
    the bits (8-bit, 16-bit gray: it keeps 8 of 16-bit colour); else the one-line error naming the cure."""
    try:
        array, depth = _read_pillow(path, max_pixels)
    except ImageError:
        array, depth = None, 0
    if array is None or depth != bits:
        raise ImageError(f"{path}: cannot decode image ({first_line(cause)}: pip install imagecodecs)")
    return array, depth


def _channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ImageError(f"{path}: expected a 2-D image, got an array of shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"{path}: image has no pixels")
    channels = array.shape[2]
    if channels in (2, 4):
        warnings.warn(f"{path.name}: alpha channel dropped", UserWarning, stacklevel=4)
        array = array[:, :, : channels - 1]
    elif channels not in (1, 3):
        raise ImageError(f"{path}: {channels} channels; expected 1 (gray) or 3 (RGB)")
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


def _write_png16(path: Path, quantised: np.ndarray) -> None:
    import png

    h, w, c = quantised.shape
    writer = png.Writer(width=w, height=h, bitdepth=16, greyscale=(c == 1))
    with open(path, "wb") as fh:
        writer.write(fh, quantised.reshape(h, w * c).tolist())


def _pil_format(suffix: str) -> str:
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}[
        suffix
    ]
