"""The manifest of an adapt-and-export job: what was written, from what, how, and how long it took."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from rfr_deploy.adaptation.loop import AdaptResult
from rfr_deploy.files import sha256_file


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
        "height": job.image.height,
        "width": job.image.width,
        "channels": job.image.channels,
        "bit_depth": job.image.bit_depth,
    }


def timings(result: AdaptResult, outputs: float, export: float, total: float) -> dict[str, float]:
    steps = result.step_seconds
    return {
        "pseudo_clean_s": round(result.target_seconds, 4),
        "adapt_s": round(result.total_seconds, 4),
        "step_mean_s": round(result.mean_step_seconds, 5),
        "step_median_s": round(statistics.median(steps), 5) if steps else 0.0,
        "output_s": round(outputs, 4),
        "export_s": round(export, 4),
        "total_s": round(total, 4),
    }
