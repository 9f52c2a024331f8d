"""Folders of images (clean test sets, training sets, noisy/clean pairs)."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfr_deploy.errors import ImageError
from rfr_deploy.images import is_listed_image, read_image


@dataclass(frozen=True)
class NamedImage:
    name: str
    pixels: np.ndarray  # H×W×C float32 in [0, 1]


def image_files(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if is_listed_image(p))
    if not files:
        raise ImageError(f"{folder}: no images found")
    return files


def load_folder(
    folder: str | os.PathLike, channels: int | None = None, limit: int | None = None
) -> list[NamedImage]:
    """Every image of ``folder`` (sorted by name), converted to ``channels`` (1: luminance, 3: RGB)."""
    out = []
    for path in image_files(folder)[:limit]:
        pixels = read_image(path).pixels
        out.append(NamedImage(path.stem, convert_channels(pixels, channels) if channels else pixels))
    return out


@dataclass(frozen=True)
class ImageSource:
    """Where one image of a dataset comes from: the clean file and, in a set of real-noise pairs, its noisy
    file. Read with :func:`read_source` when its turn comes, so that a set is never held whole."""

    name: str
    clean: Path
    noisy: Path | None = None


def dataset_sources(folder: str | os.PathLike, pairs: bool, limit: int | None = None) -> list[ImageSource]:
    """The images of ``folder``: clean images (sorted by name), or with ``pairs`` the noisy/clean pairs of
    :func:`pair_sources` (files without a partner left out)."""
    if pairs:
        return pair_sources(folder).sources[:limit]
    files = image_files(folder)
    return [ImageSource(name, p) for name, p in zip(unique_names(files), files, strict=True)][:limit]


def unique_names(files: list[Path]) -> list[str]:
    """The name each of ``files`` is reported under: its stem, or its whole file name where another file
    has the same stem (``a.png`` and ``a.jpg``). Both are kept rather than refused: they are different
    images (a JPEG is not its PNG), so a researcher wants both rows, each telling which it is, while every
    other row keeps the bare stem that tables of earlier runs use."""
    stems = Counter(p.stem for p in files)
    return [p.name if stems[p.stem] > 1 else p.stem for p in files]


@dataclass(frozen=True)
class PairSet:
    """The pairs of a real-noise folder, and the files left out for want of a partner."""

    sources: list[ImageSource]
    noisy_alone: list[Path]
    """Noisy files whose name matches no clean file (left out)."""
    clean_alone: list[Path]
    """Clean files whose name matches no noisy file (left out)."""


def pair_sources(folder: str | os.PathLike) -> PairSet:
    """The noisy/clean pairs of ``folder/noisy`` and ``folder/gt`` (or ``clean``), matched by name after
    removing the ``NOISY_``/``GT_`` style prefixes and suffixes (natural order). Two files of one folder
    with the same name (``1.png``, ``NOISY_1.jpg``) are an :class:`ImageError`: which pair is meant is
    not known."""
    folder = Path(folder)
    noisy_dir = folder / "noisy"
    clean_dir = next((folder / n for n in ("gt", "clean", "GT") if (folder / n).is_dir()), None)
    if not noisy_dir.is_dir() or clean_dir is None:
        raise ImageError(f"{folder}: expected sub-folders 'noisy' and 'gt' (or 'clean')")
    noisy, clean = _by_pair_key(noisy_dir), _by_pair_key(clean_dir)
    keys = sorted(set(noisy) & set(clean), key=_natural)
    if not keys:
        raise ImageError(f"{folder}: no matching noisy/clean file names")
    return PairSet(
        [ImageSource(key, clean[key], noisy[key]) for key in keys],
        [noisy[k] for k in sorted(set(noisy) - set(clean), key=_natural)],
        [clean[k] for k in sorted(set(clean) - set(noisy), key=_natural)],
    )


def _by_pair_key(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in image_files(folder):
        if (other := found.setdefault(_pair_key(path), path)) != path:
            raise ImageError(
                f"{folder}: {other.name} and {path.name} both match the pair name {_pair_key(path)!r}"
            )
    return found


def read_source(source: ImageSource) -> tuple[NamedImage | None, NamedImage]:
    """The (noisy, clean) images of ``source``; noisy is None for a clean image alone."""
    clean = read_image(source.clean).pixels
    if source.noisy is None:
        return None, NamedImage(source.name, clean)
    noisy = read_image(source.noisy).pixels
    if noisy.shape != clean.shape:
        raise ImageError(f"{source.noisy}: shape {noisy.shape} differs from its clean image {clean.shape}")
    return NamedImage(source.name, noisy), NamedImage(source.name, clean)


def load_pairs(folder: str | os.PathLike, limit: int | None = None) -> list[tuple[NamedImage, NamedImage]]:
    """Every noisy/clean pair of ``folder`` (:func:`dataset_sources`), read now."""
    return [read_source(s) for s in dataset_sources(folder, pairs=True, limit=limit)]


def convert_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    if pixels.shape[2] == channels:
        return pixels
    if channels == 1:
        # ITU-R BT.601 luma, as MATLAB's rgb2gray
        return (pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]
    return np.repeat(pixels, 3, axis=2)


def _pair_key(path: Path) -> str:
    stem = path.stem
    for prefix in ("NOISY_", "GT_", "noisy_", "gt_", "clean_"):
        stem = stem.removeprefix(prefix)
    for suffix in ("_NOISY", "_GT", "_noisy", "_noise", "_gt", "_clean", "_real", "_mean"):
        stem = stem.removesuffix(suffix)
    return stem


def _natural(key: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]
