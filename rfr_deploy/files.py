"""Files on disk: atomic writes, content hashes and strict JSON text."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rfr_deploy.errors import ConfigError


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file keeps the target's suffix so that format-sniffing writers
    (Pillow, tifffile, onnx) behave as for the real name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".part{path.suffix}"
    fd, tmp_name = tempfile.mkstemp(
        prefix=_temporary_prefix(path.stem, suffix), suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


NAME_MAX = 255
"""The longest file name, in bytes, of the common Linux and macOS file systems."""


def _temporary_prefix(stem: str, suffix: str) -> str:
    """``.<stem>.`` for a temporary name (``mkstemp`` adds 8 characters and ``suffix``), the stem cut short
    where the whole name would pass :data:`NAME_MAX` bytes, although the target's own name fits."""
    room = NAME_MAX - len(b"..") - 8 - len(suffix.encode())
    cut = stem.encode()[:room].decode(errors="ignore")
    return f".{cut}."


def check_output_dir(path: str | os.PathLike) -> Path:
    """``path`` as an output folder that files can be written into, checked before any work.

    The folder itself is created only when the first file is written; here the folder (or, when it
    does not exist yet, its nearest existing parent) must be a folder that a file can be created in.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ConfigError(f"output folder {path} {where}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".rfr-write-check."):
            pass
    except OSError as exc:
        where = "" if existing == path else f": its nearest existing parent {existing} takes no files"
        raise ConfigError(
            f"cannot write into the output folder {path}{where} ({exc.strerror or exc})"
        ) from exc
    return path


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """``path`` (given as ``option``) as a file that can be written, checked before any work: its folder
    as :func:`check_output_dir` checks one."""
    path = Path(path)
    try:
        check_output_dir(path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{option} {path}: {exc}") from exc
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_file_cached(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, read again only when the file's size or modification time has changed."""
    path = Path(path).resolve()
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=512)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def source_digest(paths: Iterable[str | os.PathLike]) -> str:
    """SHA-256 over the contents of the source files at ``paths`` (in name order, locations left out): a
    cache keyed by it misses after any change to that code, released or not."""
    digest = hashlib.sha256()
    for path in sorted({Path(p) for p in paths}, key=lambda p: (p.name, str(p))):
        digest.update(f"{path.name}:{sha256_file_cached(path)}\n".encode())
    return digest.hexdigest()


def cache_folder() -> Path:
    """rfr-deploy's folder of caches: ``$RFR_DEPLOY_CACHE_DIR`` where set, else ``$XDG_CACHE_HOME/rfr-deploy``
    (default ``~/.cache/rfr-deploy``)."""
    if os.environ.get("RFR_DEPLOY_CACHE_DIR"):
        return Path(os.environ["RFR_DEPLOY_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rfr-deploy"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def json_text(data: Any, **options: Any) -> str:
    """``data`` as strict JSON: infinite or NaN numbers (the PSNR of identical images, a score an image
    too small to have) as null, which every JSON parser reads (``json.dumps`` would write ``Infinity``)."""
    return json.dumps(_finite(data), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
