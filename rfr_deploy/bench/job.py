"""The whole-job timing of ``rfr-deploy bench``: one generated image through the caller's job runner.

The bench sits beside :mod:`rfr_deploy.jobs` (neither imports the other), so it does not call
adapt-and-export itself: the caller passes a :data:`JobRunner` (``rfr-deploy bench`` passes
:func:`rfr_deploy.cli.bench.run_adapt_and_export`), and the bench writes the image and the random
weights, hands them over in a :class:`JobRequest` and times the call.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.bench.settings import SIGMA, BenchSettings
from rfr_deploy.errors import first_line
from rfr_deploy.images import write_image
from rfr_deploy.models.weights import save_weights
from rfr_deploy.optional import is_installed


@dataclass(frozen=True)
class JobRequest:
    """One whole job to time: the files the bench wrote and how the job is to run."""

    model: str
    """Registered model name."""
    image: Path
    """The generated noisy image."""
    weights: Path
    """The model's random weights."""
    sigma: float
    """Noise level of the image ([0, 1] units)."""
    device: torch.device
    formats: tuple[str, ...]
    """Export formats: ('onnx',) where it is installed and the settings ask for it, else none."""
    output_dir: Path
    config: AdaptConfig


JobRunner = Callable[[JobRequest], dict[str, Any]]
"""Runs one job and returns its manifest (the bench reads ``manifest["adaptation"]["runner"]``)."""


def time_job(
    name: str,
    model,
    noisy: np.ndarray,
    settings: BenchSettings,
    run_job: JobRunner,
    budget: float,
    step_seconds: float | None,
) -> tuple[float | None, str]:
    """Seconds of ``run_job`` on the generated ``noisy`` image with ``model``'s random weights, and the
    report's note on it; skipped when ``step_seconds`` (the estimated time of one update) says the
    job's updates would not fit ``budget``."""
    if step_seconds is not None and settings.job_steps * step_seconds > budget:
        return (
            None,
            f"skipped: ~{settings.job_steps * step_seconds:.0f} s estimated, over the {budget:.0f} s share",
        )
    have_onnx = is_installed("onnx", "onnxruntime")
    formats = ("onnx",) if settings.job_export and have_onnx else ()
    try:
        with tempfile.TemporaryDirectory(prefix="rfr-bench-") as tmp:
            image = write_image(Path(tmp) / "bench_noisy.png", noisy)
            weights = Path(tmp) / f"{name}_random.safetensors"
            save_weights(weights, model.net, model.meta)
            device = next(model.parameters()).device
            config = AdaptConfig(
                steps=settings.job_steps, seed=settings.seed, keep_memory=settings.keep_memory
            )
            request = JobRequest(name, image, weights, SIGMA, device, formats, Path(tmp) / "out", config)
            t0 = time.perf_counter()
            manifest = run_job(request)
            seconds = time.perf_counter() - t0
    except Exception as exc:  # reported in the table
        return None, f"failed: {first_line(exc)}"
    graph = next((f.get("graph") for f in manifest["files"] if f["role"] == "onnx"), None)
    exported = (  # a graph from the cache of an earlier run skips the capture: say which one was timed
        f" + ONNX export (graph {graph})"
        if formats
        else (" (no ONNX export)" if have_onnx else " (no ONNX: not installed)")
    )
    runner = manifest["adaptation"]["runner"]
    return round(seconds, 3), f"{seconds:.2f} s: {settings.job_steps} updates ({runner}), output{exported}"
