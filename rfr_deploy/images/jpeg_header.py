"""How a JPEG stored its pixels, from its headers: its chroma subsampling and its quantization tables."""

from __future__ import annotations

from pathlib import Path


def read_jpeg_storage(path: Path) -> tuple[tuple[int, int], tuple[tuple[int, ...], ...]]:
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
