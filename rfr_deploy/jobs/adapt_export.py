"""adapt-and-export, the main job: adapt the pre-trained network to each input and export the result.

``adapt_and_export`` reads each image, adapts a copy of the pre-trained network to it (or one network
to a whole set with ``per_set``), writes the adapted output image, the adapted weights, the files of
the exporters it is given (:mod:`rfr_deploy.export_protocol`; the formats are in ``exporters``) and a
manifest ``<stem>.json`` that lists every file written with its sha256, the settings and the timings.
Every file is written atomically; the manifest comes last.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.defaults import resolve_defaults
from rfr_deploy.adaptation.loop import AdaptResult, StepInfo, adapt
from rfr_deploy.adaptation.scoring import denoised_per_channel
from rfr_deploy.errors import PartialFailure
from rfr_deploy.export_protocol import Exporter
from rfr_deploy.inference import denoise
from rfr_deploy.jobs.exports import export_again, export_files
from rfr_deploy.jobs.failures import failure_record, stops_the_run
from rfr_deploy.jobs.inputs import (
    ImageJob,
    chroma_source,
    loaded,
    model_sigma,
    set_sigma,
)
from rfr_deploy.jobs.manifest import (
    adaptation_record,
    file_record,
    group_manifest,
    model_record,
    timings,
    write_manifest,
)
from rfr_deploy.jobs.model_cache import ModelCache
from rfr_deploy.jobs.noise_aim import aim_noise
from rfr_deploy.jobs.outputs import ADAPTED_TAG, Leftovers, clear_group, output_bit_depth, write_output
from rfr_deploy.jobs.preparation import describe_plan, noise_storage, prepare_run, set_group_levels
from rfr_deploy.jobs.reference import score_against_reference
from rfr_deploy.jobs.resume import group_stem
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.base import source_level_of, stored_as
from rfr_deploy.noise.build import resolve_noise_kind
from rfr_deploy.noise.correlated import channel_correlation_of
from rfr_deploy.noise.registry import NoiseSettings
from rfr_deploy.progress import QUIET, Progress, Reporter
from rfr_deploy.units import grey_levels
from rfr_deploy.version import __version__


@dataclass
class _GroupRun:
    """One group's adaptation, as the steps after it (outputs, weights, exports, manifest) need it."""

    jobs: list[ImageJob]
    model: nn.Module
    """The pre-trained network."""
    noise: dict[str, Any]
    """The manifest's description of the synthetic noise (:func:`noise_desc`)."""
    config: AdaptConfig
    """The adaptation settings with their defaults resolved."""
    result: AdaptResult
    stem: str
    sigma: float | None
    """The noise level the network was told while adapting (its pseudo-clean targets were made with it)."""
    before_adapting: tuple[float, float]
    """Seconds spent on reading the noise level from the network and on the pseudo-clean targets that
    needed (:func:`~rfr_deploy.jobs.noise_aim.aim_noise`)."""

    def pretrained_output(self, index: int, sigma: float | None, ensemble: bool) -> torch.Tensor | None:
        """Image ``index``'s pre-trained output as the adaptation computed it (its pseudo-clean target),
        where that is the output asked for (same ``sigma``, same ``ensemble``, never refreshed), else None."""
        targets, config = self.result.pseudo_clean, self.config
        if (
            targets is None
            or config.refresh_every
            or config.target_ensemble != ensemble
            or sigma != self.sigma
        ):
            return None
        return targets[index]


def adapt_and_export(
    inputs: list[Path],
    settings: JobSettings,
    config: AdaptConfig,
    reporter: Reporter = QUIET,
    models: ModelCache | None = None,
    exporters: Sequence[Exporter] = (),
    prepared: bool = False,
) -> list[dict[str, Any]]:
    """Adapt and export each input (or the whole set with ``settings.per_set``); returns the manifests,
    each with its ``status``: 'done' (this run), 'exported' (adapted before with these adaptation
    settings: exported again, :mod:`rfr_deploy.jobs.exports`), 'skipped' (done before with these
    settings: the manifest written then) or 'failed' (:mod:`rfr_deploy.jobs.failures`).

    ``exporters`` write the exports of each adapted network, in their order (the CLI builds them from
    ``--format``: ``exporters.registry``). Groups done before with these inputs and settings are skipped
    (:mod:`rfr_deploy.jobs.resume`). ``models`` and ``prepared`` let a worker reuse its networks and its
    exporters, prepared once for the whole run (:mod:`rfr_deploy.jobs.ray_worker`)."""
    ready = prepare_run(inputs, settings, config, reporter, models, exporters, prepared)
    out_dir = ready.out_dir
    shared = dict(
        settings=settings,
        models=ready.models,
        out_dir=out_dir,
        exporters=exporters,
        leftovers=Leftovers(out_dir),
    )
    adapt_one = partial(_run_group, config=config, fingerprint=ready.fingerprint, **shared)
    export_one = partial(export_again, fingerprint=ready.fingerprint, **shared)
    count = sum(e is None or not e.complete for e in ready.earlier)
    results, counts, started = [], dict.fromkeys(("done", "exported", "skipped", "failed"), 0), 0
    for group, earlier in zip(ready.groups, ready.earlier, strict=True):
        if earlier is not None and earlier.complete:
            status, manifest = "skipped", earlier.manifest
        else:
            started += 1
            run = adapt_one if earlier is None else partial(export_one, earlier=earlier.manifest)
            manifest = _run_isolated(run, group, ready.device, reporter, started, count)
            status = "done" if earlier is None else "exported"
            status = "failed" if manifest.get("status") == "failed" else status
        counts[status] += len(group)
        results.append({**manifest, "status": status})
    _report_counts(counts, out_dir, reporter)
    if counts["failed"]:
        raise PartialFailure(
            f"{counts['failed']} of {len(ready.jobs)} image(s) failed (named above); the others are in {out_dir}. "
            "The same command again redoes only what failed",
            results,
        )
    return results


def _report_counts(counts: dict[str, int], out_dir: Path, reporter: Reporter) -> None:
    if counts["skipped"]:
        reporter.note(f"skipped {counts['skipped']} image(s) already done in {out_dir} with these settings")
    if counts["exported"]:
        reporter.note(
            f"exported {counts['exported']} image(s) again: adapted in {out_dir} before with these adaptation "
            "settings, only the export settings changed"
        )


def plan_adapt_and_export(
    inputs: list[Path],
    settings: JobSettings,
    config: AdaptConfig,
    reporter: Reporter = QUIET,
    exporters: Sequence[Exporter] = (),
) -> dict[str, Any]:
    """What :func:`adapt_and_export` would do with these arguments, once every check it makes before
    adapting has passed (``--dry-run``: :func:`~rfr_deploy.jobs.preparation.describe_plan`); writes nothing."""
    run = prepare_run(inputs, settings, config, reporter, None, exporters, prepared=False)
    for group, earlier in zip(run.groups, run.earlier, strict=True):
        if earlier is None or not earlier.complete:  # the σ each would adapt at, estimated as its turn would
            with loaded(group, run.device):
                set_group_levels(group, settings, run.models)
    return describe_plan(run, settings, config, exporters)


def _run_isolated(run, group: list[ImageJob], device, reporter: Reporter, number: int, count: int):
    """``run`` on one group of ``count`` to do (its manifest). Where there are others, a failure is
    named in one line and the run goes on (its record is returned): :mod:`rfr_deploy.jobs.failures`."""
    started = time.perf_counter()
    try:
        with loaded(group, device):
            return run(group, reporter=reporter.within(f" [{number}/{count}]" if count > 1 else ""))
    except Exception as exc:
        if count == 1 or stops_the_run(exc):
            raise
        record = failure_record([str(j.path) for j in group], exc, time.perf_counter() - started)
    reporter.error(record["error"])
    return record


def _run_group(
    group, *, settings, config, models, out_dir, reporter, exporters, fingerprint, leftovers
) -> dict[str, Any]:
    """Adapt one group, write its outputs, weights and exports, and last its manifest (which records
    ``fingerprint``, the run's :class:`~rfr_deploy.jobs.resume.Fingerprint`); ``leftovers``: the output
    folder's temporary files when the run started."""
    started, began = time.perf_counter(), time.time()
    with reporter.bar(None, f"adapting {_label(group)}") as progress:
        run = _adapt_group(group, settings, config, models, progress)
        clear_group(leftovers, run.stem, [j.path.stem for j in group], began)
        files, outputs_seconds, scores = _write_outputs(run, settings, out_dir, progress)
    if scores is not None:
        reporter.result(
            "PSNR against the reference: noisy {noisy[psnr]:.2f} dB, pre-trained {pretrained[psnr]:.2f} dB, "
            "adapted {adapted[psnr]:.2f} dB".format(**scores)
        )
    adapted_sha = _save_adapted_weights(run, settings, out_dir)
    files.append(file_record("weights", out_dir / f"{run.stem}_rfr.safetensors", out_dir))
    t = time.perf_counter()
    exported = export_files(
        run.result.model,
        run.jobs[0],
        run.stem,
        run.noise,
        pretrained=run.model,
        settings=settings,
        out_dir=out_dir,
        reporter=reporter,
        exporters=exporters,
    )
    files.extend(exported)
    export_seconds = time.perf_counter() - t
    manifest = group_manifest(
        fingerprint=fingerprint,
        jobs=group,
        settings=settings,
        device=group[0].noisy.device,
        model=model_record(settings, run.model, adapted_sha),
        noise=run.noise,
        adaptation=adaptation_record(run.config, run.result),
        seconds=timings(
            run.result, outputs_seconds, export_seconds, time.perf_counter() - started, *run.before_adapting
        ),
        scores=scores,
        losses=[round(v, 8) for v in run.result.losses],
        files=files,
    )
    manifest_path = out_dir / f"{run.stem}.json"
    write_manifest(manifest, manifest_path)
    reporter.result(_done_line(run, [f["path"] for f in files], manifest_path.name))
    return manifest


def _done_line(run: _GroupRun, written: list[str], manifest: str) -> str:
    """The result line of an adapted group: its updates, the interpolation chosen and the files written."""
    chosen = run.result.selected_by
    return (
        f"{_label(run.jobs)}: {run.config.steps} step{'' if run.config.steps == 1 else 's'}"
        + f" in {run.result.total_seconds:.1f} s"
        + (f", interpolation {run.result.interpolation:g} ({chosen.upper()})" if chosen else "")
        + f" -> {', '.join(written)}, {manifest}"
    )


def _label(group: list[ImageJob]) -> str:
    return group[0].path.name if len(group) == 1 else f"set of {len(group)} images"


def _adapt_group(group, settings: JobSettings, config: AdaptConfig, models, progress: Progress) -> _GroupRun:
    """Read the group's noise level, build its synthetic noise, resolve the defaults and adapt, moving
    ``progress``."""
    first, images = group[0], [j.noisy for j in group]
    progress.stage("noise level")
    start = time.perf_counter()
    model = set_group_levels(group, settings, models)
    kind = resolve_noise_kind(settings.noise, model.meta.noise)
    sigma = set_sigma(model, group)
    choices = NoiseSettings(
        settings.sigma,
        settings.unknown_sigma,
        tuple(j.sigma_estimate for j in group if j.sigma_estimate is not None),
        (settings.sigma_low, settings.sigma_high),
    )
    names = [j.path.name for j in group]
    stored = (_noise_bit_depth(settings, group), *noise_storage(settings, group, config))
    aim = aim_noise(kind, choices, model, images, sigma, config, names, *stored)
    if aim.told is not None:  # a noise-map network told the aimed levels, here and when it denoises
        for job, level in zip(group, aim.told, strict=True):
            job.sigma_used = level
        sigma = set_sigma(model, group)
    aim_seconds = time.perf_counter() - start
    noise = aim.noise.to(first.noisy.device)
    config = resolve_defaults(config, noise, images, denoised_per_channel(model))

    def on_step(info: StepInfo) -> None:
        progress(info.step, float(info.loss) if info.step % 5 == 0 or info.step == info.total else None)

    result = adapt(
        model, images, noise, config, sigma, on_step, stage=progress.stage, pseudo_clean=aim.targets
    )
    stem = group_stem([j.path for j in group])
    told = {"told_levels": aim.told} if aim.told is not None else {}
    desc = noise_desc(settings, group, kind, noise, {**aim.levels, **told})
    before = (aim_seconds - aim.target_seconds, aim.target_seconds)
    return _GroupRun(group, model, desc, config, result, stem, sigma, before)


def _write_outputs(run: _GroupRun, settings: JobSettings, out_dir: Path, progress: Progress):
    """The adapted output of each image (scored against the reference where one is given); returns
    their manifest records, the seconds the outputs took and the scores."""
    files: list[dict[str, Any]] = []
    seconds, scores = 0.0, None
    for index, job in enumerate(run.jobs):
        stage = f"output of {job.path.name}" if len(run.jobs) > 1 else "output"
        progress.stage(stage)
        t = time.perf_counter()
        sigma = model_sigma(run.model, job)
        ensemble, on_tile = settings.output_ensemble, progress.tiles_of(stage)
        clean = denoise(run.result.model, job.noisy, sigma=sigma, ensemble=ensemble, on_tile=on_tile)
        seconds += time.perf_counter() - t
        if settings.reference:
            progress.stage("scoring against the reference")
            scores = score_against_reference(
                settings.reference,
                run.model,
                job,
                clean,
                sigma=sigma,
                ensemble=settings.output_ensemble,
                bit_depth=output_bit_depth(job.info),
                pretrained=run.pretrained_output(index, sigma, settings.output_ensemble),
            )
        target = write_output(out_dir, job, ADAPTED_TAG, clean)
        files.append(file_record("output", target, out_dir, source=str(job.path)))
    return files, seconds, scores


def _save_adapted_weights(run: _GroupRun, settings: JobSettings, out_dir: Path) -> str:
    """Write ``<stem>_rfr.safetensors`` (metadata naming the source and the inputs); returns its sha256."""
    model = run.model
    meta = dataclasses.replace(
        model.meta,
        source=f"{model.meta.source or settings.model} adapted by rfr-deploy {__version__}",
        notes=f"restore-from-restored on {', '.join(j.path.name for j in run.jobs)}",
    )
    adapted_sha = save_weights(
        out_dir / f"{run.stem}_rfr.safetensors",
        run.result.model.net,
        meta,
        extra={"base_weights_sha256": model.weights_sha256},
    )
    # exports describe the adapted network as its weights file does (and as a later export of it will)
    run.result.model.weights_sha256, run.result.model.meta = adapted_sha, meta
    return adapted_sha


def _noise_bit_depth(settings: JobSettings, group: list[ImageJob]) -> int | None:
    if settings.noise_quantization == "off":
        return None
    depths = {j.info.bit_depth for j in group}
    return min(depths) if depths <= {8, 16} else None


def noise_desc(
    settings: JobSettings,
    group: list[ImageJob],
    kind: str,
    noise: nn.Module,
    levels: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """The manifest's record of the synthetic ``noise``; σ in grey levels, as the command line takes it.
    ``levels``: the levels read from the pre-trained network that the noise aims at, by name
    (:attr:`~rfr_deploy.jobs.noise_aim.AimedNoise.levels`), and ``told_levels``, those a noise-map network
    was told instead of the estimates (:attr:`~rfr_deploy.jobs.noise_aim.AimedNoise.told`)."""
    if settings.sigma is not None:
        mode = "known"
    else:
        mode = settings.unknown_sigma  # camera noise: 'uniform' keeps CBDNet's random levels
    desc: dict[str, Any] = {
        "kind": kind,
        "mode": mode,
        "sigma": grey_levels(settings.sigma),
        "sigma_estimates": [grey_levels(j.sigma_estimate, 3) for j in group],
    }
    drawn = source_level_of(noise)
    if drawn is not None and drawn.random:  # Gaussian noise of random levels
        desc["sigma_range"] = [grey_levels(drawn.low), grey_levels(drawn.high)]
    for name, values in (levels or {}).items():
        desc[name] = [grey_levels(v, 3) for v in values]
    desc["quantized_to_bits"] = _noise_bit_depth(settings, group)
    stored = stored_as(noise)
    subsampled = stored is not None and stored.factors != (1, 1)
    desc["chroma_subsampled"] = list(stored.factors) if subsampled else None
    desc["chroma_read_from"] = chroma_source(group) if subsampled else None
    desc["jpeg_quality"] = stored.jpeg_quality() if stored else None
    correlation = channel_correlation_of(noise)
    desc["channel_correlation"] = None if correlation is None else round(correlation, 4)
    return desc
