"""The images a job writes next to its manifest: ``<stem>_<tag>.png`` (``.tif`` for TIFF inputs), at the
input's bit depth (8 or 16 bits, float for float TIFFs)."""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from rfr_deploy.errors import ConfigError
from rfr_deploy.files import NAME_MAX
from rfr_deploy.images import Image, write_image
from rfr_deploy.inference import to_pixels
from rfr_deploy.jobs.inputs import ImageInfo, ImageJob

ADAPTED_TAG = "rfr"
"""What adapt-and-export's files add to their group's stem: ``<stem>_rfr.png``, ``.safetensors``, ``.onnx``…"""
ADAPTED_ROLES = ("output", "weights")
"""The manifest roles of the files a group's adaptation writes (the rest are exports, which can be
written again alone)."""


def write_output(out_dir: Path, job: ImageJob, tag: str, clean: torch.Tensor) -> Path:
    """Write ``clean`` (``1×C×H×W``) as ``OUT/<input stem>_<tag><suffix>``, with what the input holds besides
    its pixels (alpha, colour profile, EXIF: the job is loaded); returns its path."""
    target = out_dir / output_name(job.path, tag)
    pixels = to_pixels(clean)
    if job.info.stored_channels is not None:  # a grey image stored as RGB, taken as gray: RGB again
        pixels = np.repeat(pixels, job.info.stored_channels, axis=2)
    write_image(target, pixels, bit_depth=output_bit_depth(job.info), extras=job.image.extras)
    return target


def output_name(path: Path, tag: str) -> str:
    """``<stem>_<tag>.tif`` for a TIFF input, else ``<stem>_<tag>.png``."""
    suffix = ".tif" if path.suffix.lower() in (".tif", ".tiff") else ".png"
    return f"{path.stem}_{tag}{suffix}"


def check_distinct_names(named: Iterable[tuple[object, str]], out_dir: str | os.PathLike) -> None:
    """Refuse, before any work, two inputs (``(input, name of its output)`` pairs) whose outputs would
    take the same name in ``out_dir`` (e.g. ``a/img.png`` and ``b/img.png``, or ``img.png`` and
    ``img.jpg``), and an output name a folder there holds."""
    first: dict[str, object] = {}
    folders = folders_in(Path(out_dir))
    for source, name in named:
        check_name_length(name, source)
        other = first.setdefault(name, source)
        if other != source:
            raise ConfigError(f"{other} and {source} would both write {Path(out_dir) / name}; rename one")
        if name in folders:
            raise taken_by_folder(Path(out_dir) / name)


def check_name_length(name: str, source: object) -> None:
    """Refuse, before any work, an output ``name`` (written for ``source``) longer than a file name may be."""
    size = len(name.encode())
    if size > NAME_MAX:
        raise ConfigError(
            f"{source}: its output {name[:24]}…{name[-24:]} would be a {size}-byte name, over the {NAME_MAX} "
            "bytes a file name may have; rename the input"
        )


def folders_in(out_dir: Path) -> set[str]:
    """The names of the folders in ``out_dir`` (none where it does not exist yet), listed once."""
    return {e.name for e in os.scandir(out_dir) if e.is_dir()} if out_dir.is_dir() else set()


def taken_by_folder(path: Path) -> ConfigError:
    """The error for an output file name ``path`` that a folder holds."""
    return ConfigError(f"{path} is a folder, where this run writes a file; move it or choose another -o")


def drop_earlier_outputs(paths: list[Path], out_dir: str | os.PathLike, tag: str) -> list[Path]:
    """``paths`` but the images an earlier run over them wrote into ``out_dir``: ``<stem>_<tag>.*`` there
    beside an input ``<stem>.*`` (a folder that is its own output folder is read again on the next run;
    ``x_rfr.png`` given without ``x.png`` is kept, to be adapted again). Warns of what it drops."""
    out, stems = Path(out_dir).resolve(), {p.stem for p in paths}
    dropped = [  # the stem tests first: a path is resolved only where they hold
        p
        for p in paths
        if p.stem.endswith(f"_{tag}") and p.stem[: -len(tag) - 1] in stems and p.parent.resolve() == out
    ]
    if dropped:
        warnings.warn(
            f"skipping {len(dropped)} image(s) in {out_dir} that a run over these inputs wrote "
            f"({dropped[0].name}{', …' if len(dropped) > 1 else ''})",
            stacklevel=2,
        )
    skipped = set(dropped)  # thousands of inputs: one lookup each
    return [p for p in paths if p not in skipped]


class Leftovers:
    """The temporary files (``.<name>…part…``) in an output folder, listed once when a run starts: what the
    writes of a killed earlier run left there. Listed once, not per group: a folder of thousands of images
    would otherwise be listed again for each (quadratic in its size)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.names: list[str] = []
        if out_dir.is_dir():
            self.names = [e.name for e in os.scandir(out_dir) if e.name.startswith(".") and ".part" in e.name]

    def clear(self, stem: str, members: Iterable[str], before: float) -> None:
        """Remove those of a group's files (``.<stem>.*.part.json``, ``.<stem>_rfr*.part.*``, and each member
        image's ``.<member>_rfr*.part.*``) last changed before ``before``, a ``time.time()``."""
        patterns = [f".{glob.escape(stem)}.*.part.json"]
        patterns += [f".{glob.escape(name)}_{ADAPTED_TAG}*.part*" for name in (stem, *members)]
        for name in self.names:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                with contextlib.suppress(FileNotFoundError):
                    if (self.out_dir / name).stat().st_mtime < before:
                        (self.out_dir / name).unlink()


def clear_group(leftovers: Leftovers, stem: str, members: Iterable[str], before: float) -> None:
    """Before a group that is redone writes anything into its output folder: remove its manifest, which
    would otherwise describe the new files as its own should the run stop halfway (the resume check
    compares sizes, which a weights file keeps), with the files it lists there (an export of a format this
    run does not write would stay beside the new weights, from other ones), and the group's ``leftovers``."""
    out_dir = leftovers.out_dir
    manifest = out_dir / f"{stem}.json"
    for name in listed_files(manifest, (stem, *members)):
        (out_dir / name).unlink(missing_ok=True)
    manifest.unlink(missing_ok=True)
    leftovers.clear(stem, members, before)


def clear_exports(leftovers: Leftovers, stem: str, members: Iterable[str], before: float) -> None:
    """Before a group whose adaptation is reused is exported again: remove the files its manifest lists
    but its adapted images and weights (:data:`ADAPTED_ROLES`), and the group's ``leftovers``. The manifest
    stays until the new one replaces it: it no longer matches its files, so a run stopped halfway exports
    again."""
    out_dir = leftovers.out_dir
    for name, role in listed_files(out_dir / f"{stem}.json", (stem, *members)).items():
        if role not in ADAPTED_ROLES:
            (out_dir / name).unlink(missing_ok=True)
    leftovers.clear(stem, members, before)


def listed_files(manifest: Path, stems: Iterable[str]) -> dict[str, str]:
    """The files in its own folder that ``manifest`` lists, of the group's ``stems`` (``<stem>_rfr.*``:
    nothing else is ever removed), name → role; none where it is missing or unreadable."""
    try:
        records = json.loads(manifest.read_text()).get("files", [])
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(records, list):
        return {}
    prefixes = tuple(f"{s}_{ADAPTED_TAG}." for s in stems)
    named = {str(r.get("path", "")): str(r.get("role")) for r in records if isinstance(r, dict)}
    return {n: role for n, role in named.items() if n.startswith(prefixes) and Path(n).name == n}


def output_bit_depth(image: Image | ImageInfo) -> int:
    """The input's depth: 16 for 16-bit, 32 for float (a float TIFF, unclipped; 16-bit where the output
    format has no float), else 8."""
    return image.bit_depth if image.bit_depth in (16, 32) else 8
