"""The noise level of colour JPEGs, whose chroma lost some or all of its noise, and what it costs.

Central crops of colour test images get white Gaussian noise of σ (clipped, 8-bit), and are stored as
PNG or as JPEG of each quality with 4:2:0 (Pillow's default, and most cameras'), 4:2:2 or 4:4:4 chroma.
Per image and kind: the colour estimate the library used before stop 56 (the patch-covariance rule on
colour patches: all patches, or the weak-texture ones where the two disagree), the larger of the two
colour estimates, which the switch to the luma compares, the luma estimate
(``rfr_deploy.noise.level.luma_sigma``) and ``estimate_noise_level`` told how the file stored its chroma,
as a job is (``ImageJob.chroma_storage``); and official FFDNet colour told each level, against the
clean crop, with the best level of a grid for comparison, and official blind CDnCNN-B.

    python benchmarks/jpeg_noise_level.py --threads 1
    python benchmarks/jpeg_noise_level.py --subsampling 0 --quality 50,75,90,95 --suffix _444 --threads 1
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics

import numpy as np
import torch
from common import (
    SUBSAMPLING,
    add_central_crop_arguments,
    add_subsampling_argument,
    central_crops,
    environment,
    report,
)

from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.level import (
    AGREEMENT,
    CHROMA_DROPPED,
    JPEG_CHROMA_KEPT,
    estimate_noise_level,
    estimate_sigma,
    luma_sigma,
)
from rfr_deploy.shared import shared_path

GRID = (5, 10, 15, 20, 25, 30, 35, 40, 50, 60)
"""Levels (grey levels) FFDNet is told, to find the best one per image."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_central_crop_arguments(parser)
    parser.add_argument("--sigmas", default="2,5,10,25,50", help="grey levels")
    parser.add_argument("--quality", default="90", help="JPEG qualities, comma-separated")
    add_subsampling_argument(parser)
    parser.add_argument("--suffix", default="", help="added to the results file's name")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def colour_estimate(x: torch.Tensor) -> float:
    """The colour estimate as before stop 56: the all-patch value where the two agree, else the weak-texture one."""
    plain, weak = estimate_sigma(x, iterations=0), estimate_sigma(x)
    return plain if abs(plain / max(weak, 1e-12) - 1.0) <= AGREEMENT else weak


def stored(noisy: np.ndarray, kind: str, quality: int) -> torch.Tensor:
    """``noisy`` (H×W×3 uint8) as read back from a PNG (exact) or a JPEG of ``kind`` (``jpeg420`` ...)."""
    if kind != "png":
        from PIL import Image

        layout = next(k for k in SUBSAMPLING if kind == jpeg_kind(k))
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=quality, subsampling=layout)
        buffer.seek(0)
        noisy = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(noisy.copy()).permute(2, 0, 1).float() / 255


def jpeg_kind(subsampling: int) -> str:
    """The kind of a JPEG of Pillow's ``subsampling``: ``jpeg444``, ``jpeg422`` or ``jpeg420``."""
    return "jpeg" + SUBSAMPLING[subsampling].replace(":", "")


def chroma_storage(kind: str) -> str:
    """What a job reads off such a file's header (``ImageJob.chroma_storage``)."""
    return {"png": "plain", "jpeg444": "jpeg"}.get(kind, "subsampled")


def measure(clean: np.ndarray, x: torch.Tensor, kind: str, networks) -> dict:
    ffdnet, cdncnn = networks
    reference = torch.from_numpy(clean).permute(2, 0, 1)[None]
    old, luma = colour_estimate(x), luma_sigma(x)
    plain, new = estimate_noise_level(x).sigma, estimate_noise_level(x, chroma=chroma_storage(kind)).sigma

    def told(level: float) -> float:
        with torch.no_grad():
            return psnr(ffdnet(x[None], torch.tensor([level])).clamp(0, 1), reference)

    grid = {s: told(s / 255) for s in GRID}
    with torch.no_grad():
        blind = psnr(cdncnn(x[None]).clamp(0, 1), reference)
    best = max(grid, key=grid.get)
    return {
        "old": 255 * old,
        "colour": 255 * max(estimate_sigma(x, iterations=0), estimate_sigma(x)),
        "luma": 255 * luma,
        "plain": 255 * plain,
        "new": 255 * new,
        "psnr_old": told(old),
        "psnr_plain": told(plain),
        "psnr_new": told(new),
        "best_sigma": best,
        "psnr_best": grid[best],
        "psnr_cdncnn": blind,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    weights = shared_path("weights")
    networks = (
        create_model("ffdnet", weights=str(weights / "ffdnet" / "ffdnet_color.pth")).eval(),
        create_model("dncnn", weights=str(weights / "dncnn" / "dncnn_color_blind.pth")).eval(),
    )
    qualities = [int(q) for q in args.quality.split(",")]
    stores = [("png", None)] + [(jpeg_kind(args.subsampling), q) for q in qualities]
    rng, rows = np.random.default_rng(0), []
    for name, image_name, clean in central_crops(args):
        for sigma in (int(s) for s in args.sigmas.split(",")):
            noisy = np.clip(np.round(clean * 255 + rng.standard_normal(clean.shape) * sigma), 0, 255)
            for kind, quality in stores:
                x = stored(noisy.astype(np.uint8), kind, quality)
                rows.append(
                    {"set": name, "image": image_name, "sigma": sigma, "kind": kind, "quality": quality}
                )
                rows[-1].update(measure(clean, x, kind, networks))
                print(rows[-1], flush=True)
    report(
        f"jpeg_noise_level{args.suffix}",
        {"args": vars(args), "environment": environment(), "rows": rows},
        render(args, rows, stores),
    )


def _mean(group: list[dict], key: str) -> float:
    return statistics.fmean(r[key] for r in group)


def render(args: argparse.Namespace, rows: list[dict], stores: list[tuple[str, int | None]]) -> str:
    layout = SUBSAMPLING[args.subsampling]
    lines = [
        f"# The noise level of {layout} JPEGs (chroma without some or all of its noise)",
        "",
        f"- {args.limit} images of each of {args.datasets}, central {args.crop}² crops, white Gaussian noise "
        f"clipped to 8 bits, stored as PNG or JPEG (quality {args.quality}, {layout}). Levels in grey levels.",
        "- old: the colour estimate used before stop 56; colour: the larger of the two colour estimates; luma: "
        "`luma_sigma` (the colour/luma range over crops whose luma reads at least 0.1); as colour: "
        f"`estimate_noise_level` not told the file's kind (the luma's below {CHROMA_DROPPED} × luma: how "
        "full-chroma JPEGs were read until stop 60); new: told how the file stored its chroma (the luma's for "
        f"subsampled chroma; for 4:4:4 where colour is below {JPEG_CHROMA_KEPT} × luma; for PNG below "
        f"{CHROMA_DROPPED} × luma). PSNR: official FFDNet colour told the level, against the clean crop; "
        f"best: the best level of a grid {GRID}; CDnCNN-B: the official blind network.",
        "",
        "| σ | stored as | quality | old σ̂ (mean) | colour σ̂ | luma σ̂ | as colour σ̂ | new σ̂ | colour/luma "
        "(min–max) | FFDNet at old dB | at as colour dB | at new dB | at best dB | CDnCNN-B dB | new switched to luma |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sigma in sorted({r["sigma"] for r in rows}):
        for kind, quality in stores:
            group = [r for r in rows if r["sigma"] == sigma and r["kind"] == kind and r["quality"] == quality]
            mean = functools.partial(_mean, group)
            ratios = [r["colour"] / r["luma"] for r in group if r["luma"] >= 0.1] or [float("nan")]
            switched = sum(abs(r["new"] - r["luma"]) < 1e-9 for r in group)
            lines.append(
                f"| {sigma} | {kind} | {quality or '–'} | {mean('old'):.2f} | {mean('colour'):.2f} | "
                f"{mean('luma'):.2f} | {mean('plain'):.2f} | {mean('new'):.2f} | {min(ratios):.2f}–{max(ratios):.2f} | "
                f"{mean('psnr_old'):.2f} | {mean('psnr_plain'):.2f} | {mean('psnr_new'):.2f} | {mean('psnr_best'):.2f} | "
                f"{mean('psnr_cdncnn'):.2f} | {switched} of {len(group)} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
