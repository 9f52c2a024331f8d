"""``rfr-deploy cache``: what rfr-deploy keeps between runs (:mod:`rfr_deploy.caches`), and clearing it."""

from __future__ import annotations

import math
import time
from datetime import datetime

import click

from rfr_deploy.caches import (
    KINDS,
    LIMIT_VARIABLE,
    CacheEntry,
    cache_limit,
    checked_folder,
    format_bytes,
    in_progress,
    list_entries,
    remove_entry,
)
from rfr_deploy.cli.options import emit_json
from rfr_deploy.errors import ConfigError
from rfr_deploy.files import cache_folder
from rfr_deploy.models.hub import NAMED_WEIGHTS, cache_path, checkpoint_folder

WEIGHTS = "weights"
"""The official weights downloaded by name (``--weights NAME``) into torch's hub cache."""


@click.group("cache", invoke_without_command=True)
@click.pass_context
def command(ctx: click.Context) -> None:
    """List (the default) or clear what rfr-deploy keeps between runs: ONNX graphs, TensorRT engines and
    timing caches (in $RFR_DEPLOY_CACHE_DIR, default ~/.cache/rfr-deploy, trimmed to
    $RFR_DEPLOY_CACHE_SIZE, default 10G), and the official weights downloaded by name."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command)


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with every entry.")
def list_command(as_json: bool) -> None:
    """Show each kind's entries and size, and the downloaded weights."""
    limit = cache_limit()
    checked_folder()
    entries = sorted(list_entries() + downloaded_weights(), key=lambda e: e.last_used)
    if as_json:
        emit_json(
            {
                "folder": str(cache_folder()),
                "limit_bytes": limit,
                "entries": [describe(e) for e in reversed(entries)],  # most recently used first
            }
        )
        return
    shown = "no limit" if limit is None else format_bytes(limit)
    click.echo(f"{cache_folder()} (holds at most {shown}: {LIMIT_VARIABLE})")
    for kind in (*KINDS, WEIGHTS):
        mine = [e for e in entries if e.kind == kind]
        size = format_bytes(sum(e.size for e in mine))
        last = f"   last used {_when(mine[-1].last_used)}" if mine and kind != WEIGHTS else ""
        click.echo(f"  {kind:<17} {_count(mine):>12} {size:>11}{last}")
    click.echo(f"  ({WEIGHTS}: the official weights downloaded by name, in {checkpoint_folder()})")


@command.command("clear")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice([*KINDS, WEIGHTS]),
    help=f"What to clear (repeatable); default every kind but {WEIGHTS}.",
)
@click.option(
    "--unused-days",
    type=click.FloatRange(min=0),
    default=None,
    help="Only entries not used for this many days.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document with the entries removed.")
def clear_command(kinds: tuple[str, ...], unused_days: float | None, quiet: bool, as_json: bool) -> None:
    """Remove cached entries: a later run captures, builds or downloads them again. Files still being
    written (partial files younger than an hour) stay: another process may be writing them."""
    kinds = tuple(dict.fromkeys(kinds)) or tuple(KINDS)  # each kind once, however often it is named
    if unused_days is not None and math.isnan(unused_days):
        raise ConfigError("--unused-days must be a number of days, got nan")
    if unused_days is not None and WEIGHTS in kinds:
        raise ConfigError(f"--unused-days does not apply to {WEIGHTS}: their files do not record use")
    if any(k in KINDS for k in kinds):
        checked_folder()
    entries = list_entries(kinds=[k for k in kinds if k in KINDS])
    entries += downloaded_weights() if WEIGHTS in kinds else []
    now = time.time()
    if unused_days is not None:
        entries = [e for e in entries if e.last_used < now - unused_days * 86400]
    kept = [e for e in entries if in_progress(e, now)]
    entries = [e for e in entries if not in_progress(e, now)]
    freed = sum(remove_entry(e) for e in entries)
    if as_json:
        emit_json(
            {
                "removed": [describe(e) for e in entries],
                "freed_bytes": freed,
                "kept": [describe(e) for e in kept],
            }
        )
    elif not quiet:
        spared = f"; kept {_count(kept)} still being written (partial, under an hour old)" if kept else ""
        click.echo(f"removed {_count(entries)} ({format_bytes(freed)}) of {', '.join(kinds)}{spared}")


def downloaded_weights() -> list[CacheEntry]:
    """The named weights downloaded into torch's hub cache, as entries of kind :data:`WEIGHTS`."""
    found = []
    for weights in NAMED_WEIGHTS.values():
        path = cache_path(weights)
        if path.is_file():
            stat = path.stat()
            found.append(CacheEntry(WEIGHTS, weights.name, (path,), stat.st_size, stat.st_mtime))
    return found


def describe(entry: CacheEntry) -> dict:
    """``entry`` for JSON output."""
    return {
        "kind": entry.kind,
        "key": entry.key,
        "files": [str(p) for p in entry.files],
        "bytes": entry.size,
        "last_used": _when(entry.last_used),
        "partial": entry.partial,
    }


def _count(entries: list[CacheEntry]) -> str:
    return f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}"


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).astimezone().isoformat(timespec="seconds")
