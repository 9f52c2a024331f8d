"""``rfr-deploy denoise``: the pre-trained network's output for each input, without adaptation."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from rfr_deploy.devices import resolve_device, use_threads
from rfr_deploy.files import check_output_dir
from rfr_deploy.heap import keep_freed_memory_on
from rfr_deploy.inference import denoise
from rfr_deploy.jobs.inputs import (
    channel_record,
    loaded,
    model_sigma,
    noise_jpeg,
    read_jobs,
    set_sigma_levels,
)
from rfr_deploy.jobs.model_cache import ModelCache
from rfr_deploy.jobs.noise_aim import aim_told_level
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
    models = ModelCache.for_settings(settings, device)
    models.check_gray_weights()
    jobs = read_jobs(inputs, device, reporter=reporter, networks=models, per_channel=settings.per_channel)
    models.load_for(jobs)
    if settings.sigma is not None and not any(models.for_job(j).meta.noise_map for j in jobs):
        warnings.warn(f"--sigma is ignored: {settings.model} takes no noise level", UserWarning, stacklevel=2)
    records = []
    with reporter.bar(len(jobs), f"denoising {len(jobs)} image(s)") as progress:
        for done, job in enumerate(jobs, 1):
            records.append(_denoise_one(job, models, settings, ensemble, (out_dir, device), progress))
            reporter.result(f"{job.path.name} -> {records[-1]['output']} ({records[-1]['seconds']:.2f} s)")
            progress(done)
    return records


def _denoise_one(
    job, models: ModelCache, settings: JobSettings, ensemble: bool, where, progress
) -> dict[str, Any]:
    """Denoise one input and write ``<stem>_denoised.png`` into ``where`` = (output folder, device); returns
    its record. ``progress`` shows the image, and its tiles where it is tiled."""
    out_dir, device = where
    model = models.for_job(job)
    progress.stage(job.path.name)
    with loaded([job], device):  # one image in memory at a time
        # blind networks need no σ
        set_sigma_levels([job], settings.sigma, model, estimate=model.meta.noise_map)
        t = time.perf_counter()
        sigma, on_tile = model_sigma(model, job), progress.tiles_of(job.path.name)
        clean = denoise(model, job.noisy, sigma=sigma, ensemble=ensemble, on_tile=on_tile)
        tables = noise_jpeg(settings, [job]) if sigma is not None and settings.sigma is None else None
        if tables is not None:  # a JPEG: told the level its compression lowered, aimed as adaptation does
            job.sigma_used = aim_told_level(sigma, clean, tables, job.chroma_subsampling())
            clean = denoise(model, job.noisy, sigma=job.sigma_used, ensemble=ensemble, on_tile=on_tile)
        seconds = time.perf_counter() - t
        target = write_output(out_dir, job, DENOISED_TAG, clean)
    return {
        "input": str(job.path),
        "output": str(target),
        "model": settings.model,
        "weights_sha256": model.weights_sha256,
        **channel_record(job),
        "sigma": grey_levels(settings.sigma) if model.meta.noise_map else None,
        "sigma_estimate": grey_levels(job.sigma_estimate, 3),
        "sigma_told": grey_levels(job.sigma_used, 3) if model.meta.noise_map else None,
        "seconds": round(seconds, 4),
    }
