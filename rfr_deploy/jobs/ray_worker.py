"""One Ray task's work: adapt and export one group of inputs into the shared output folder.

The driver (:mod:`rfr_deploy.jobs.distributed`) wraps :func:`run_group` as a Ray task. Each task
writes through the sequential pipeline (:func:`rfr_deploy.jobs.adapt_export.adapt_and_export`) into a
private staging folder ``OUT/.rfr-work/<group>/`` and, once everything is written, renames the
files into ``OUT`` (same file system: each rename is atomic), the manifest last. A worker killed
mid-image therefore leaves nothing in ``OUT`` itself; its staging folder is emptied by the retry
of the same group (Ray's task retries) and removed by the driver at the end of the run (also when
the run is interrupted: it cancels the tasks still working first).

A worker process keeps its pre-trained networks and its exporters, prepared once for the run,
between tasks of the same run: with ``--format engine`` the first image on the worker builds the
base engine and the others refit it (:class:`exporters.engine_plan.EngineRun`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.devices import resolve_device, use_threads
from rfr_deploy.errors import RfrError
from rfr_deploy.export_protocol import Exporter
from rfr_deploy.jobs.adapt_export import adapt_and_export
from rfr_deploy.jobs.failures import failure_record
from rfr_deploy.jobs.model_cache import ModelCache
from rfr_deploy.jobs.outputs import ADAPTED_ROLES, listed_files
from rfr_deploy.jobs.resume import group_stem
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.progress import QUIET

STAGING = ".rfr-work"
"""Folder of ``OUT`` where tasks write before their files are renamed into place."""
OWNER_FILE = "worker.pid"
"""Written first into a task's staging folder: the process that works on the group."""


@dataclass(frozen=True)
class GroupTask:
    """What the driver sends a task: the run it belongs to, its inputs and the run's settings."""

    run_id: str
    paths: tuple[str, ...]
    settings: JobSettings
    config: AdaptConfig
    threads: int = 1
    exporters: tuple[Exporter, ...] = ()
    """The run's exporters; each worker prepares its own copies once for the run."""
    sizes: tuple[tuple[int, int], ...] = ()
    """(H, W) of every image of the run, where an exporter plans the run from them (``needs_sizes``)."""


@dataclass
class _WorkerState:
    run_id: str
    models: ModelCache
    exporters: tuple[Exporter, ...]


_STATE: dict[str, _WorkerState] = {}
"""This process's networks and prepared exporters, for the run it last worked on."""


def staging_dir(out_dir: str | os.PathLike, paths: tuple[str, ...]) -> Path:
    """The group's private folder under ``OUT/.rfr-work``, the same for every attempt."""
    key = hashlib.sha1("\0".join(paths).encode()).hexdigest()[:12]
    return Path(out_dir) / STAGING / f"{group_stem(paths)}-{key}"


def run_group(task: GroupTask) -> dict[str, Any]:
    """Adapt and export one group, or export it again where ``OUT`` holds its adaptation with these
    settings; returns its record (status 'done', 'exported' or 'failed', never raises for bad input)."""
    started = time.perf_counter()
    out_dir = Path(task.settings.output_dir)
    staging = staging_dir(out_dir, task.paths)
    record: dict[str, Any] = {"inputs": list(task.paths), "node": socket.gethostname(), "pid": os.getpid()}
    state = None
    try:
        use_threads(task.threads)
        state = _state_for(task)
        shutil.rmtree(staging, ignore_errors=True)  # what a killed attempt left
        staging.mkdir(parents=True)
        (staging / OWNER_FILE).write_text(str(os.getpid()))
        stage_adaptation(out_dir, staging, task.paths)
        staged = dataclasses.replace(task.settings, output_dir=str(staging))
        paths = [Path(p) for p in task.paths]
        manifests = adapt_and_export(
            paths, staged, task.config, QUIET, models=state.models, exporters=state.exporters, prepared=True
        )
        manifest = publish(staging, out_dir, task.paths)
        record.update(status=manifests[0]["status"], **_describe(manifests[0], manifest))
    except Exception as exc:  # isolate the group: any failure is reported, the run goes on
        record.update(failure_record(task.paths, exc, time.perf_counter() - started))
    finally:
        if state is not None:
            for exporter in state.exporters:  # e.g. a base engine built in staging now lives in OUT
                exporter.moved(staging, out_dir)
        shutil.rmtree(staging, ignore_errors=True)
    record["seconds"] = round(time.perf_counter() - started, 3)
    return record


def stage_adaptation(out_dir: Path, staging: Path, paths: Sequence[str]) -> None:
    """Link the group's manifest in ``OUT`` and the adapted images and weights it lists into ``staging``,
    so that the run there reuses the adaptation where only the exports changed (and else removes the
    links, as a redone group removes its earlier files)."""
    manifest = out_dir / f"{group_stem(paths)}.json"
    adapted = [n for n, role in listed_files(manifest, _stems(paths)).items() if role in ADAPTED_ROLES]
    for name in [manifest.name, *adapted] if adapted else ():
        try:
            os.link(out_dir / name, staging / name)
        except FileNotFoundError:
            return
        except OSError:  # a file system without hard links
            shutil.copy2(out_dir / name, staging / name)


def publish(staging: Path, out_dir: Path, paths: Sequence[str]) -> Path:
    """Rename every file of ``staging`` into ``out_dir``, the manifest last, having removed the group's
    earlier manifest and the files it listed that this run did not write again (an export of a format no
    longer asked for); returns the manifest's path."""
    manifest_name = f"{group_stem(paths)}.json"
    manifest = staging / manifest_name
    if not manifest.is_file():
        raise RfrError(f"{staging}: the group wrote no manifest {manifest_name}")
    files = sorted(p for p in staging.iterdir() if p.is_file() and p not in (manifest, staging / OWNER_FILE))
    written = {p.name for p in files}
    stale = [n for n in listed_files(out_dir / manifest_name, _stems(paths)) if n not in written]
    (out_dir / manifest_name).unlink(
        missing_ok=True
    )  # not to describe the new files should this stop halfway
    for name in stale:
        (out_dir / name).unlink(missing_ok=True)
    for path in [*files, manifest]:
        os.replace(path, out_dir / path.name)
    return out_dir / manifest_name


def _stems(paths: Sequence[str]) -> tuple[str, ...]:
    """The stems a group's files start with: the group's, and each member image's (its adapted image)."""
    return (group_stem(paths), *(Path(p).stem for p in paths))


def _state_for(task: GroupTask) -> _WorkerState:
    state = _STATE.get("current")
    if state is None or state.run_id != task.run_id:
        device = resolve_device(task.settings.device)
        exporters = copy.deepcopy(task.exporters)
        for exporter in exporters:
            exporter.prepare([tuple(s) for s in task.sizes])
        state = _WorkerState(task.run_id, ModelCache.for_settings(task.settings, device), exporters)
        _STATE["current"] = state
    return state


def gain_db(manifest: dict[str, Any]) -> float | None:
    """PSNR gain of the adapted over the pre-trained output, where the run was scored against a reference."""
    scores = manifest.get("scores") or {}
    if "adapted" not in scores or "pretrained" not in scores:
        return None
    return round(scores["adapted"]["psnr"] - scores["pretrained"]["psnr"], 4)


def _describe(manifest: dict[str, Any], manifest_path: Path) -> dict[str, Any]:
    return {
        "device": manifest.get("device"),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES") or None,
        "gain_db": gain_db(manifest),
        "manifest": str(manifest_path),
    }
