"""``rfr-deploy denoise``: the pre-trained network's output for each input, without adaptation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rfr_deploy.devices import resolve_device, use_threads
from rfr_deploy.files import check_output_dir
from rfr_deploy.heap import keep_freed_memory_on
from rfr_deploy.inference import denoise
from rfr_deploy.jobs.inputs import ModelCache, loaded, model_sigma, read_jobs, set_sigma_levels
from rfr_deploy.jobs.outputs import check_distinct_names, drop_earlier_outputs, output_name, write_output
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.progress import QUIET, Reporter
from rfr_deploy.units import grey_levels

DENOISED_TAG = "denoised"
"""What ``rfr-deploy denoise`` adds to an input's stem: ``<stem>_denoised.png``."""


def denoise_files(
    inputs: list[Path],
    settings: JobSettings,
    ensemble: bool = False,
    reporter: Reporter = QUIET,
) -> list[dict[str, Any]]:
    """Plain pre-trained output for each input (``rfr-deploy denoise``); returns one record per input.
    On the CPU the process keeps the memory it frees (:func:`rfr_deploy.heap.keep_freed_memory`)."""
    device = resolve_device(settings.device)
    use_threads(settings.threads)
    out_dir = check_output_dir(settings.output_dir)
    inputs = drop_earlier_outputs(inputs, out_dir, DENOISED_TAG)
    check_distinct_names(((p, output_name(p, DENOISED_TAG)) for p in inputs), out_dir)
    keep_freed_memory_on(device)  # each large image's activations reuse the last one's memory
    jobs = read_jobs(inputs, device, reporter=reporter)
    models = ModelCache(settings.model, settings.weights, device)
    models.load_for(jobs)
    records = []
    for job in jobs:
        model = models.get(job.info.channels)
        with loaded([job], device):  # one image in memory at a time
            # blind networks need no σ
            set_sigma_levels([job], settings.sigma, model, estimate=model.meta.noise_map)
            t = time.perf_counter()
            clean = denoise(model, job.noisy, sigma=model_sigma(model, job), ensemble=ensemble)
            seconds = time.perf_counter() - t
            target = write_output(out_dir, job, DENOISED_TAG, clean)
        records.append(
            {
                "input": str(job.path),
                "output": str(target),
                "model": settings.model,
                "weights_sha256": model.weights_sha256,
                "sigma": grey_levels(settings.sigma),
                "sigma_estimate": grey_levels(job.sigma_estimate, 3),
                "seconds": round(seconds, 4),
            }
        )
        reporter.result(f"{job.path.name} -> {target} ({seconds:.2f} s)")
    return records
