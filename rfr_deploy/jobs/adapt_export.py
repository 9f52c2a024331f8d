"""The jobs behind the CLI: denoise files, and adapt-and-export (the main job).

``adapt_and_export`` reads each image, adapts a copy of the pre-trained network
to it (or one network to a whole set with ``per_set``), writes the adapted
output image, the adapted weights, the requested exports and a manifest
``<stem>.json`` that lists every file written with its sha256, the settings and
the timings. Every file is written atomically; the manifest comes last.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig, resolve_defaults
from rfr_deploy.adaptation.loop import StepInfo, adapt
from rfr_deploy.devices import resolve_device
from rfr_deploy.errors import ConfigError, ImageError
from rfr_deploy.files import atomic_write, check_output_dir
from rfr_deploy.images import Image, write_image
from rfr_deploy.inference import denoise, to_pixels
from rfr_deploy.jobs.inputs import (
    ImageJob,
    ModelCache,
    check_estimated_level,
    model_sigma,
    read_jobs,
    set_sigma,
    set_sigma_levels,
)
from rfr_deploy.jobs.manifest import file_record, input_record, timings
from rfr_deploy.jobs.reference import score_against_reference
from rfr_deploy.jobs.resume import completed_manifest, group_stem, settings_fingerprint
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.base import grey_levels
from rfr_deploy.noise.build import build_noise, resolve_noise_kind
from rfr_deploy.noise.registry import UnknownSigma
from rfr_deploy.progress import QUIET, Reporter
from rfr_deploy.version import __version__

EXPORT_FORMATS = ("onnx", "engine")


@dataclass
class JobSettings:
    """Everything of a job that is not an adaptation hyper-parameter; fields are CLI options."""

    model: str = "dncnn"
    weights: str | None = None
    """Weights file; None uses the packaged default for the image's channel count."""
    noise: str = "auto"
    """A registered noise model; 'auto': the one the weights were trained on (CBDNet's camera model),
    Gaussian otherwise."""
    sigma: float | None = None
    """Known noise level, [0, 1] units (the command line's grey levels / 255); None means unknown."""
    unknown_sigma: UnknownSigma = "estimate"
    """With unknown σ: 'estimate' adapts with Gaussian noise at the estimated level,
    'uniform' with σ drawn uniformly from [sigma_low, sigma_high] (the paper's choice)."""
    sigma_low: float = 0.0
    sigma_high: float = 50 / 255
    device: str = "auto"
    output_dir: str = "rfr_out"
    formats: tuple[str, ...] = ()
    per_set: bool = False
    output_ensemble: bool = False
    engine_from: str | None = None
    engine_min_size: str | None = None
    """Smallest H×W (e.g. '64x64') the TensorRT engine's optimisation profile accepts; default from the inputs."""
    engine_max_size: str | None = None
    """Largest H×W the engine accepts (e.g. '2048x2048'), so one engine serves many image sizes."""
    timing_cache: str | None = None
    """TensorRT timing cache file, reused across builds."""
    onnx_opset: int = 18
    precision: Literal["fp32", "fp16"] = "fp32"
    noise_quantization: Literal["auto", "off"] = "auto"
    """'auto': synthetic noisy images are clipped and rounded like the input file (8/16-bit inputs);
    'off': unclipped noise (right for float inputs that were never clipped)."""
    reference: str | None = None
    """Clean image to score against (PSNR/SSIM of noisy, pre-trained and adapted outputs); one input only."""

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in EXPORT_FORMATS]
        if unknown:
            raise ConfigError(
                f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(EXPORT_FORMATS)}"
            )
        levels = {"sigma": self.sigma, "sigma-low": self.sigma_low, "sigma-high": self.sigma_high}
        for option, value in levels.items():
            if value is not None and not (0 <= value <= 1):
                raise ConfigError(f"--{option} must be within [0, 255] grey levels, got {grey_levels(value)}")
        if self.engine_from and "engine" not in self.formats:
            self.formats = (*self.formats, "engine")


def denoise_files(
    inputs: list[Path],
    settings: JobSettings,
    ensemble: bool = False,
    reporter: Reporter = QUIET,
) -> list[dict[str, Any]]:
    """Plain pre-trained output for each input (``rfr-deploy denoise``)."""
    device = resolve_device(settings.device)
    out_dir = check_output_dir(settings.output_dir)
    jobs = read_jobs(inputs, device)
    models = ModelCache(settings.model, settings.weights, device)
    models.load_for(jobs)
    records = []
    for job in jobs:
        model = models.get(job.image.channels)
        set_sigma_levels([job], settings.sigma, estimate=model.meta.noise_map)  # blind networks need no σ
        t = time.perf_counter()
        clean = denoise(model, job.noisy, sigma=model_sigma(model, job), ensemble=ensemble)
        seconds = time.perf_counter() - t
        target = out_dir / f"{job.path.stem}_denoised{_output_suffix(job.path)}"
        write_image(target, to_pixels(clean), bit_depth=_bit_depth(job.image))
        records.append(
            {
                "input": str(job.path),
                "output": str(target),
                "model": settings.model,
                "weights_sha256": model.weights_sha256,
                "sigma": _grey(settings.sigma),
                "sigma_estimate": _grey(job.sigma_estimate, 3),
                "seconds": round(seconds, 4),
            }
        )
        reporter.result(f"{job.path.name} -> {target} ({seconds:.2f} s)")
    return records


def adapt_and_export(
    inputs: list[Path],
    settings: JobSettings,
    config: AdaptConfig,
    reporter: Reporter = QUIET,
    models: ModelCache | None = None,
    engines=None,
) -> list[dict[str, Any]]:
    """Adapt and export each input (or the whole set with ``settings.per_set``); returns the manifests.
    Groups done before with these inputs and settings are skipped (:mod:`rfr_deploy.jobs.resume`);
    ``models`` and ``engines`` let a worker reuse its networks and engine run (:mod:`rfr_deploy.jobs.ray_worker`)."""
    device = resolve_device(settings.device)
    if "engine" in settings.formats:
        from exporters.tensorrt_engine import check_engine_support

        check_engine_support()  # TensorRT, Polygraphy and a GPU: fail before any work is done
    if settings.sigma == 0:
        raise ConfigError(
            "--sigma 0: restore-from-restored trains on synthetic noise of the image's level, and at σ = 0 "
            "there is none; give the noise level, or use `rfr-deploy denoise` for a noise-free image"
        )
    if settings.reference and (len(inputs) != 1 or settings.per_set):
        raise ConfigError("--reference scores a single input image; give exactly one input without --per-set")
    out_dir = check_output_dir(settings.output_dir)
    jobs = read_jobs(inputs, device)
    if settings.per_set and len({j.image.channels for j in jobs}) > 1:
        raise ImageError("--per-set needs images with the same number of channels (all gray or all RGB)")
    models = models or ModelCache(settings.model, settings.weights, device)
    models.load_for(jobs)
    if engines is None and "engine" in settings.formats:
        engines = _engine_run(settings, jobs)
    groups = [jobs] if settings.per_set else [[j] for j in jobs]
    for group in groups:
        model = models.get(group[0].image.channels)
        kind = resolve_noise_kind(settings.noise, model.meta.noise)
        set_sigma_levels(group, settings.sigma, estimate=_uses_estimate(settings, model, kind))
        if settings.sigma is None and settings.unknown_sigma == "estimate" and kind == "gaussian":
            check_estimated_level(group)
    manifests, fingerprint, skipped = [], settings_fingerprint(settings, config), 0
    for group in groups:
        done = completed_manifest(out_dir, [j.path for j in group], fingerprint)
        if done is not None:
            manifests.append(done)
            skipped += len(group)
            continue
        manifests.extend(_run_group(group, settings, config, models, out_dir, reporter, engines))
    if skipped:
        reporter.note(f"skipped {skipped} image(s) already done in {out_dir} with these settings")
    return manifests


def _uses_estimate(settings: JobSettings, model: nn.Module, kind: str) -> bool:
    """Whether anything uses the σ estimate: the noise map of the network, or the synthetic noise
    (Gaussian noise at the estimated level, camera noise aimed at it; with uniform Gaussian σ, the
    manifest's record that SURE's level range is read from)."""
    if settings.sigma is not None:
        return False
    return model.meta.noise_map or settings.unknown_sigma == "estimate" or kind == "gaussian"


def _grey(sigma: float | None, digits: int = 9) -> float | None:
    """σ as manifests and records report it: grey levels."""
    return None if sigma is None else grey_levels(sigma, digits)


def _run_group(group, settings, config, models, out_dir, reporter, engines=None) -> list[dict[str, Any]]:
    started = time.perf_counter()
    fingerprint = settings_fingerprint(settings, config)
    first = group[0]
    model = models.get(first.image.channels)
    device = first.noisy.device
    kind = resolve_noise_kind(settings.noise, model.meta.noise)
    noise = build_noise(
        kind,
        settings.sigma,
        settings.unknown_sigma,
        [j.sigma_estimate for j in group if j.sigma_estimate is not None],
        (settings.sigma_low, settings.sigma_high),
        bit_depth=_noise_bit_depth(settings, group),
    ).to(device)
    config = resolve_defaults(config, noise, [j.noisy for j in group])
    sigma = model_sigma(model, first) if len(group) == 1 else set_sigma(model, group)
    label = first.path.name if len(group) == 1 else f"set of {len(group)} images"
    with reporter.bar(config.steps, f"adapting {label}") as update:

        def on_step(info: StepInfo) -> None:
            update(info.step, float(info.loss) if info.step % 5 == 0 or info.step == info.total else None)

        result = adapt(model, [j.noisy for j in group], noise, config, sigma=sigma, callback=on_step)

    stem = group_stem([j.path for j in group])
    files: list[dict[str, Any]] = []
    outputs_seconds = 0.0
    scores = None
    for job in group:
        t = time.perf_counter()
        clean = denoise(
            result.model, job.noisy, sigma=model_sigma(model, job), ensemble=settings.output_ensemble
        )
        outputs_seconds += time.perf_counter() - t
        if settings.reference:
            scores = score_against_reference(
                settings.reference,
                model,
                job,
                clean,
                sigma=model_sigma(model, job),
                ensemble=settings.output_ensemble,
                bit_depth=_bit_depth(job.image),
            )
            reporter.result(
                "PSNR against the reference: noisy {noisy[psnr]:.2f} dB, pre-trained {pretrained[psnr]:.2f} dB, "
                "adapted {adapted[psnr]:.2f} dB".format(**scores)
            )
        target = out_dir / f"{job.path.stem}_rfr{_output_suffix(job.path)}"
        write_image(target, to_pixels(clean), bit_depth=_bit_depth(job.image))
        files.append(file_record("output", target, out_dir, source=str(job.path)))

    meta = dataclasses.replace(
        model.meta,
        source=f"{model.meta.source or settings.model} adapted by rfr-deploy {__version__}",
        notes=f"restore-from-restored on {', '.join(j.path.name for j in group)}",
    )
    weights_path = out_dir / f"{stem}_rfr.safetensors"
    adapted_sha = save_weights(
        weights_path, result.model.net, meta, extra={"base_weights_sha256": model.weights_sha256}
    )
    result.model.weights_sha256 = adapted_sha
    files.append(file_record("weights", weights_path, out_dir))

    t = time.perf_counter()
    files.extend(
        _export(
            result.model, settings, out_dir, stem, first, noise_desc(settings, group, kind), reporter, engines
        )
    )
    export_seconds = time.perf_counter() - t

    manifest = {
        "rfr_deploy_version": __version__,
        "settings_sha256": fingerprint,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [input_record(j) for j in group],
        "model": {
            "name": settings.model,
            "weights": settings.weights or f"packaged default ({model.meta.channels}-channel)",
            "weights_sha256": model.weights_sha256,
            "adapted_weights_sha256": adapted_sha,
            "meta": json.loads(model.meta.to_json()),
        },
        "noise": noise_desc(settings, group, kind),
        "adaptation": {
            **dataclasses.asdict(config),
            "interpolation": result.interpolation,  # the weight that ran (chosen by SURE where it applies)
            "patch_used": result.patch,
            "runner": result.runner,
            "sure_db": {f"{a:g}": round(v, 4) for a, v in result.sure_db.items()},
            "checkpoint_used": result.checkpoint_step,
            "checkpoint_db": {str(m): round(v, 4) for m, v in result.checkpoint_db.items()},
        },
        "device": str(device),
        "torch": {
            "version": torch.__version__,
            "cuda": torch.version.cuda,
            "threads": torch.get_num_threads(),
        },
        "per_set": settings.per_set,
        "output_ensemble": settings.output_ensemble,
        "timings": timings(result, outputs_seconds, export_seconds, time.perf_counter() - started),
        "scores": scores,
        "losses": [round(v, 8) for v in result.losses],
        "files": files,
    }
    manifest_path = out_dir / f"{stem}.json"
    with atomic_write(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    manifest["manifest"] = str(manifest_path)
    reporter.result(
        f"{label}: {config.steps} steps in {result.total_seconds:.1f} s"
        + (f", interpolation {result.interpolation:g} (SURE)" if result.sure_db else "")
        + " -> "
        + ", ".join(f["path"] for f in files)
        + f", {manifest_path.name}"
    )
    return [manifest]


def _noise_bit_depth(settings: JobSettings, group: list[ImageJob]) -> int | None:
    if settings.noise_quantization == "off":
        return None
    depths = {j.image.bit_depth for j in group}
    return min(depths) if depths <= {8, 16} else None


def noise_desc(settings: JobSettings, group: list[ImageJob], kind: str) -> dict[str, Any]:
    """The manifest's record of the synthetic noise; σ in grey levels, as the command line takes it."""
    if settings.sigma is not None:
        mode = "known"
    else:
        mode = settings.unknown_sigma  # camera noise: 'uniform' keeps CBDNet's random levels
    desc: dict[str, Any] = {
        "kind": kind,
        "mode": mode,
        "sigma": _grey(settings.sigma),
        "sigma_estimates": [_grey(j.sigma_estimate, 3) for j in group],
    }
    if mode == "uniform" and kind == "gaussian":
        desc["sigma_range"] = [_grey(settings.sigma_low), _grey(settings.sigma_high)]
    desc["quantized_to_bits"] = _noise_bit_depth(settings, group)
    return desc


def _engine_run(settings: JobSettings, jobs: list[ImageJob]):
    return plan_engines(settings, [(j.image.height, j.image.width) for j in jobs])


def plan_engines(settings: JobSettings, sizes: list[tuple[int, int]]):
    """One engine for the whole run: its profile covers every input (checked now, before any adaptation)."""
    from exporters.engine_plan import EngineRun
    from exporters.tensorrt_engine import EngineOptions

    options = EngineOptions(
        min_hw=_parse_size(settings.engine_min_size),
        max_hw=_parse_size(settings.engine_max_size),
        timing_cache=settings.timing_cache,
    )
    return EngineRun(sizes, options, settings.engine_from)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"engine size must look like HEIGHTxWIDTH (e.g. 1024x1024), not {text!r}") from exc
    if h < 1 or w < 1:
        raise ConfigError(f"engine size must be positive, not {text!r}")
    return h, w


def _export(model, settings, out_dir, stem, first, noise, reporter, engines=None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    if not settings.formats:
        return records
    from exporters.onnx_export import export_onnx, onnx_metadata

    onnx_path = out_dir / f"{stem}_rfr.onnx"
    metadata = onnx_metadata(model, noise=noise, sigma=model_sigma(model, first))
    report = export_onnx(
        model,
        onnx_path,
        example=first.noisy,
        sigma=model_sigma(model, first),
        opset=settings.onnx_opset,
        precision=settings.precision,
        metadata=metadata,
        ensemble=settings.output_ensemble,  # the graph computes exactly what the written image shows
    )
    records.append(file_record("onnx", onnx_path, out_dir, max_abs_error=report.max_abs_error))
    reporter.note(f"ONNX export verified with ONNX Runtime: max |error| {report.max_abs_error:.2e}")
    if engines is not None:
        engine = engines.export(
            model,
            onnx_path,
            out_dir / f"{stem}_rfr.engine",
            example=first.noisy,
            precision=settings.precision,
            sigma=model_sigma(model, first),
        )
        base = {"base": str(engines.base)} if engine.mode == "refit" else {}
        timing = {"seconds": round(engine.seconds, 3), "max_abs_error": engine.max_abs_error}
        records.append(file_record("engine", engine.path, out_dir, mode=engine.mode, **base, **timing))
        records.append(file_record("engine_sidecar", engine.sidecar, out_dir))
    return records


def _output_suffix(path: Path) -> str:
    return ".tif" if path.suffix.lower() in (".tif", ".tiff") else ".png"


def _bit_depth(image: Image) -> int:
    return 16 if image.bit_depth >= 16 else 8
