"""What adapt-and-export checks and reads before any adaptation, and the plan ``--dry-run`` prints from it.

:func:`prepare_run` is the start of every run: the exporters' checks, the groups of inputs, the output
folder, the groups done before with the same settings (skipped) or adapted before with the same
adaptation settings (exported again only), every input read once (one held at a
time), the weights of the groups still to do, and the exporters prepared for the run's sizes. A run that
passes it fails later only for what the adaptation itself meets, and an image whose noise level cannot be
estimated: σ is estimated when a group's turn comes (:func:`set_group_levels`).
:func:`describe_plan` turns a prepared run into the record ``--dry-run`` prints instead of adapting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.runners import check_update_settings
from rfr_deploy.devices import resolve_device, use_threads
from rfr_deploy.errors import ConfigError, ImageError, first_line
from rfr_deploy.export_protocol import Exporter
from rfr_deploy.files import check_output_dir
from rfr_deploy.heap import keep_freed_memory_on
from rfr_deploy.jobs.channel_noise import noise_correlation, read_channel_readings
from rfr_deploy.jobs.inputs import (
    ImageJob,
    channel_record,
    check_estimated_level,
    noise_chroma,
    noise_jpeg,
    read_chroma_traces,
    read_jobs,
    set_sigma_levels,
)
from rfr_deploy.jobs.model_cache import ModelCache
from rfr_deploy.jobs.outputs import ADAPTED_TAG, drop_earlier_outputs
from rfr_deploy.jobs.reference import read_reference
from rfr_deploy.jobs.resume import (
    Earlier,
    Fingerprint,
    check_output_names,
    find_earlier,
    plan_groups,
    run_fingerprint,
)
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.models.denoiser import graph_size
from rfr_deploy.models.factory import get_entry
from rfr_deploy.noise.base import gaussian_level_of, stored_as
from rfr_deploy.noise.build import build_noise, resolve_noise_kind
from rfr_deploy.noise.correlated import channel_correlation_of
from rfr_deploy.noise.jpeg import JpegTables
from rfr_deploy.noise.registry import level_source
from rfr_deploy.progress import Reporter
from rfr_deploy.units import grey_levels

PROBE_LEVEL = 25 / 255
"""The level a noise model is built at to ask what it draws, where the job's σ is not known yet."""


@dataclass
class PreparedRun:
    """A run checked and read, ready to adapt its groups."""

    device: torch.device
    out_dir: Path
    fingerprint: Fingerprint
    models: ModelCache
    jobs: list[ImageJob]
    groups: list[list[ImageJob]]
    earlier: list[Earlier | None]
    """Per group, what an earlier run left (:func:`~rfr_deploy.jobs.resume.find_earlier`): a complete
    manifest (skipped), an adaptation to reuse (exported again), or None (adapted)."""

    @property
    def todo(self) -> list[list[ImageJob]]:
        """The groups to adapt."""
        return [g for g, e in zip(self.groups, self.earlier, strict=True) if e is None]


def prepare_run(
    inputs: list[Path],
    settings: JobSettings,
    config: AdaptConfig,
    reporter: Reporter,
    models: ModelCache | None,
    exporters: Sequence[Exporter],
    prepared: bool,
) -> PreparedRun:
    """Everything a run does before its first adaptation (see the module's docstring); ``prepared``:
    the exporters were prepared for the whole run already (a Ray worker's)."""
    device = resolve_device(settings.device)
    use_threads(settings.threads)
    for exporter in exporters:
        exporter.check()  # e.g. TensorRT, Polygraphy and a GPU: fail before any work is done
    check_update_settings(config, device)
    inputs = drop_earlier_outputs(inputs, settings.output_dir, ADAPTED_TAG)
    path_groups = _plan(inputs, settings)
    out_dir = check_output_dir(settings.output_dir)
    # before the first image is read: every phase reuses the memory the last one freed
    keep_freed_memory_on(device, config.keep_memory)
    fingerprint = run_fingerprint(settings, config, exporters)
    earlier = [find_earlier(out_dir, g, fingerprint) for g in path_groups]
    # the groups to adapt or export again: their weights and σ are needed
    open_groups = [g for g, e in zip(path_groups, earlier, strict=True) if e is None or not e.complete]
    check_output_names(out_dir, open_groups)
    todo = {p for g in open_groups for p in g}
    models = models or ModelCache.for_settings(settings, device)
    models.check_gray_weights()
    # one group: its level is the first work anyway, read as its image is, before any output
    jobs = _read_inputs(inputs, settings, models, device, todo, reporter, estimate=len(open_groups) == 1)
    if not prepared:
        for exporter in exporters:
            exporter.prepare(graph_sizes([(j.info.height, j.info.width) for j in jobs], settings.model))
    groups = [jobs] if settings.per_set else [[j] for j in jobs]
    run = PreparedRun(device, out_dir, fingerprint, models, jobs, groups, earlier)
    _check_groups(run.todo, settings, config, models)
    if len(open_groups) == 1:  # its levels were estimated as it was read: checked now
        (group,) = (g for g, e in zip(groups, earlier, strict=True) if e is None or not e.complete)
        set_group_levels(group, settings, models)
    return run


def describe_plan(
    run: PreparedRun, settings: JobSettings, config: AdaptConfig, exporters: Sequence[Exporter]
) -> dict[str, Any]:
    """What the prepared ``run`` would do: per group its images (size, channels, the σ it adapts at, in
    grey levels, and where that comes from), its synthetic noise, and whether it is done already
    (``done``), adapted already with only its exports to write (``to export``) or ``to adapt``."""
    groups, named = [], {}  # the noise's name per kind and storage, built once each
    for group, earlier in zip(run.groups, run.earlier, strict=True):
        record: dict[str, Any] = {"images": [_image_record(j, settings) for j in group]}
        if earlier is None:
            kind = resolve_noise_kind(settings.noise, run.models.for_job(group[0]).meta.noise)
            key = (kind, *noise_storage(settings, group, config))
            if key not in named:
                named[key] = _noise_name(kind, _probe_noise(kind, settings, *key[1:]))
            record.update(status="to adapt", noise=named[key])
        else:
            status = "done" if earlier.complete else "to export"
            record.update(status=status, manifest=earlier.manifest["manifest"])
        groups.append(record)
    return {
        "output_dir": str(run.out_dir),
        "device": str(run.device),
        "formats": [e.format for e in exporters],
        "groups": groups,
    }


def _noise_name(kind: str, noise: nn.Module) -> str:
    """``kind``, and how its ``noise`` is stored like the input's or correlated between the channels like
    its noise (as the run builds it)."""
    stored, correlation = stored_as(noise), channel_correlation_of(noise)
    if correlation is not None:
        return f"{kind} correlated between the channels (ρ = {correlation:.2f})"
    if stored is None:
        return kind
    subsampled = stored.factors != (1, 1)
    name = (
        f"{kind} with its chroma subsampled {stored.factors[0]}×{stored.factors[1]}" if subsampled else kind
    )
    quality = stored.jpeg_quality()
    compressed = f" JPEG-compressed like the file (quality {quality})"
    return name if quality is None else name + (" and" if subsampled else "") + compressed


def _image_record(job: ImageJob, settings: JobSettings) -> dict[str, Any]:
    sigma, source = settings.sigma, "given"
    if sigma is None:
        sigma, source = job.sigma_estimate, "estimated" if job.sigma_estimate is not None else None
    return {
        "path": str(job.path),
        "height": job.info.height,
        "width": job.info.width,
        "channels": job.info.channels,
        **channel_record(job),
        "sigma": grey_levels(sigma, 3),
        "sigma_from": source,
    }


def _read_inputs(
    inputs, settings: JobSettings, models: ModelCache, device, todo: set[str], reporter: Reporter, estimate
) -> list[ImageJob]:
    """Every input read once, before any long work (one image held at a time), and the weights of the
    inputs ``todo``, those of groups not done yet, loaded (and so checked); with ``estimate``, their
    noise levels read too (:func:`_estimate_levels`)."""
    channels: set[int] = set()

    def visit(job: ImageJob) -> None:
        channels.add(job.info.channels)
        if settings.per_set and len(channels) > 1:
            raise ImageError("--per-set needs images with the same number of channels (all gray or all RGB)")
        if settings.reference:  # one input only (plan_groups): its reference must fit before it adapts
            read_reference(settings.reference, job)
        if str(job.path) in todo:
            models.for_job(job)
            if estimate:
                _estimate_levels([job], settings, models)

    # one network for the set: a grey image stored as RGB stays RGB with the others, and so does a colour
    # image whose noise its channels share, unless every colour image goes to the gray network per channel
    per_channel = settings.per_channel if not settings.per_set or settings.per_channel == "on" else "off"
    networks = None if settings.per_set and per_channel != "on" else models
    return read_jobs(inputs, device, visit, reporter, networks, per_channel)


def _plan(inputs: list[Path], settings: JobSettings) -> list[tuple[str, ...]]:
    """The groups of paths to adapt (:func:`~rfr_deploy.jobs.resume.plan_groups`), once the request is checked."""
    if settings.sigma == 0:
        raise ConfigError(
            "--sigma 0: restore-from-restored trains on synthetic noise of the image's level, and at σ = 0 "
            "there is none; give the noise level, or use `rfr-deploy denoise` for a noise-free image"
        )
    return plan_groups(inputs, settings)


def _check_groups(
    groups: list[list[ImageJob]], settings: JobSettings, config: AdaptConfig, models: ModelCache
) -> None:
    """A loss term on the noisy input has the Gaussian noise of one level it needs, and white noise in the
    images (no JPEG with subsampled chroma), before any adaptation."""
    term = noisy_input_term(config)
    kinds = set()
    for group in groups:
        kind = resolve_noise_kind(settings.noise, models.for_job(group[0]).meta.noise)
        if term and noise_chroma(settings, group, pixels=False) != (1, 1):
            raise ConfigError(
                f"{term} needs white Gaussian noise in the input, and {group[0].path.name} is a JPEG whose "
                "chroma was subsampled (its noise is smooth in colour); add --noise-chroma off to treat it as white"
            )
        kinds.add(kind)
    for kind in sorted(kinds):  # one noise model built per kind, not per group
        drawn = gaussian_level_of(_probe_noise(kind, settings))
        if term and (drawn is None or drawn.random):
            noise = (
                f"{kind} noise" if drawn is None else "Gaussian noise of a random σ (--unknown-sigma uniform)"
            )
            raise ConfigError(
                f"{term} needs Gaussian noise of one level (a given or estimated σ), not {noise}"
            )


def noise_storage(
    settings: JobSettings, group: list[ImageJob], config: AdaptConfig
) -> tuple[tuple[int, int], JpegTables | None, float]:
    """How the group's synthetic noise is made like its files' (:func:`~rfr_deploy.noise.build.build_noise_from`):
    the chroma subsampling it copies, the JPEG tables it is compressed with, and, where neither applies,
    its correlation between the channels (:func:`~rfr_deploy.jobs.channel_noise.noise_correlation`). A
    run with a loss term on the noisy input (:func:`noisy_input_term`) keeps white noise: not compressed
    nor correlated, and with only the chroma its files' headers say (which :func:`_check_groups` refuses)."""
    white = noisy_input_term(config) is not None
    chroma = noise_chroma(settings, group, pixels=not white)
    jpeg = None if white else noise_jpeg(settings, group)
    plain = not white and jpeg is None and chroma == (1, 1)
    return chroma, jpeg, noise_correlation(settings, group) if plain else 0.0


def noisy_input_term(config: AdaptConfig) -> str | None:
    """The option of a loss term on the noisy input, which needs white Gaussian noise in it; None without.
    Such a run keeps white synthetic noise where only the pixels suggest subsampled chroma."""
    return "--recorrupted" if config.recorrupted > 0 else "--sure-loss" if config.sure_loss > 0 else None


def set_group_levels(group: list[ImageJob], settings: JobSettings, models: ModelCache) -> nn.Module:
    """Set the σ of the group's images (loaded) when its turn comes: the known level, or the estimate
    where anything uses it, which adapting at an estimated white-noise level needs above 0 (an
    :class:`~rfr_deploy.errors.ImageError` naming the image). Estimating every image of a folder before
    the first adaptation delayed the first output by hours on large photos (8.6 s for one 3000×2000
    image on this project's 2-core machine, busy) and was redone on each resume. Returns the group's
    pre-trained network."""
    model, kind = _estimate_levels(group, settings, models)
    if settings.sigma is None and settings.unknown_sigma == "estimate" and level_source(kind) == "white":
        check_estimated_level(group)
    return model


def _estimate_levels(
    jobs: list[ImageJob], settings: JobSettings, models: ModelCache
) -> tuple[nn.Module, str]:
    """Each job's σ: the known level, or the estimate where anything uses it, and the chroma subsampling
    the pixels of those whose file does not say show (once per job; the jobs loaded). Returns their
    pre-trained network and noise kind."""
    model = models.for_job(jobs[0])
    kind = resolve_noise_kind(settings.noise, model.meta.noise)
    set_sigma_levels(jobs, settings.sigma, model, estimate=_uses_estimate(settings, model, kind))
    if settings.noise_chroma == "auto":
        read_chroma_traces(jobs)
    if settings.noise_channels == "auto" and level_source(kind) == "white":
        read_channel_readings(jobs)
    return model, kind


def _probe_noise(
    kind: str,
    settings: JobSettings,
    chroma: tuple[int, int] = (1, 1),
    jpeg: JpegTables | None = None,
    correlation: float = 0.0,
) -> nn.Module:
    """The noise ``kind`` built from the job's choices (at a stand-in level where σ is to be estimated),
    stored as ``chroma`` and ``jpeg`` say and correlated by ``correlation`` between the channels
    (:func:`~rfr_deploy.noise.build.build_noise`), to ask what it draws; a :class:`ConfigError` where the
    model refuses the choices."""
    estimates = (PROBE_LEVEL,) if settings.sigma is None else ()
    levels = (settings.sigma_low, settings.sigma_high)
    try:
        return build_noise(
            kind,
            settings.sigma,
            settings.unknown_sigma,
            estimates,
            levels,
            chroma=chroma,
            jpeg=jpeg,
            correlation=correlation,
        )
    except ValueError as exc:
        raise ConfigError(f"--noise {kind}: {first_line(exc)}") from None


def _uses_estimate(settings: JobSettings, model: nn.Module, kind: str) -> bool:
    """Whether anything uses the σ estimate: the noise map of the network, or the synthetic noise
    (Gaussian noise at the estimated level, camera noise aimed at it; with uniform Gaussian σ, the
    manifest's record that SURE's level range is read from)."""
    if settings.sigma is not None:
        return False
    return model.meta.noise_map or settings.unknown_sigma == "estimate" or level_source(kind) == "white"


def graph_sizes(sizes: Sequence[tuple[int, int]], model: str) -> list[tuple[int, int]]:
    """The sizes ``model``'s exported graph runs at for images of ``sizes``
    (:func:`~rfr_deploy.models.denoiser.graph_size`), which the exporters plan from."""
    multiple = get_entry(model).pad_multiple
    return [graph_size(h, w, multiple) for h, w in sizes]
