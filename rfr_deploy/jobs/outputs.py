"""The images a job writes next to its manifest: ``<stem>_<tag>.png`` (``.tif`` for TIFF inputs), at the
input's bit depth (8 or 16 bits)."""

from __future__ import annotations

from pathlib import Path

import torch

from rfr_deploy.images import Image, write_image
from rfr_deploy.inference import to_pixels
from rfr_deploy.jobs.inputs import ImageJob


def write_output(out_dir: Path, job: ImageJob, tag: str, clean: torch.Tensor) -> Path:
    """Write ``clean`` (``1×C×H×W``) as ``OUT/<input stem>_<tag><suffix>``; returns its path."""
    suffix = ".tif" if job.path.suffix.lower() in (".tif", ".tiff") else ".png"
    target = out_dir / f"{job.path.stem}_{tag}{suffix}"
    write_image(target, to_pixels(clean), bit_depth=output_bit_depth(job.image))
    return target


def output_bit_depth(image: Image) -> int:
    """16 for 16-bit and float inputs, else 8."""
    return 16 if image.bit_depth >= 16 else 8
