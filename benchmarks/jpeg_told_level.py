"""What level to tell a noise-map network on a JPEG: the one read off the file, or the aimed one.

Central crops of colour test images get white Gaussian noise of σ (clipped, 8-bit) and are saved as JPEGs
of one quality and chroma layout. Official FFDNet colour, without adaptation, denoises each told:

- σ̂: the level read off the file (``estimate_noise_level`` told how the file stored its chroma, as a job
  reads it); the compression lowered it;
- aimed: the white level that, compressed with the file's tables onto FFDNet's output at σ̂, reads σ̂
  (``noise.jpeg.aim_white_level``, as a job aims its synthetic noise), which a job tells the network since
  stop 60;
- aimed twice: aimed again on the output at the aimed level;
- the best level of a grid, for comparison.

    python benchmarks/jpeg_told_level.py --sigma 10 --quality 75 --subsampling 0 --threads 1
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path

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
from PIL import Image

from rfr_deploy.images import read_image
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.noise.jpeg import JpegStoredNoise, JpegTables, aim_white_level
from rfr_deploy.noise.level import estimate_noise_level
from rfr_deploy.shared import shared_path

GRID = (5, 7.5, 10, 12.5, 15, 20, 25, 30, 35, 40, 50)
"""Levels (grey levels) FFDNet is told, to find the best one per crop."""
KEYS = ("sigma_hat", "psnr_hat", "aimed", "psnr_aimed", "aimed_twice", "psnr_twice", "best", "psnr_best")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_central_crop_arguments(parser)
    parser.add_argument("--sigma", type=int, default=10, help="grey levels")
    parser.add_argument("--quality", type=int, default=75, help="JPEG quality")
    add_subsampling_argument(parser)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args()


def read_jpeg(path: Path, clean: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, float, JpegStoredNoise]:
    """The colour JPEG at ``path`` as a job reads it for a noise-map network: its pixels and ``clean`` (both
    1×3×H×W), the level read off it ([0, 1] units), and white noise at that level compressed as it was."""
    image = read_image(path)
    x = torch.from_numpy(image.pixels).permute(2, 0, 1)[None].float()
    reference = torch.from_numpy(clean).permute(2, 0, 1)[None]
    chroma = "subsampled" if image.chroma_subsampling != (1, 1) else "jpeg"
    level = estimate_noise_level(x, noise_map=True, chroma=chroma).sigma
    tables = JpegTables(*image.jpeg_tables)
    return x, reference, level, JpegStoredNoise(GaussianNoise(level), tables, image.chroma_subsampling)


@torch.no_grad()
def measure(ffdnet, path: Path, clean: np.ndarray) -> dict:
    """The levels and PSNRs of :data:`KEYS` for the JPEG at ``path`` (levels in grey levels)."""
    x, reference, level, noise = read_jpeg(path, clean)

    def told(sigma: float) -> torch.Tensor:
        return ffdnet(x, torch.tensor([sigma])).clamp(0, 1)

    def aim(output: torch.Tensor) -> float:
        return aim_white_level(noise, output, level, torch.Generator().manual_seed(0), noise_map=True)

    first = told(level)
    aimed = aim(first)
    second = told(aimed)
    twice = aim(second)
    grid = {s: psnr(told(s / 255), reference) for s in GRID}
    best = max(grid, key=grid.get)
    values = (level * 255, psnr(first, reference), aimed * 255, psnr(second, reference))
    values += (twice * 255, psnr(told(twice), reference), best, grid[best])
    return dict(zip(KEYS, (round(float(v), 3) for v in values), strict=True))


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    weights = shared_path("weights", "ffdnet", "ffdnet_color.pth")
    ffdnet = create_model("ffdnet", weights=str(weights)).eval()
    rng, rows = np.random.default_rng(0), []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crop.jpg"
        for name, image_name, clean in central_crops(args):
            noisy = np.clip(np.round(clean * 255 + rng.standard_normal(clean.shape) * args.sigma), 0, 255)
            buffer = io.BytesIO()
            Image.fromarray(noisy.astype(np.uint8)).save(
                buffer, "JPEG", quality=args.quality, subsampling=args.subsampling
            )
            path.write_bytes(buffer.getvalue())
            rows.append({"set": name, "image": image_name, **measure(ffdnet, path, clean)})
            print(rows[-1], flush=True)
    layout = SUBSAMPLING[args.subsampling].replace(":", "")
    report(
        f"jpeg_told_level_sigma{args.sigma}_q{args.quality}_{layout}",
        {"args": vars(args), "environment": environment(), "rows": rows},
        render(args, rows),
    )


def render(args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        f"# Official FFDNet on {SUBSAMPLING[args.subsampling]} JPEGs (quality {args.quality}, σ = {args.sigma}): "
        "the level it is told",
        "",
        f"- {args.limit} images of each of {args.datasets}, central {args.crop}² crops, white Gaussian noise "
        "clipped to 8 bits, saved as JPEG. No adaptation. Levels in grey levels, PSNR in dB against the clean "
        f"crop; best: the best level of the grid {GRID}.",
        "",
        "| set | image | σ̂ | told σ̂ | aimed | told aimed | aimed twice | told aimed twice | best | told best |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['set']} | {r['image']} | " + " | ".join(f"{r[k]:.2f}" for k in KEYS) + " |")
    means = [statistics.fmean(r[k] for r in rows) for k in KEYS]
    lines.append("| **mean** | | " + " | ".join(f"**{m:.2f}**" for m in means) + " |")
    aimed_better = sum(r["psnr_aimed"] > r["psnr_hat"] for r in rows)
    worst = min(r["psnr_aimed"] - r["psnr_hat"] for r in rows)
    lines += [
        "",
        f"Told the aimed level: better on {aimed_better} of {len(rows)} crops, the worst crop {worst:+.2f} dB.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
