"""adapt-and-export on a Ray cluster: one task per image (per set with ``per_set``), resumable, failures isolated.

The driver lists the work, skips groups already done in ``OUT`` with the same inputs and settings
(:mod:`rfr_deploy.jobs.resume`; a group adapted with the same settings whose exports changed is
exported again by its task), and sends every other group to Ray as one task asking for
``cpus_per_image`` CPUs and ``gpus_per_image`` GPUs (fractions let several small images share a
GPU). Each task (:func:`rfr_deploy.jobs.ray_worker.run_group`) runs the sequential pipeline with the
same settings, so for one seed the files equal the sequential run's (byte for byte at the same
thread count), and writes them into ``OUT`` itself.

Workers write, the driver does not: an adapted network's outputs (image, weights, ONNX model,
engine: up to hundreds of MB a group) would otherwise travel through Ray's object store to one
node and be written by one process, which turns a cluster's parallel writes into one serial
stream and holds every result in the driver's memory. The price is that ``OUT`` must be a folder
every node sees at the same path (NFS, Lustre, a mounted bucket); with ``--ray local`` it is.

A group that fails (unreadable image, any error) is reported in one line and recorded; the others
go on. A worker process that dies is retried by Ray (``max_retries``) and leaves no partial file
in ``OUT`` (the task renames complete files into place). ``OUT/summary.json`` lists every group's
status, time, device and, where a reference was given, its gain; a group a rerun skips keeps what the
summary it replaces said of the run that did it (``done_before``: status, seconds, device, node).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.errors import ConfigError, RfrError, first_line
from rfr_deploy.export_protocol import Exporter
from rfr_deploy.files import atomic_write
from rfr_deploy.images import read_image
from rfr_deploy.jobs.model_cache import ModelCache
from rfr_deploy.jobs.outputs import ADAPTED_TAG, drop_earlier_outputs
from rfr_deploy.jobs.preparation import graph_sizes
from rfr_deploy.jobs.ray_worker import STAGING, GroupTask, gain_db, run_group
from rfr_deploy.jobs.resume import Fingerprint, find_earlier, plan_groups, run_fingerprint
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.models.factory import create_model
from rfr_deploy.optional import import_optional
from rfr_deploy.progress import Reporter

SUMMARY = "summary.json"
COLLECT_SECONDS = 0.5
"""How often the driver collects the tasks that are done (all of them at once)."""


@dataclass(frozen=True)
class RayOptions:
    """How the run uses the cluster; fields are CLI options (``--ray``, ``--cpus-per-image``, ...)."""

    address: str = "local"
    """'local' starts a Ray instance on this machine; anything else is given to ``ray.init(address=...)``
    ('auto', 'ray://head:10001', ...). A Ray instance already started in this process is used as is."""
    cpus_per_image: int = 1
    """CPUs each task asks for; also its PyTorch thread count."""
    gpus_per_image: float | None = None
    """GPUs each task asks for (fractions share a GPU); None: 1 where the cluster has GPUs and the
    device is not 'cpu', else 0."""
    max_retries: int = 3
    """Ray retries of a task whose worker process died."""

    def __post_init__(self) -> None:
        if self.cpus_per_image < 1:
            raise ConfigError(f"--cpus-per-image must be at least 1, got {self.cpus_per_image}")
        if self.gpus_per_image is not None and self.gpus_per_image < 0:
            raise ConfigError(f"--gpus-per-image must be >= 0, got {self.gpus_per_image}")


def adapt_and_export_ray(
    inputs: list[Path],
    settings: JobSettings,
    config: AdaptConfig,
    options: RayOptions,
    reporter: Reporter,
    exporters: Sequence[Exporter] = (),
) -> dict[str, Any]:
    """Run adapt-and-export over Ray; returns the summary (also written to ``OUT/summary.json``).
    ``exporters`` are those of :func:`rfr_deploy.jobs.adapt_export.adapt_and_export`; each task gets a copy."""
    ray = import_optional("ray", "ray", "spread adapt-and-export over a Ray cluster")
    inputs = drop_earlier_outputs(inputs, settings.output_dir, ADAPTED_TAG)
    groups = plan_groups(inputs, settings)
    create_model(settings.model, weights=settings.weights or "default")  # a bad model or weights: fail now
    ModelCache.for_settings(settings, torch.device("cpu")).check_gray_weights()
    fingerprint = run_fingerprint(settings, config, exporters)
    out_dir = Path(settings.output_dir)
    records: dict[int, dict[str, Any]] = {}
    sizes = (
        _run_sizes(inputs, exporters, records, groups, settings.model)
        if any(e.needs_sizes for e in exporters)
        else ()
    )
    todo = _pending(groups, out_dir, fingerprint, records, _worked_before(out_dir))
    progress = RunProgress(sum(len(g) for g in groups), reporter)
    for record in records.values():
        progress.count(record)
    if progress.counts["skipped"]:
        reporter.note(
            f"skipped {progress.counts['skipped']} image(s) already done in {out_dir} with these settings"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    ray_info: dict[str, Any] = {**asdict(options), "cluster": {}}
    try:
        if todo:
            task = GroupTask(
                uuid.uuid4().hex, (), settings, config, options.cpus_per_image, tuple(exporters), sizes
            )
            ray_info.update(_run_tasks(ray, options, task, groups, todo, records, progress))
    finally:  # also on Ctrl-C, once Ray has stopped the tasks: what they staged goes with them
        shutil.rmtree(out_dir / STAGING, ignore_errors=True)
    summary = progress.summary(
        out_dir, fingerprint.settings, ray_info, [records[i] for i in range(len(groups))]
    )
    with atomic_write(out_dir / SUMMARY) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    progress.finish(out_dir / SUMMARY)
    return summary


class RunProgress:
    """Images done / failed / skipped and images per minute, one line per finished group on stderr."""

    def __init__(self, total: int, reporter: Reporter):
        self.total, self.reporter = total, reporter
        self.counts = {"done": 0, "exported": 0, "failed": 0, "skipped": 0}
        self.started = time.perf_counter()

    def count(self, record: dict[str, Any]) -> None:
        self.counts[record["status"]] += len(record["inputs"])
        if record["status"] == "failed":  # shown even with --quiet: the one line naming the image
            self.reporter.error(record["error"])

    def update(self, record: dict[str, Any]) -> None:
        self.count(record)
        finished = sum(self.counts.values())
        name = Path(record["inputs"][0]).name + (
            f" (+{len(record['inputs']) - 1})" if len(record["inputs"]) > 1 else ""
        )
        worked = record["status"] in ("done", "exported")
        where = f" on {record.get('device')} ({record.get('node')})" if worked else ""
        self.reporter.note(
            f"[{finished}/{self.total}] {name}: {record['status']} in {record['seconds']:.1f} s{where}; "
            + self._tally()
        )

    def images_per_minute(self) -> float:
        minutes = (time.perf_counter() - self.started) / 60
        return round(self.counts["done"] / minutes, 3) if minutes > 0 else 0.0

    def summary(self, out_dir: Path, fingerprint: str, ray_info: dict, images: list[dict]) -> dict[str, Any]:
        return {
            "output_dir": str(out_dir),
            "settings_sha256": fingerprint,
            "ray": ray_info,
            "counts": {"total": self.total, **self.counts},
            "seconds": round(time.perf_counter() - self.started, 3),
            "images_per_minute": self.images_per_minute(),
            "images": images,
        }

    def finish(self, summary_path: Path) -> None:
        self.reporter.note(f"{self._tally()} of {self.total} image(s); summary: {summary_path}")

    def _tally(self) -> str:
        c = self.counts
        exported = f"exported again {c['exported']}, " if c["exported"] else ""
        return (
            f"done {c['done']}, {exported}failed {c['failed']}, skipped {c['skipped']}, "
            f"{self.images_per_minute():.1f} images/min"
        )


def _run_sizes(inputs, exporters, records, groups, model: str) -> tuple[tuple[int, int], ...]:
    """The (H, W) ``model``'s graph runs at for every readable input (:func:`graph_sizes`), for the exporters
    that plan the run from them (prepared now, so that a run they cannot export fails before any work);
    unreadable groups fail now."""
    sizes, bad = [], {}
    for path in inputs:
        try:
            image = read_image(path)
            sizes.append((image.height, image.width))
        except RfrError as exc:
            bad[str(path)] = str(exc)
    for i, group in enumerate(groups):
        errors = [bad[p] for p in group if p in bad]
        if errors:
            records[i] = {"inputs": list(group), "status": "failed", "error": errors[0], "seconds": 0.0}
    sizes = graph_sizes(sizes, model)
    for exporter in exporters:
        exporter.prepare(sizes)  # e.g. a user's base engine that misses an image: fail before any work
    return deciding_sizes(sizes)


def deciding_sizes(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The few of ``sizes`` an engine profile depends on (the extremes of height, width and area,
    :func:`exporters.engine_sidecar.compute_profile`), which every task carries instead of every image's
    size (they were all checked by then)."""
    if not sizes:
        return ()
    keys = (lambda s: s[0], lambda s: s[1], lambda s: s[0] * s[1])
    chosen = {pick(sizes, key=key) for key in keys for pick in (min, max)}
    return tuple(sorted(chosen))


def _worked_before(out_dir: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    """What the last summary in ``out_dir`` says of the groups a run worked on (done or exported: its
    status, seconds, device and node), by inputs, for the records of the groups a rerun skips
    (``done_before``), which a skipped record passes on; empty without a readable summary."""
    try:
        images = json.loads((out_dir / SUMMARY).read_text()).get("images", [])
    except (OSError, ValueError, AttributeError):
        return {}
    worked = {}
    for record in images:
        if record.get("status") in ("done", "exported"):
            before = {k: record.get(k) for k in ("status", "seconds", "device", "node")}
        else:
            before = record.get("done_before")
        if before and isinstance(record.get("inputs"), list):
            worked[tuple(record["inputs"])] = before
    return worked


def _pending(
    groups, out_dir: Path, fingerprint: Fingerprint, records: dict[int, dict], worked: dict
) -> list[int]:
    """Indices of the groups to run (to adapt, or to export again: their tasks reuse the adaptation);
    records the skipped ones, with what ``worked`` (:func:`_worked_before`) says of the run that did them."""
    todo = []
    for i, group in enumerate(groups):
        if i in records:
            continue
        earlier = find_earlier(out_dir, group, fingerprint)
        if earlier is None or not earlier.complete:
            todo.append(i)
            continue
        done = earlier.manifest
        records[i] = {
            "inputs": list(group),
            "status": "skipped",
            "seconds": 0.0,
            "device": done.get("device"),
            "gain_db": gain_db(done),
            "manifest": done["manifest"],
        }
        if tuple(group) in worked:
            records[i]["done_before"] = worked[tuple(group)]
    return todo


def _connect(ray, address: str) -> bool:
    """Start or join the cluster; True when this call started Ray (and must shut it down)."""
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot start or reach the Ray cluster at {address!r}: {exc}") from exc
    return True


def _task_gpus(options: RayOptions, settings: JobSettings, cluster: dict[str, float]) -> float:
    """The GPUs each task holds; :class:`ConfigError` where a task would ask for more GPUs or CPUs than the
    cluster has (Ray would wait for them for ever)."""
    cluster_gpus = cluster.get("GPU", 0)
    if settings.device == "cuda" and cluster_gpus == 0:
        raise ConfigError("--device cuda, but the Ray cluster has no GPU")
    if options.cpus_per_image > cluster.get("CPU", 0):
        raise ConfigError(
            f"--cpus-per-image {options.cpus_per_image}, but the Ray cluster has {cluster.get('CPU', 0):g} CPUs"
        )
    if options.gpus_per_image is not None:
        if options.gpus_per_image > 0 and settings.device == "cpu":
            raise ConfigError("--gpus-per-image with --device cpu: the tasks would hold GPUs they do not use")
        if options.gpus_per_image > cluster_gpus:
            raise ConfigError(
                f"--gpus-per-image {options.gpus_per_image:g}, but the Ray cluster has {cluster_gpus:g} GPUs"
            )
        return options.gpus_per_image
    return 1.0 if cluster_gpus > 0 and settings.device != "cpu" else 0.0


def _run_tasks(ray, options: RayOptions, task: GroupTask, groups, todo, records, progress) -> dict:
    """Connect, send one task per group, collect their records; returns the resources used."""
    started = _connect(ray, options.address)
    try:
        cluster = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        gpus = _task_gpus(options, task.settings, cluster)
        remote = ray.remote(run_group).options(
            num_cpus=options.cpus_per_image,
            num_gpus=gpus,
            max_retries=options.max_retries,
            retry_exceptions=False,
        )
        pending = {remote.remote(replace(task, paths=groups[i])): (i, groups[i]) for i in todo}
        try:
            _collect(ray, pending, records, progress)
        except BaseException:  # Ctrl-C, or the driver failing: stop the tasks still working
            for ref in pending:  # those not collected
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()
    return {"gpus_per_image": gpus, "cluster": cluster}


def _collect(ray, pending: dict, records: dict[int, dict], progress: RunProgress) -> None:
    """Wait for every task; a task whose retries ran out (its worker kept dying) is a failed group."""
    waiting = list(pending)
    while waiting:  # all that are done every COLLECT_SECONDS: one wait per task cost O(tasks) each
        ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=COLLECT_SECONDS)
        for ref in ready:
            index, group = pending.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayError as exc:
                error = f"{group[0]}: the worker failed ({type(exc).__name__}: {first_line(exc)})"
                record = {"inputs": list(group), "status": "failed", "error": error, "seconds": 0.0}
            records[index] = record
            progress.update(record)
