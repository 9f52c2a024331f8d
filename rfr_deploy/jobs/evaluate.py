"""The paper's evaluation protocols.

* Synthetic noise (Table 2/3): seeded Gaussian noise of level σ is added to each
  clean image; PSNR/SSIM of the pre-trained output (M = 0) and after M updates.
* Real noise (Table 4/5): folders of noisy/clean pairs, adaptation with the
  camera noise model.

Outputs are clipped and rounded to 8 bits before scoring, as a written PNG would be.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.defaults import resolve_defaults
from rfr_deploy.adaptation.loop import StepInfo, adapt
from rfr_deploy.datasets import ImageSource, NamedImage, dataset_sources, pair_sources, read_source
from rfr_deploy.devices import describe_environment, resolve_device, seed_field, threads_field, use_threads
from rfr_deploy.errors import ConfigError
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.eval_report import EvalReport, ImageScore
from rfr_deploy.jobs.noise_aim import aim_noise
from rfr_deploy.metrics import psnr, ssim
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.base import gaussian_level_of
from rfr_deploy.noise.build import list_noise_choices, resolve_noise_kind
from rfr_deploy.noise.level import estimate_noise_level
from rfr_deploy.noise.registry import NoiseSettings
from rfr_deploy.progress import QUIET, Reporter
from rfr_deploy.units import check_levels, grey_levels

SigmaMode = Literal["known", "estimate", "uniform"]
DEFAULT_BUDGET = "default"
"""In :attr:`EvalSettings.steps`: the M adapt-and-export takes when none is given, with the patches and
weight averaging that come with it (:func:`rfr_deploy.adaptation.defaults.resolve_defaults`)."""


@dataclass
class EvalSettings:
    """Fields map to ``rfr-deploy eval`` options, generated from them
    (:func:`rfr_deploy.cli.options.field_option`) but for ``steps`` (a comma-separated list there)."""

    model: str = "dncnn"
    weights: str | None = None
    sigma: float = field(
        default=25 / 255,
        metadata={"help": "Level of the Gaussian noise added to the clean images.", "unit": "grey"},
    )
    """Level of the Gaussian noise added to the clean images (synthetic protocol), [0, 1] units."""
    steps: tuple[int | str, ...] = (0, DEFAULT_BUDGET)
    """The M scored: one adaptation of max(M) updates (of the default budget where :data:`DEFAULT_BUDGET`
    is listed), scored after each; the last M is scored on the network ``adapt`` returns. Default: the
    pre-trained network and what adapt-and-export makes of each image; the paper's protocol is
    ``(0, 10, 20, 40)``."""
    sigma_mode: SigmaMode = field(
        default="known",
        metadata={
            "help": "Noise the adaptation assumes: true σ, estimated σ, or σ uniform in [0, 50] (real pairs: "
            "'known' uses the estimate; camera noise: 'uniform' keeps CBDNet's random levels)."
        },
    )
    """How adaptation chooses its noise: the true σ, the estimate, or uniform σ ∈ [0, 50/255]."""
    noise: str = field(default="auto", metadata={"choices": list_noise_choices})
    """A registered noise model; 'auto': the one the weights were trained on (the camera model),
    Gaussian otherwise."""
    crop: int | None = field(
        default=None, metadata={"min": 16, "help": "Evaluate on the central crop of this side."}
    )
    """Evaluate on the central crop of this side (faster); None for whole images."""
    limit: int | None = field(default=None, metadata={"min": 1, "help": "Only the first N images."})
    seed: int = seed_field()
    output_ensemble: bool = False
    score_ensemble: bool = field(
        default=False,
        metadata={
            "help": "Also score the ×8 self-ensemble of every checkpoint (reported beside the single pass)."
        },
    )
    """Also score the ×8 self-ensemble of every checkpoint, reported beside the single-pass output."""
    device: str = "auto"
    threads: int | None = threads_field()
    """PyTorch's CPU threads (:func:`rfr_deploy.devices.use_threads`); None keeps its default. Decides how
    the process runs, not what it writes (left out of the resume fingerprint)."""
    pairs: bool = field(
        default=False,
        metadata={
            "cli": "--pairs",
            "help": "DATASET holds noisy/ and gt/ pairs (real noise) instead of clean images.",
        },
    )
    """The dataset folder holds noisy/ and gt/ pairs (real noise) instead of clean images."""

    def __post_init__(self) -> None:
        if not self.steps or any(
            m != DEFAULT_BUDGET and not (isinstance(m, int) and m >= 0) for m in self.steps
        ):
            raise ConfigError(f"steps must be non-negative integers or '{DEFAULT_BUDGET}', got {self.steps}")
        if not self.pairs:
            check_levels({"sigma": self.sigma})


TEST_NOISE_STREAM = 0x7E57_0015E
"""Mixed into the seed of the test noise, so that it is not the stream the adaptation of the same image
draws its training noise from (``seed + index``: before stop 55 the first update's noise on the CPU was
the test noise itself)."""


def add_gaussian_noise(clean: torch.Tensor, sigma: float, seed: int, index: int) -> torch.Tensor:
    """Reproducible AWGN of level ``sigma`` ([0, 1] units) for image ``index`` of a dataset (independent
    of evaluation order), unclipped as in the DnCNN protocol, from a stream of its own."""
    mixed = ((seed * 1_000_003 + index) * 0x9E3779B97F4A7C15 + TEST_NOISE_STREAM) % 2**63
    g = torch.Generator().manual_seed(mixed)
    return clean + sigma * torch.randn(clean.shape, generator=g)


def center_crop(pixels: np.ndarray, size: int | None) -> np.ndarray:
    if size is None:
        return pixels
    h, w = pixels.shape[:2]
    th, tw = min(size, h), min(size, w)
    y, x = (h - th) // 2, (w - tw) // 2
    return pixels[y : y + th, x : x + tw]


def evaluate(
    dataset: str | Path, settings: EvalSettings, config: AdaptConfig, reporter: Reporter = QUIET
) -> EvalReport:
    """Run the synthetic (or, with ``settings.pairs``, real-noise) protocol on a folder."""
    device = resolve_device(settings.device)
    use_threads(settings.threads)
    dataset = Path(dataset)
    models: dict[int, torch.nn.Module] = {}
    started = time.perf_counter()
    sources, left_out = _sources(dataset, settings)
    for source in sources:  # every image decoded once before any long work, one at a time
        _read(source, settings)
    checkpoints = sorted({m for m in settings.steps if m != DEFAULT_BUDGET} | {0})
    budget = None if DEFAULT_BUDGET in settings.steps else checkpoints[-1]
    config = dataclasses.replace(config, steps=budget)

    def prepare(index: int) -> ImageRun:
        noisy_img, clean_img = _read(sources[index], settings)
        channels = clean_img.pixels.shape[2]
        if channels not in models:
            models[channels] = create_model(
                settings.model, weights=settings.weights or "default", channels=channels, device=device
            ).eval()
        return _prepare_image(models[channels], index, noisy_img, clean_img, settings, config, device)

    first: ImageRun | None = prepare(0)  # the default budget is known before any long work
    resolved, budget, first_name = first.config, first.budget, first.name
    if beyond := [m for m in checkpoints if m > resolved.steps]:
        raise ConfigError(f"--steps {beyond[0]} is beyond the default budget of {resolved.steps} updates")
    scores = []
    with reporter.bar(len(sources), f"evaluating {dataset.name}") as update:
        for index in range(len(sources)):
            run, first = first or prepare(index), None  # one image held at a time
            if run.budget != budget:
                raise ConfigError(
                    f"the default budget differs between {first_name} and {run.name}: give --steps"
                )
            scores.append(_score_image(run, settings, checkpoints))
            del run  # let the image go before the next one is read
            update(index + 1, None)
    kinds = sorted({resolve_noise_kind(settings.noise, m.meta.noise) for m in models.values()})
    return EvalReport(
        dataset=str(dataset),
        settings={
            **dataclasses.asdict(settings),
            "sigma": grey_levels(settings.sigma),  # reports speak grey levels, as the command line does
            "steps": sorted({*checkpoints, resolved.steps}),
            "noise": "/".join(kinds) or settings.noise,
        },
        adapt=dataclasses.asdict(
            dataclasses.replace(config, steps=resolved.steps, patch=resolved.patch, ema=resolved.ema)
        ),
        images=scores,
        left_out=left_out,
        environment=describe_environment(device),
        wall_seconds=time.perf_counter() - started,
    )


def _sources(dataset: Path, settings: EvalSettings) -> tuple[list[ImageSource], list[str]]:
    """The images to evaluate, and the files of a set of pairs left out for want of a partner (as
    ``noisy/NAME``, ``gt/NAME``), of which a warning tells: the table alone would not show them."""
    if not settings.pairs:
        return dataset_sources(dataset, False, settings.limit), []
    found = pair_sources(dataset)
    sources = found.sources[: settings.limit]
    left_out = [str(p.relative_to(dataset)) for p in (*found.noisy_alone, *found.clean_alone)]
    if left_out:
        shown = ", ".join(left_out[:5]) + (f", … ({len(left_out)} in all)" if len(left_out) > 5 else "")
        warnings.warn(
            f"{dataset}: evaluating {len(sources)} pair(s); left out, no file of the same name in the other "
            f"folder: {shown}",
            stacklevel=3,
        )
    return sources, left_out


def _read(source: ImageSource, settings: EvalSettings) -> tuple[NamedImage | None, NamedImage]:
    """The (noisy, clean) images of ``source``, cropped as ``settings`` asks (a copy: the whole image is
    let go)."""

    def cropped(image: NamedImage | None) -> NamedImage | None:
        if image is None:
            return None
        return NamedImage(image.name, np.ascontiguousarray(center_crop(image.pixels, settings.crop)))

    noisy, clean = read_source(source)
    return cropped(noisy), cropped(clean)


@dataclass
class ImageRun:
    """One image, ready to be scored and adapted: the noisy input, the noise model and the configuration
    of its adaptation (defaults resolved; ``noise`` None where no update is asked for)."""

    name: str
    model: torch.nn.Module
    noisy: torch.Tensor
    reference: np.ndarray
    estimate: float
    model_sigma: float | None
    config: AdaptConfig
    started: float
    """When its preparation began (perf_counter): the image's seconds count from there."""
    noise: torch.nn.Module | None = None
    pseudo_clean: list[torch.Tensor] | None = None
    """X̃ = f(Y) where aiming the noise computed it: the first round's targets."""

    @property
    def budget(self) -> tuple[int | None, int | None, float | None]:
        """What the default budget resolved to for this image: M, patch side and weight averaging."""
        return self.config.steps, self.config.patch, self.config.ema


def _prepare_image(model, index, noisy_img, clean_img, settings, config, device) -> ImageRun:
    started = time.perf_counter()
    clean = to_tensor(clean_img.pixels, device)
    if noisy_img is None:
        noisy = add_gaussian_noise(clean.cpu(), settings.sigma, settings.seed, index).to(device)
        true_sigma: float | None = settings.sigma
    else:
        noisy = to_tensor(noisy_img.pixels, device)
        true_sigma = None
    estimate = estimate_noise_level(noisy, model.meta.noise_map).sigma
    known = true_sigma if settings.sigma_mode == "known" else None
    model_sigma = (known if known is not None else estimate) if model.meta.noise_map else None
    run = ImageRun(clean_img.name, model, noisy, clean_img.pixels, estimate, model_sigma, config, started)
    if config.steps == 0:
        return run
    # real pairs have no true σ: "known" falls back to the estimate, as adapt-and-export does
    unknown = "uniform" if settings.sigma_mode == "uniform" else "estimate"
    kind = resolve_noise_kind(settings.noise, model.meta.noise)
    config = dataclasses.replace(config, seed=config.seed + index)
    choices = NoiseSettings(known, unknown, (estimate,))
    aim = aim_noise(kind, choices, model, [noisy], model_sigma, config, [run.name])
    run.noise, run.pseudo_clean = aim.noise.to(device), aim.targets
    run.config = resolve_defaults(config, run.noise, [noisy])
    return run


def _score_image(run: ImageRun, settings: EvalSettings, checkpoints: list[int]) -> ImageScore:
    """Scores of the pre-trained network and, along one adaptation, of each M of ``checkpoints`` and of
    the network the adaptation returns."""
    score = ImageScore(
        name=run.name,
        noisy_psnr=psnr(to_pixels(run.noisy), run.reference),  # the input the networks see, unclipped
        sigma_estimate=run.estimate,
    )
    level = gaussian_level_of(run.noise) if run.noise is not None else None
    score.noise_sigma = level.sigma if level is not None else None

    def record(m: int, net) -> None:
        out = denoise(net, run.noisy, sigma=run.model_sigma, ensemble=settings.output_ensemble)
        out = quantize(to_pixels(out))
        score.psnr[m], score.ssim[m] = psnr(out, run.reference), ssim(out, run.reference)
        if settings.score_ensemble:
            out = quantize(to_pixels(denoise(net, run.noisy, sigma=run.model_sigma, ensemble=True)))
            score.ensemble_psnr[m] = psnr(out, run.reference)

    record(0, run.model)
    if run.noise is not None:
        scored = {*checkpoints, run.config.steps}

        def on_step(info: StepInfo) -> None:
            if info.step in scored:
                record(info.step, info.model)
                score.interpolation[info.step] = info.interpolation()

        result = adapt(
            run.model,
            run.noisy,
            run.noise,
            run.config,
            sigma=run.model_sigma,
            callback=on_step,
            pseudo_clean=run.pseudo_clean,
        )
        score.checkpoint = result.checkpoint_step
    score.seconds = time.perf_counter() - run.started
    return score
