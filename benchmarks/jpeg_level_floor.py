"""A floor under the level a noise-map network is told on a JPEG, from the file's quantization steps.

On smooth crops at low σ a JPEG's quantization takes nearly all the noise: the level read off the file
(σ̂) and the aimed one read near 0, and official FFDNet told them leaves the blocking in place, while told
the σ the noise had before compression it removes both (stop 60: McMaster 11 at σ = 10, quality 75, 4:4:4:
aimed 0.77, 32.48 dB; told 10, 36.58). The quantization itself bounds the error it leaves: a coefficient
quantized with step q errs by at most q/2, about q/√12 in RMS where it is not zeroed. This measures, per
file, the told level ``max(aimed, c · floor)`` with ``floor = sqrt(mean(q_luma²) / 12)`` (grey levels; the
luma's 64 steps), for a few ``c``, next to the best level of a grid, on clean and noisy files.

    python benchmarks/jpeg_level_floor.py --sigmas 0,2,5,10,25 --qualities 50,75,90 --threads 1
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
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
from jpeg_told_level import read_jpeg
from PIL import Image

from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.jpeg import aim_white_level
from rfr_deploy.shared import shared_path

GRID = (0, 1, 2.5, 5, 7.5, 10, 12.5, 15, 20, 25, 30, 40, 50)
FACTORS = (0.5, 1.0, 1.5, 2.0)


@torch.no_grad()
def measure(ffdnet, path: Path, clean: np.ndarray) -> dict:
    x, reference, level, noise = read_jpeg(path, clean)

    def told(sigma: float) -> float:
        return psnr(ffdnet(x, torch.tensor([sigma])).clamp(0, 1), reference)

    first = ffdnet(x, torch.tensor([level])).clamp(0, 1)
    aimed = aim_white_level(noise, first, level, torch.Generator().manual_seed(0), noise_map=True) * 255
    floor = noise.tables.step_level() * 255
    grid = {s: told(s / 255) for s in GRID}
    best = max(grid, key=grid.get)
    row = {"sigma_hat": level * 255, "aimed": aimed, "psnr_aimed": told(aimed / 255), "floor": floor}
    for c in FACTORS:
        row[f"psnr_floor_{c:g}"] = told(max(aimed, c * floor) / 255)
    row.update(best=best, psnr_best=grid[best])
    return {k: round(float(v), 3) for k, v in row.items()}


def run_case(ffdnet, args, sigma: float, quality: int) -> list[dict]:
    rng, rows = np.random.default_rng(0), []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crop.jpg"
        for name, image_name, clean in central_crops(args):
            noisy = np.clip(np.round(clean * 255 + rng.standard_normal(clean.shape) * sigma), 0, 255)
            buffer = io.BytesIO()
            Image.fromarray(noisy.astype(np.uint8)).save(
                buffer, "JPEG", quality=quality, subsampling=args.subsampling
            )
            path.write_bytes(buffer.getvalue())
            rows.append(
                {
                    "set": name,
                    "image": image_name,
                    "sigma": sigma,
                    "quality": quality,
                    **measure(ffdnet, path, clean),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)
    return rows


def render(args, rows: list[dict]) -> str:
    head = "| σ | quality | floor | σ̂ | aimed | told aimed | " + " | ".join(f"floor ×{c:g}" for c in FACTORS)
    lines = [
        f"# A floor under the told level: official FFDNet on {SUBSAMPLING[args.subsampling]} JPEGs",
        "",
        f"{args.limit} images of each of {args.datasets}, central {args.crop}² crops, white Gaussian noise clipped "
        "to 8 bits, saved as JPEG; no adaptation. Mean PSNR in dB told max(aimed, c · floor), floor = "
        f"sqrt(mean(q_luma²)/12) in grey levels; best: the best level of the grid {GRID} per crop.",
        "",
        head + " | best of the grid | crops where floor ×1 loses > 0.05 dB to aimed |",
        "|---:|---:|" + "---:|" * (5 + len(FACTORS)),
    ]
    cases = sorted({(r["sigma"], r["quality"]) for r in rows})
    for sigma, quality in cases:
        group = [r for r in rows if (r["sigma"], r["quality"]) == (sigma, quality)]
        mean = lambda key, group=group: statistics.mean(r[key] for r in group)  # noqa: E731
        losses = sum(r["psnr_floor_1"] < r["psnr_aimed"] - 0.05 for r in group)
        cells = [
            f"{sigma:g}",
            str(quality),
            f"{mean('floor'):.2f}",
            f"{mean('sigma_hat'):.2f}",
            f"{mean('aimed'):.2f}",
        ]
        cells += [f"{mean('psnr_aimed'):.2f}"] + [f"{mean(f'psnr_floor_{c:g}'):.2f}" for c in FACTORS]
        cells += [f"{mean('psnr_best'):.2f}", f"{losses} of {len(group)}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"`python benchmarks/jpeg_level_floor.py --sigmas {args.sigmas} --qualities {args.qualities} "
        f"--subsampling {args.subsampling} --threads {args.threads}`",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_central_crop_arguments(parser)
    add_subsampling_argument(parser)
    parser.add_argument("--sigmas", default="0,2,5,10,25")
    parser.add_argument("--qualities", default="50,75,90")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ffdnet = create_model("ffdnet", weights=str(shared_path("weights", "ffdnet", "ffdnet_color.pth"))).eval()
    rows = []
    for quality in (int(q) for q in args.qualities.split(",")):
        for sigma in (float(s) for s in args.sigmas.split(",")):
            rows += run_case(ffdnet, args, sigma, quality)
    layout = SUBSAMPLING[args.subsampling].replace(":", "")
    name = args.name or f"jpeg_level_floor_{layout}"
    report(name, {"args": vars(args), "environment": environment(), "rows": rows}, render(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
