"""The paper's evaluation protocols.

* Synthetic noise (Table 2/3): seeded Gaussian noise of level σ is added to each
  clean image; PSNR/SSIM of the pre-trained output (M = 0) and after M updates.
* Real noise (Table 4/5): folders of noisy/clean pairs, adaptation with the
  camera noise model.

Outputs are clipped and rounded to 8 bits before scoring, as a written PNG would be.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import StepInfo, adapt
from rfr_deploy.datasets import NamedImage, load_folder, load_pairs
from rfr_deploy.devices import describe_environment, resolve_device
from rfr_deploy.errors import ConfigError
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.noise_aim import residual_aim
from rfr_deploy.metrics import psnr, ssim
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.build import build_noise, list_noise_choices, resolve_noise_kind
from rfr_deploy.noise.level import estimate_noise_level
from rfr_deploy.progress import QUIET, Reporter
from rfr_deploy.units import grey_levels

SigmaMode = Literal["known", "estimate", "uniform"]


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
    steps: tuple[int, ...] = (0, 10, 20, 40)
    """The M scored: one adaptation of max(M) updates, scored after each; the last M is scored on the
    network ``adapt`` returns."""
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
    seed: int = 0
    output_ensemble: bool = False
    score_ensemble: bool = field(
        default=False,
        metadata={
            "help": "Also score the ×8 self-ensemble of every checkpoint (reported beside the single pass)."
        },
    )
    """Also score the ×8 self-ensemble of every checkpoint, reported beside the single-pass output."""
    device: str = "auto"
    pairs: bool = field(
        default=False,
        metadata={
            "cli": "--pairs",
            "help": "DATASET holds noisy/ and gt/ pairs (real noise) instead of clean images.",
        },
    )
    """The dataset folder holds noisy/ and gt/ pairs (real noise) instead of clean images."""

    def __post_init__(self) -> None:
        if not self.pairs and not 0 <= self.sigma <= 1:
            raise ConfigError(f"--sigma must be within [0, 255] grey levels, got {grey_levels(self.sigma)}")


@dataclass
class ImageScore:
    name: str
    noisy_psnr: float
    psnr: dict[int, float] = field(default_factory=dict)
    ssim: dict[int, float] = field(default_factory=dict)
    sigma_estimate: float = 0.0
    """[0, 1] units (reported in grey levels)."""
    seconds: float = 0.0
    ensemble_psnr: dict[int, float] = field(default_factory=dict)
    """×8 self-ensemble PSNR per checkpoint (``score_ensemble``)."""
    interpolation: dict[int, float] = field(default_factory=dict)
    """Interpolation weight the adaptation returned at each checkpoint (chosen by SURE by default)."""
    checkpoint: int | None = None
    """:attr:`~rfr_deploy.adaptation.loop.AdaptResult.checkpoint_step` of the adaptation: the update whose
    weights the returned network interpolates; None where no checkpoints were scored."""


@dataclass
class EvalReport:
    dataset: str
    settings: dict[str, Any]
    adapt: dict[str, Any]
    images: list[ImageScore]
    environment: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0

    def mean(self, metric: str, m: int) -> float:
        return statistics.fmean(getattr(s, metric)[m] for s in self.images)

    def gains(self, m: int) -> list[float]:
        return [s.psnr[m] - s.psnr[0] for s in self.images]

    def ensemble_gains(self, m: int) -> list[float]:
        """×8 self-ensemble at M = m over the single-pass pre-trained output."""
        return [s.ensemble_psnr[m] - s.psnr[0] for s in self.images]

    def to_dict(self) -> dict[str, Any]:
        steps = sorted(self.images[0].psnr) if self.images else []
        return {
            "dataset": self.dataset,
            "settings": self.settings,
            "adapt": self.adapt,
            "environment": self.environment,
            "wall_seconds": round(self.wall_seconds, 1),
            "mean": {
                str(m): {"psnr": round(self.mean("psnr", m), 4), "ssim": round(self.mean("ssim", m), 5)}
                for m in steps
            },
            "mean_gain_db": {str(m): round(statistics.fmean(self.gains(m)), 4) for m in steps if m},
            "worst_gain_db": {str(m): round(min(self.gains(m)), 4) for m in steps if m},
            **(self._ensemble_summary(steps) if self.images and self.images[0].ensemble_psnr else {}),
            "images": [
                {
                    "name": s.name,
                    "noisy_psnr": round(s.noisy_psnr, 4),
                    "sigma_estimate": grey_levels(s.sigma_estimate, 3),
                    "seconds": round(s.seconds, 3),
                    "psnr": {str(k): round(v, 4) for k, v in s.psnr.items()},
                    "ssim": {str(k): round(v, 5) for k, v in s.ssim.items()},
                    "ensemble_psnr": {str(k): round(v, 4) for k, v in s.ensemble_psnr.items()},
                    "interpolation": {str(k): v for k, v in s.interpolation.items()},
                    "checkpoint": s.checkpoint,
                }
                for s in self.images
            ],
        }

    def _ensemble_summary(self, steps: list[int]) -> dict[str, Any]:
        return {
            "ensemble_mean_psnr": {
                str(m): round(statistics.fmean(s.ensemble_psnr[m] for s in self.images), 4) for m in steps
            },
            "ensemble_gain_db": {str(m): round(statistics.fmean(self.ensemble_gains(m)), 4) for m in steps},
            "ensemble_worst_gain_db": {str(m): round(min(self.ensemble_gains(m)), 4) for m in steps},
        }

    def to_markdown(self) -> str:
        steps = sorted(self.images[0].psnr) if self.images else []
        s, a = self.settings, self.adapt
        listed = ", ".join(
            f"{k}={'auto' if v is None else v}"
            for k, v in a.items()
            if k not in ("steps", "seed", "fast", "amp")
        )
        context = [
            f"Dataset `{self.dataset}`"
            + (f" (first {s['limit']})" if s.get("limit") else "")
            + (f", central {s['crop']}² crops" if s.get("crop") else ", whole images")
            + f"; model `{s['model']}`, weights `{s.get('weights') or 'packaged'}`; "
            + ("real noise pairs" if s.get("pairs") else f"Gaussian σ = {s['sigma']:g}, seed {s['seed']}")
            + (
                f"; adaptation noise: {s['noise']}"
                if s.get("pairs") or s.get("noise") != "gaussian"
                else f"; adaptation σ: {s['sigma_mode']}"
            )
            + ".",
            f"Adaptation: {listed}.",
            f"{self.environment.get('device', '?')}, torch {self.environment.get('torch', '?')}, "
            f"rfr-deploy {self.environment.get('rfr_deploy', '?')}; wall time {self.wall_seconds:.0f} s.",
            "",
            "PSNR (dB) / SSIM per image.",
            "",
        ]
        head = "| image | noisy | " + " | ".join(f"M={m}" for m in steps) + " |"
        rule = "|---" * (len(steps) + 2) + "|"
        rows = [*context, head, rule]
        for s in self.images:
            cells = " | ".join(f"{s.psnr[m]:.2f} / {s.ssim[m]:.4f}" for m in steps)
            rows.append(f"| {s.name} | {s.noisy_psnr:.2f} | {cells} |")
        means = " | ".join(f"**{self.mean('psnr', m):.2f} / {self.mean('ssim', m):.4f}**" for m in steps)
        rows.append(f"| **mean** | {statistics.fmean(s.noisy_psnr for s in self.images):.2f} | {means} |")
        gains = " | ".join(
            "" if m == 0 else f"{statistics.fmean(self.gains(m)):+.3f} (worst {min(self.gains(m)):+.3f})"
            for m in steps
        )
        rows.append(f"| gain dB | | {gains} |")
        if self.images and self.images[0].ensemble_psnr:
            ens = " | ".join(
                f"{statistics.fmean(s.ensemble_psnr[m] for s in self.images):.2f} "
                f"({statistics.fmean(self.ensemble_gains(m)):+.3f}, worst {min(self.ensemble_gains(m)):+.3f})"
                for m in steps
            )
            rows.append(f"| ×8 ensemble (gain over single-pass M=0) | | {ens} |")
        return "\n".join(rows)


def add_gaussian_noise(clean: torch.Tensor, sigma: float, seed: int, index: int) -> torch.Tensor:
    """Reproducible AWGN of level ``sigma`` ([0, 1] units) for image ``index`` of a dataset (independent
    of evaluation order)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
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
    dataset = Path(dataset)
    models: dict[int, torch.nn.Module] = {}
    started = time.perf_counter()
    pairs = _load(dataset, settings)
    checkpoints = sorted(set(settings.steps) | {0})
    max_steps = max(checkpoints)
    scores = []
    with reporter.bar(len(pairs), f"evaluating {dataset.name}") as update:
        for index, (noisy_img, clean_img) in enumerate(pairs):
            channels = clean_img.pixels.shape[2]
            if channels not in models:
                models[channels] = create_model(
                    settings.model, weights=settings.weights or "default", channels=channels, device=device
                ).eval()
            scores.append(
                _score_image(
                    models[channels],
                    index,
                    noisy_img,
                    clean_img,
                    settings,
                    config,
                    checkpoints,
                    max_steps,
                    device,
                )
            )
            update(index + 1, None)
    kinds = sorted({resolve_noise_kind(settings.noise, m.meta.noise) for m in models.values()})
    return EvalReport(
        dataset=str(dataset),
        settings={
            **dataclasses.asdict(settings),
            "sigma": grey_levels(settings.sigma),  # reports speak grey levels, as the command line does
            "steps": checkpoints,
            "noise": "/".join(kinds) or settings.noise,
        },
        adapt=dataclasses.asdict(dataclasses.replace(config, steps=max_steps)),
        images=scores,
        environment=describe_environment(device),
        wall_seconds=time.perf_counter() - started,
    )


def _load(dataset: Path, settings: EvalSettings) -> list[tuple[NamedImage | None, NamedImage]]:
    if settings.pairs:
        return [
            (
                NamedImage(n.name, center_crop(n.pixels, settings.crop)),
                NamedImage(c.name, center_crop(c.pixels, settings.crop)),
            )
            for n, c in load_pairs(dataset, limit=settings.limit)
        ]
    return [
        (None, NamedImage(c.name, center_crop(c.pixels, settings.crop)))
        for c in load_folder(dataset, limit=settings.limit)
    ]


def _score_image(
    model, index, noisy_img, clean_img, settings, config, checkpoints, max_steps, device
) -> ImageScore:
    started = time.perf_counter()
    clean = to_tensor(clean_img.pixels, device)
    if noisy_img is None:
        noisy = add_gaussian_noise(clean.cpu(), settings.sigma, settings.seed, index).to(device)
        true_sigma: float | None = settings.sigma
    else:
        noisy = to_tensor(noisy_img.pixels, device)
        true_sigma = None
    estimate = estimate_noise_level(noisy).sigma
    known = true_sigma if settings.sigma_mode == "known" else None
    model_sigma = (known if known is not None else estimate) if model.meta.noise_map else None
    reference = clean_img.pixels
    score = ImageScore(
        name=clean_img.name,
        noisy_psnr=psnr(np.clip(to_pixels(noisy), 0, 1), reference),
        sigma_estimate=estimate,
    )

    def record(m: int, net) -> None:
        out = quantize(to_pixels(denoise(net, noisy, sigma=model_sigma, ensemble=settings.output_ensemble)))
        score.psnr[m], score.ssim[m] = psnr(out, reference), ssim(out, reference)
        if settings.score_ensemble:
            out = quantize(to_pixels(denoise(net, noisy, sigma=model_sigma, ensemble=True)))
            score.ensemble_psnr[m] = psnr(out, reference)

    record(0, model)
    if max_steps > 0:
        # real pairs have no true σ: "known" falls back to the estimate, as adapt-and-export does
        unknown = "uniform" if settings.sigma_mode == "uniform" else "estimate"
        kind = resolve_noise_kind(settings.noise, model.meta.noise)
        aim = residual_aim(
            kind, known, unknown, model, [noisy], model_sigma, config.target_ensemble, [clean_img.name]
        )
        noise = build_noise(kind, known, unknown, aim.levels if aim else [estimate]).to(device)

        def on_step(info: StepInfo) -> None:
            if info.step in checkpoints:
                record(info.step, info.model)
                score.interpolation[info.step] = info.interpolation()

        result = adapt(
            model,
            noisy,
            noise,
            dataclasses.replace(config, steps=max_steps, seed=config.seed + index),
            sigma=model_sigma,
            callback=on_step,
            targets=aim.targets if aim else None,
        )
        score.checkpoint = result.checkpoint_step
    score.seconds = time.perf_counter() - started
    return score
