"""A group's exports: written after its adaptation, or again alone where only the export settings changed.

:func:`export_files` runs every exporter of the run on one adapted network. :func:`export_again` is the
resume of a group whose adaptation an earlier run did with the same settings
(:func:`~rfr_deploy.jobs.resume.find_earlier`): it reads the adapted weights that run wrote, removes the
exports its manifest listed, writes this run's, and replaces the manifest with one that lists the same
adapted images and weights, the new exports and the new settings fingerprint.
"""

from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any

from torch import nn

from rfr_deploy.export_protocol import ExportRequest
from rfr_deploy.jobs.inputs import ImageJob, model_sigma
from rfr_deploy.jobs.manifest import file_record, write_manifest
from rfr_deploy.jobs.model_cache import ModelCache
from rfr_deploy.jobs.outputs import ADAPTED_ROLES, ADAPTED_TAG, Leftovers, clear_exports
from rfr_deploy.jobs.preparation import set_group_levels
from rfr_deploy.jobs.resume import Fingerprint
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.models.factory import create_model
from rfr_deploy.progress import Reporter


def export_files(
    model: nn.Module,
    first: ImageJob,
    stem: str,
    noise: dict[str, Any],
    *,
    pretrained: nn.Module,
    settings: JobSettings,
    out_dir: Path,
    reporter: Reporter,
    exporters,
) -> list[dict[str, Any]]:
    """Every exporter's files for the adapted ``model`` of the group named ``stem`` (whose first image is
    ``first``, adapted with ``noise``, the manifest's record), in the exporters' order, as manifest
    records; ``pretrained`` tells the σ a noise-map network is exported with."""
    records: list[dict[str, Any]] = []
    written: dict[str, Path] = {}
    for exporter in exporters:
        request = ExportRequest(
            model=model,
            out_dir=out_dir,
            stem=stem,
            example=first.noisy,
            sigma=model_sigma(pretrained, first),
            noise=noise,
            ensemble=settings.output_ensemble,
            reporter=reporter,
            written=dict(written),
        )
        for exported in exporter.export(request):
            written[exported.role] = Path(exported.path)
            records.append(file_record(exported.role, exported.path, out_dir, **exported.details))
    return records


def export_again(
    group: list[ImageJob],
    earlier: dict[str, Any],
    *,
    settings: JobSettings,
    models: ModelCache,
    out_dir: Path,
    reporter: Reporter,
    exporters,
    fingerprint: Fingerprint,
    leftovers: Leftovers,
) -> dict[str, Any]:
    """Export the group whose ``earlier`` manifest holds an adaptation this run reuses; returns the new
    manifest (see the module's docstring)."""
    started, began = time.perf_counter(), time.time()
    stem = Path(earlier["manifest"]).stem
    kept = [dict(r) for r in earlier["files"] if isinstance(r, dict) and r.get("role") in ADAPTED_ROLES]
    clear_exports(leftovers, stem, [j.path.stem for j in group], began)
    pretrained = set_group_levels(group, settings, models)  # a noise-map network's exported σ
    told = earlier["noise"].get("told_levels")
    if told and pretrained.meta.noise_map:  # told other levels than the estimates when it was adapted
        for job, level in zip(group, told, strict=True):
            job.sigma_used = level / 255
    weights = out_dir / f"{stem}_{ADAPTED_TAG}.safetensors"
    adapted = create_model(pretrained.entry.name, weights=str(weights), device=group[0].noisy.device).eval()
    with reporter.bar(None, f"exporting {group[0].path.name if len(group) == 1 else stem}"):
        exports = export_files(
            adapted,
            group[0],
            stem,
            earlier["noise"],
            pretrained=pretrained,
            settings=settings,
            out_dir=out_dir,
            reporter=reporter,
            exporters=exporters,
        )
    manifest = {k: v for k, v in earlier.items() if k != "manifest"}
    manifest.update(
        settings_sha256=fingerprint.settings,
        exported=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        files=kept + exports,
    )
    manifest["timings"] = {**manifest.get("timings", {}), "export_s": round(time.perf_counter() - started, 4)}
    manifest_path = out_dir / f"{stem}.json"
    write_manifest(manifest, manifest_path)
    names = ", ".join([r["path"] for r in exports] or ["no exports"])
    reporter.result(
        f"{stem}: adapted on {earlier.get('created')}, exported again -> {names}, {manifest_path.name}"
    )
    return manifest
