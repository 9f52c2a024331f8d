"""The images of the inputs a command is given: files, and the image files of folders."""

from __future__ import annotations

import os
from pathlib import Path

from rfr_deploy.errors import ImageError

SUPPORTED_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


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
