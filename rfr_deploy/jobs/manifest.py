"""The manifest of an adapt-and-export job: what was written, from what, how, and how long it took."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import AdaptResult
from rfr_deploy.files import atomic_write, json_text, sha256_file
from rfr_deploy.jobs.inputs import channel_record
from rfr_deploy.version import __version__


def file_record(role: str, path: Path, out_dir: Path, **extra: Any) -> dict[str, Any]:
    path = Path(path)
    try:
        shown = str(path.relative_to(out_dir))
    except ValueError:
        shown = str(path)
    return {"role": role, "path": shown, "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def input_record(job) -> dict[str, Any]:
    return {
        "path": str(job.path),
        "sha256": sha256_file(job.path),
        "height": job.info.height,
        "width": job.info.width,
        "channels": job.info.channels,
        **channel_record(job),
        "bit_depth": job.info.bit_depth,
    }


def timings(
    result: AdaptResult, outputs: float, export: float, total: float, level: float, targets: float
) -> dict[str, float]:
    """The manifest's seconds; ``level``: reading the noise level from the network before adapting,
    ``targets``: the pseudo-clean targets where that computed them (they count in ``pseudo_clean_s``).
    ``adapt_s`` is ``updates_s`` (the updates), the targets adapt computed, and ``scoring_s``: the rest,
    scoring checkpoints and interpolations (SURE, GCV) and setting the runner up."""
    steps = result.step_seconds
    scoring = result.total_seconds - sum(steps) - result.target_seconds
    return {
        "noise_level_s": round(level, 4),
        "pseudo_clean_s": round(result.target_seconds + targets, 4),
        "adapt_s": round(result.total_seconds, 4),
        "updates_s": round(sum(steps), 4),
        "scoring_s": round(max(scoring, 0.0), 4),
        "step_mean_s": round(result.mean_step_seconds, 5),
        "step_median_s": round(statistics.median(steps), 5) if steps else 0.0,
        "output_s": round(outputs, 4),
        "export_s": round(export, 4),
        "total_s": round(total, 4),
    }


def model_record(settings, model, adapted_sha256: str) -> dict[str, Any]:
    """The pre-trained network (name, weights and their sha256, metadata) and the adapted weights' sha256."""
    return {
        "name": settings.model,
        "weights": _weights_name(settings, model.meta.net_channels),
        "weights_sha256": model.weights_sha256,
        "adapted_weights_sha256": adapted_sha256,
        "meta": json.loads(model.meta.to_json()),
    }


def _weights_name(settings, channels: int) -> str:
    """The weights a network of ``channels`` channels came from, as the command line named them."""
    named = settings.gray_weights if channels == 1 and settings.gray_weights else settings.weights
    return named or f"packaged default ({channels}-channel)"


def adaptation_record(config: AdaptConfig, result: AdaptResult) -> dict[str, Any]:
    """The adaptation settings that ran (defaults resolved) and what the run chose."""
    return {
        **dataclasses.asdict(config),
        "interpolation": result.interpolation,  # the weight that ran (chosen by SURE or GCV where one applies)
        "selected_by": result.selected_by,
        "patch_used": result.patch,
        "tile_used": result.tile,  # the tiles each update was computed in where it did not fit whole
        "runner": result.runner,
        "sure_db": {f"{a:g}": round(v, 4) for a, v in result.sure_db.items()},
        "checkpoint_used": result.checkpoint_step,
        "checkpoint_db": {str(m): round(v, 4) for m, v in result.checkpoint_db.items()},
    }


def group_manifest(
    *, fingerprint: str, jobs, settings, device, model, noise, adaptation, seconds, scores, losses, files
) -> dict[str, Any]:
    """The manifest of one group, its keys in their documented order (``seconds``: :func:`timings`;
    ``fingerprint``: the run's :class:`~rfr_deploy.jobs.resume.Fingerprint`)."""
    return {
        "rfr_deploy_version": __version__,
        "settings_sha256": fingerprint.settings,
        "adaptation_sha256": fingerprint.adaptation,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [input_record(j) for j in jobs],
        "model": model,
        "noise": noise,
        "adaptation": adaptation,
        "device": str(device),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
        },
        "per_set": settings.per_set,
        "output_ensemble": settings.output_ensemble,
        "timings": seconds,
        "scores": scores,
        "losses": losses,
        "files": files,
    }


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write ``manifest`` to ``path`` atomically (the group's last file), then record the path in it."""
    with atomic_write(path) as tmp:
        tmp.write_text(json_text(manifest, indent=2))
    manifest["manifest"] = str(path)
