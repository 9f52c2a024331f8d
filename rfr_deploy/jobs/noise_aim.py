"""A job's synthetic noise, where its unknown level is read from the pre-trained network.

- Camera noise (noise models registered with ``level="residual"``): the white-noise estimator reads
  the correlated noise of real photographs 3–17× too low, and camera noise aimed at that level teaches
  the network to keep the noise it sees. These models aim at the RMS of Y − f(Y) instead: on the 37 real
  pairs of ``shared/data/real`` (packaged CBDNet, default interpolation) the mean gain rose from +0.376
  to +0.390 dB on Nam and from +0.274 to +0.383 on SIDD, the worst image from −0.298 to −0.204
  (benchmarks/README.md, "The camera noise's level"). Computing it needs X̃ = f(Y), the very
  pseudo-clean targets adaptation trains on, so they are handed on to
  :func:`~rfr_deploy.adaptation.loop.adapt` rather than computed twice.
- Gaussian noise on gray images with a blind network: the level the network's own residual and
  divergence imply (:mod:`rfr_deploy.adaptation.implied_level`; 0.7–2.3 % mean error where the
  all-patch estimate's was 0.9–10.8 %), with its tolerance, so that SURE scores over the same ±1 %
  band without computing it again. Trained at it rather than at the all-patch estimate (which reads
  textured images up to 32 % high), the adapted networks gained more at every interpolation weight;
  with SURE's choice, over 48 whole Set12 and BSD68 images at σ = 15 and 25 the mean gain went from
  +0.045 to +0.048 dB and the worst image from −0.078 to −0.029 (benchmarks/README.md, "Gray images:
  train at the level the network implies").
- Gaussian noise correlated between the channels like a colour image's (:mod:`rfr_deploy.jobs.channel_noise`):
  drawn at the level each channel holds, which a noise-map network is also told (:attr:`AimedNoise.told`);
  the estimate off the colour image reads such noise low.
- Gaussian noise compressed as the input JPEG was (:mod:`rfr_deploy.noise.jpeg`): white noise aimed so
  that, compressed onto each pseudo-clean image, it reads the level estimated off the file. A noise-map
  network is told the aimed level (at least half the level of the luma's quantization steps:
  :func:`~rfr_deploy.noise.jpeg.told_level`), in training and when it denoises the file (:attr:`AimedNoise.told`),
  and its pseudo-clean targets are computed again at it: told the level read off the file, which the
  compression lowered, the official FFDNet left much of a JPEG's noise and blocking in place (on 12
  4:4:4 quality-75 crops at σ = 10 its output rose from 30.66 to 32.17 dB told the aimed level, the
  best level of a grid giving 33.29; benchmarks/README.md, "A noise-map network told the aimed level").

Everything else is built from the white-noise estimates the job made (or the known level). A noise-map
network on gray images is told, and trains at, the weak-texture estimate
(:func:`~rfr_deploy.noise.level.estimate_noise_level`); the level it implies for that map depends on the
map, so SURE reads it where it scores (:func:`~rfr_deploy.adaptation.scoring.make_scorer`).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.implied_level import TOLERANCE, implied_levels
from rfr_deploy.adaptation.scoring import denoised_per_channel, gray_with_estimated_level
from rfr_deploy.adaptation.targets import training_targets
from rfr_deploy.devices import synchronize
from rfr_deploy.errors import ImageError
from rfr_deploy.noise.base import stored_as
from rfr_deploy.noise.build import build_noise_from
from rfr_deploy.noise.channels import per_channel_level
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.noise.jpeg import JpegStoredNoise, JpegTables, aim_white_level, told_level
from rfr_deploy.noise.level import residual_level
from rfr_deploy.noise.registry import NoiseSettings, level_source


@dataclass
class AimedNoise:
    """A job's synthetic noise, and what reading its level from the network produced on the way."""

    noise: nn.Module
    targets: list[torch.Tensor] | None = None
    """The pseudo-clean targets X̃ = f(Y), one per image, where computing the level needed them."""
    levels: dict[str, list[float]] = field(default_factory=dict)
    """The levels read from the network ([0, 1] units), one per image, by the manifest's name for them:
    ``residual_levels`` (RMS of Y − X̃), ``implied_levels``, or ``aimed_levels`` (white noise before a
    JPEG's compression); empty where none were read."""
    target_seconds: float = 0.0
    """The seconds ``targets`` took."""
    told: list[float] | None = None
    """The levels ([0, 1] units, one per image) a noise-map network is told instead of the job's, in
    training and when it denoises; None: the job's."""


def aim_noise(
    kind: str,
    settings: NoiseSettings,
    model: nn.Module,
    images: Sequence[torch.Tensor],
    model_sigma: float | None,
    config: AdaptConfig,
    names: Sequence[str],
    bit_depth: int | None = None,
    chroma: tuple[int, int] = (1, 1),
    jpeg: JpegTables | None = None,
    correlation: float = 0.0,
) -> AimedNoise:
    """The noise ``kind`` for a run on ``images`` (see the module docstring); ``settings`` holds the
    job's choices and white-noise estimates (one per image), ``model_sigma`` and ``config`` (its ensemble and seed) are
    those of the run, ``names`` label the images in errors, ``bit_depth``, ``chroma`` and ``jpeg`` store
    the synthetic noisy images like the input, ``correlation`` correlates them between the channels
    (:func:`~rfr_deploy.noise.build.build_noise_from`)."""

    def build(chosen: NoiseSettings) -> nn.Module:
        return build_noise_from(kind, chosen, bit_depth, chroma, jpeg, correlation)

    if settings.sigma is not None or settings.unknown_sigma != "estimate":
        return AimedNoise(build(settings))
    if correlation > 0.0 and level_source(kind) == "white":
        return _aim_per_channel(build, settings, model, images)
    if level_source(kind) == "residual":
        start = time.perf_counter()
        targets = training_targets(model, list(images), model_sigma, config.target_ensemble, None)
        synchronize(images[0].device)
        seconds = time.perf_counter() - start
        levels = _residual_levels(kind, images, targets, names)
        return AimedNoise(
            build(dataclasses.replace(settings, estimates=tuple(levels))),
            targets,
            {"residual_levels": levels},
            seconds,
        )
    noise = build(settings)
    stored = stored_as(noise)
    if isinstance(stored, JpegStoredNoise) and len(settings.estimates) == len(images):
        return _aim_compressed(stored, build, settings, model, images, model_sigma, config)
    if model_sigma is not None or not gray_with_estimated_level(noise, images, denoised_per_channel(model)):
        return AimedNoise(noise)
    implied = implied_levels(
        model, images, settings.estimates, config.seed, config.score_pixels
    )  # one per image
    if any(v is None for v in implied):
        # the white-noise estimate: the scorer reads a level off all the images, if there is one
        return AimedNoise(noise)
    aimed = dataclasses.replace(settings, estimates=tuple(implied), tolerance=TOLERANCE)
    return AimedNoise(build(aimed), levels={"implied_levels": implied})


def _aim_per_channel(build, settings: NoiseSettings, model, images) -> AimedNoise:
    """Noise correlated between the channels drawn at the level each channel of each image holds
    (:func:`~rfr_deploy.noise.channels.per_channel_level`; :mod:`rfr_deploy.jobs.channel_noise`), which a
    noise-map network is also told."""
    noise_map = model.meta.noise_map
    levels = [per_channel_level(y, noise_map).sigma for y in images]
    noise = build(dataclasses.replace(settings, estimates=tuple(levels)))
    return AimedNoise(noise, levels={"channel_levels": levels}, told=levels if noise_map else None)


def _aim_compressed(
    compressed, build, settings: NoiseSettings, model, images, model_sigma, config
) -> AimedNoise:
    """White noise drawn at the levels that, compressed as the files were, read each image's estimate
    (:func:`~rfr_deploy.noise.jpeg.aim_white_level` on its pseudo-clean target); a noise-map network,
    first told ``model_sigma`` (the level read off the files), is then told the aimed levels, and its
    targets are computed again at their median (see the module's docstring)."""
    start = time.perf_counter()
    targets = training_targets(model, list(images), model_sigma, config.target_ensemble, None)
    generator = torch.Generator(device=images[0].device).manual_seed(config.seed)
    aimed = [
        aim_white_level(compressed, t, level, generator, noise_map=model.meta.noise_map)
        for t, level in zip(targets, settings.estimates, strict=True)
    ]
    told = [told_level(a, compressed.tables) for a in aimed] if model.meta.noise_map else None
    if told is not None:
        median = statistics.median(told)
        targets = training_targets(model, list(images), median, config.target_ensemble, None)
    synchronize(images[0].device)
    seconds = time.perf_counter() - start
    noise = build(dataclasses.replace(settings, estimates=tuple(aimed)))
    return AimedNoise(noise, targets, {"aimed_levels": aimed}, seconds, told)


def aim_told_level(
    estimate: float, output: torch.Tensor, tables: JpegTables, factors: tuple[int, int]
) -> float:
    """The level a noise-map network is told on a JPEG without adaptation (``rfr-deploy denoise``): aimed on
    its ``output`` at the ``estimate`` as adaptation aims it (see the module's docstring); ``tables`` and
    ``factors`` are the file's."""
    noise = JpegStoredNoise(GaussianNoise(estimate), tables, factors)
    generator = torch.Generator(device=output.device).manual_seed(0)
    return told_level(aim_white_level(noise, output, estimate, generator, noise_map=True), tables)


def _residual_levels(
    kind: str, images: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], names: Sequence[str]
) -> list[float]:
    """The RMS of each image's residual; :class:`ImageError` naming the images when the level the noise
    would aim at (the median) is 0: the network removes nothing, and the camera model would silently
    fall back to random levels."""
    levels = [residual_level(y, t) for y, t in zip(images, targets, strict=True)]
    if statistics.median(levels) <= 0.0:
        empty = [name for name, v in zip(names, levels, strict=True) if v <= 0.0]
        raise ImageError(
            f"{', '.join(empty)}: the pre-trained network removes nothing from the image, so there is no "
            f"{kind} noise level to aim at; give the level with --sigma or use --unknown-sigma uniform"
        )
    return levels
