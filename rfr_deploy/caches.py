"""What rfr-deploy keeps between runs in its cache folder, and how the folder stays bounded.

The folder (:func:`rfr_deploy.files.cache_folder`: ``$RFR_DEPLOY_CACHE_DIR``, else
``$XDG_CACHE_HOME/rfr-deploy``) holds one subfolder per kind of entry (:data:`KINDS`): verified ONNX graphs
without their weights (``onnx-graphs``, :mod:`exporters.onnx_graph_cache`), refittable TensorRT base
engines (``tensorrt-engines``, :mod:`exporters.engine_cache`) and TensorRT timing caches
(``tensorrt-timing``). An entry is the files of one key: ``<key>.onnx`` with ``<key>.json``, ``<key>.engine`` with ``<key>.engine.json``, one
``<name>.timing``. A file whose name starts with a dot and ends in ``.part`` and such a suffix's last part
(:func:`rfr_deploy.files.atomic_write`'s temporary names) is a write in progress, or one a killed process left.
Other files in these folders (a README, an editor's backup) are no entries: they are never listed or removed.

Entries are used least-recently-first: a hit touches its files (:func:`mark_used`), and a cache that
stores an entry then trims the whole folder (:func:`trim_cache`) to the size ``RFR_DEPLOY_CACHE_SIZE``
sets (:func:`cache_limit`; default 10 GiB, ``0`` for no limit), oldest entries first, never the one just
stored and never a write younger than an hour (:func:`in_progress`). ``rfr-deploy cache`` lists and clears
the folder, and spares such writes too.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from rfr_deploy.errors import ConfigError, first_line
from rfr_deploy.files import cache_folder

KINDS: dict[str, tuple[str, ...]] = {
    "onnx-graphs": (".onnx", ".json"),
    "tensorrt-engines": (".engine.json", ".engine"),
    "tensorrt-timing": (".timing",),
}
"""Subfolders of the cache folder and the suffixes that follow an entry's key in its file names."""

LIMIT_VARIABLE = "RFR_DEPLOY_CACHE_SIZE"
DEFAULT_LIMIT = 10 * 2**30
PARTIAL_GRACE_SECONDS = 3600.0
"""A partly written file younger than this may still be being written by another process."""

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


@dataclass(frozen=True)
class CacheEntry:
    """The files of one key in one kind's folder."""

    kind: str
    key: str
    files: tuple[Path, ...]
    size: int
    """Bytes of all its files."""
    last_used: float
    """Newest modification time of its files (a hit touches them), seconds since the epoch."""
    partial: bool = False
    """A write in progress, or one that a killed process left behind."""


def kind_folder(kind: str, root: Path | None = None) -> Path:
    """The subfolder of ``kind`` in ``root`` (default: :func:`~rfr_deploy.files.cache_folder`)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown cache kind {kind!r}; the kinds are {', '.join(KINDS)}")
    return (root or cache_folder()) / kind


def list_entries(root: Path | None = None, kinds: Iterable[str] = KINDS) -> list[CacheEntry]:
    """The entries of ``kinds`` in ``root``, least recently used first; files outside the known kinds'
    folders, and files in them that are not entries of their kind, are never listed, so they are never
    trimmed or cleared."""
    entries: list[CacheEntry] = []
    for kind in kinds:
        groups: dict[tuple[str, bool], list[tuple[Path, os.stat_result]]] = {}
        with contextlib.suppress(OSError):
            for path in kind_folder(kind, root).iterdir():
                found = _key(kind, path.name)
                try:  # one stat: a file another process renames or removes meanwhile is no file of an entry
                    info = path.stat() if found is not None else None
                except OSError:
                    continue
                if info is not None and stat.S_ISREG(info.st_mode):
                    groups.setdefault(found, []).append((path, info))
        entries += [_entry(kind, key, partial, files) for (key, partial), files in groups.items()]
    return sorted(entries, key=lambda e: (e.last_used, e.kind, e.key))


def _key(kind: str, name: str) -> tuple[str, bool] | None:
    """The key of the file ``name`` in ``kind``'s folder and whether it is a partial write; None for a
    file that is neither an entry's nor a write of one in progress."""
    if name.startswith("."):
        partial = any(name.endswith(".part." + suffix.rpartition(".")[2]) for suffix in KINDS[kind])
        return (name, True) if partial else None
    for suffix in KINDS[kind]:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], False
    return None


def _entry(kind: str, key: str, partial: bool, files: list[tuple[Path, os.stat_result]]) -> CacheEntry:
    return CacheEntry(
        kind=kind,
        key=key,
        files=tuple(sorted(path for path, _ in files)),
        size=sum(info.st_size for _, info in files),
        last_used=max(info.st_mtime for _, info in files),
        partial=partial,
    )


def in_progress(entry: CacheEntry, now: float | None = None) -> bool:
    """Whether ``entry`` is a partial write younger than :data:`PARTIAL_GRACE_SECONDS`: another process may
    still be writing it, so neither trimming nor ``rfr-deploy cache clear`` removes it."""
    return entry.partial and entry.last_used > (time.time() if now is None else now) - PARTIAL_GRACE_SECONDS


def checked_folder(root: Path | None = None) -> Path:
    """``root`` (default: the cache folder) where it and its kinds' folders can be listed (or do not exist
    yet: an empty cache); a :class:`ConfigError` naming what set it where one is a file or unreadable."""
    root = root or cache_folder()
    origin = "RFR_DEPLOY_CACHE_DIR" if os.environ.get("RFR_DEPLOY_CACHE_DIR") else "the cache folder"
    for folder in (root, *(root / kind for kind in KINDS)):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{origin}: {folder} is a file, not a folder")
        try:
            os.listdir(folder)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ConfigError(f"{origin}: cannot list {folder} ({exc.strerror or first_line(exc)})") from exc
    return root


def mark_used(paths: Iterable[Path]) -> None:
    """Touch ``paths`` (the files of an entry that was just used), so trimming keeps it longest."""
    for path in paths:
        with contextlib.suppress(OSError):
            os.utime(path)


def remove_entry(entry: CacheEntry) -> int:
    """Delete the files of ``entry``; the bytes freed (a file another process removed first counts as 0)."""
    freed = 0
    for path in entry.files:
        with contextlib.suppress(OSError):
            size = path.stat().st_size
            path.unlink()
            freed += size
    return freed


def trim_cache(root: Path, limit: int | None, keep: Iterable[Path] = ()) -> list[CacheEntry]:
    """Remove the least recently used entries of ``root`` until it holds at most ``limit`` bytes (None:
    no limit); entries holding a file of ``keep`` (the one just stored) and writes younger than
    :data:`PARTIAL_GRACE_SECONDS` stay. Returns the entries removed."""
    if limit is None:
        return []
    entries = list_entries(root)
    total = sum(e.size for e in entries)
    kept, now = set(keep), time.time()
    removed = []
    for entry in entries:
        if total <= limit:
            break
        if kept.intersection(entry.files) or in_progress(entry, now):
            continue
        total -= remove_entry(entry)
        removed.append(entry)
    return removed


def cache_limit() -> int | None:
    """Bytes the cache folder may hold, from ``RFR_DEPLOY_CACHE_SIZE`` (default 10 GiB; None for '0')."""
    text = os.environ.get(LIMIT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_LIMIT
    limit = parse_bytes(text, LIMIT_VARIABLE)
    return limit or None


def parse_bytes(text: str, name: str) -> int:
    """``'500M'``, ``'10G'``, ``'2GiB'``, ``'1.5T'`` or a number of bytes, in bytes (K, M, G, T are powers
    of 1024); :class:`ConfigError` naming ``name`` for anything else."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", text.strip().lower())
    if not match:
        raise ConfigError(f"{name} must be a size such as 500M, 10G or 0 (no limit), got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(size: float) -> str:
    """``1536`` → ``'1.5 KiB'``: sizes as people read them."""
    units, step = ("B", "KiB", "MiB", "GiB", "TiB"), 0
    while abs(size) >= 1024 and step < len(units) - 1:
        size, step = size / 1024, step + 1
    return f"{size:.0f} B" if step == 0 else f"{size:.1f} {units[step]}"
