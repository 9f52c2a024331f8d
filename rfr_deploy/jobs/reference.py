"""Scoring a result against a clean reference, and the bundled sample that has one."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfr_deploy.errors import ImageError
from rfr_deploy.images import quantize, read_image
from rfr_deploy.inference import denoise, to_pixels
from rfr_deploy.metrics import psnr, ssim


def score_against_reference(
    reference_path: str,
    model,
    job,
    adapted: torch.Tensor,
    sigma: float | None,
    ensemble: bool,
    bit_depth: int,
    pretrained: torch.Tensor | None = None,
) -> dict[str, Any]:
    """PSNR/SSIM of the noisy input, the pre-trained output and the adapted output against a clean image.

    Outputs are rounded to the input's bit depth first, as the written files are. ``pretrained`` is the
    pre-trained output where the caller has it (the adaptation's pseudo-clean target): computed here
    otherwise.
    """
    reference = read_reference(reference_path, job)
    if pretrained is None:
        pretrained = denoise(model, job.noisy, sigma=sigma, ensemble=ensemble)
    images = {"noisy": job.image.pixels, "pretrained": to_pixels(pretrained), "adapted": to_pixels(adapted)}
    scores: dict[str, Any] = {"reference": str(reference_path)}
    for name, pixels in images.items():
        pixels = quantize(pixels, bit_depth)
        scores[name] = {"psnr": round(psnr(pixels, reference), 4), "ssim": round(ssim(pixels, reference), 5)}
    return scores


def read_reference(reference_path: str, job) -> np.ndarray:
    """The pixels of the clean reference of ``job`` (loaded); :class:`ImageError` where their shape differs.
    A grey RGB reference of an input taken as gray is read as gray too."""
    image = read_image(reference_path)
    reference = image.to_gray().pixels if job.info.stored_channels and image.grey_rgb else image.pixels
    if reference.shape != job.image.pixels.shape:
        raise ImageError(
            f"{reference_path}: reference is {reference.shape}, the input {job.image.pixels.shape}"
        )
    return reference


def sample_paths() -> tuple[Path, Path]:
    """The bundled noisy sample and its clean reference (rocket launch towers, public domain, σ = 25)."""
    root = Path(str(resources.files("rfr_deploy") / "data"))
    return root / "sample_noisy.png", root / "sample_clean.png"
