"""Pack what ``benchmarks/gpu_check.sh`` needs from ../shared into ``gpu_pack/`` (git-ignored).

The GPU machine receives the repository without ../shared, and everything carried (working tree
included) must stay under 64 MiB. So the training and test images travel as compact uint8 arrays:

* ``train_gray.npz``: BSD400, all 400 images (180×180), DnCNN's gray training set;
* ``train_color.npz``: CBSD432, one random 128×128 crop per image (the whole set is 32 MB of JPEG);
* ``test.npz``: Set12 (whole images) and central 256² crops of the first 12 CBSD68 images, for a
  quick PSNR check of the trained weights on the GPU (the README's numbers come from whole sets).

    python benchmarks/pack_gpu_data.py            # writes gpu_pack/, prints the sizes
    python benchmarks/pack_gpu_data.py --out /tmp/cpu_pack --color-crop 320 --limit-mb 1000   # CPU training
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rfr_deploy.datasets import load_folder
from rfr_deploy.jobs.evaluate import center_crop
from rfr_deploy.shared import shared_path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_MB = 40.0
"""Most the pack may weigh: the tracked tree is ~21 MB of the 64 MiB a device call carries."""


def uint8(pixels: np.ndarray) -> np.ndarray:
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def pack(out: Path, color_crop: int, test_color: int, seed: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gray = np.stack(
        [uint8(item.pixels) for item in load_folder(shared_path("data", "train", "BSD400"), channels=1)]
    )
    crops = []
    for item in load_folder(shared_path("data", "train", "CBSD432"), channels=3):
        h, w = item.pixels.shape[:2]
        y, x = rng.integers(0, h - color_crop + 1), rng.integers(0, w - color_crop + 1)
        crops.append(uint8(item.pixels[y : y + color_crop, x : x + color_crop]))
    test = {
        f"gray_{item.name}": uint8(item.pixels) for item in load_folder(shared_path("data", "test", "Set12"))
    }
    for item in load_folder(shared_path("data", "test", "CBSD68"), limit=test_color):
        test[f"color_{item.name}"] = uint8(center_crop(item.pixels, 256))
    paths = [out / "train_gray.npz", out / "train_color.npz", out / "test.npz"]
    np.savez_compressed(paths[0], images=gray)
    np.savez_compressed(paths[1], images=np.stack(crops))
    np.savez_compressed(paths[2], **test)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "gpu_pack")
    parser.add_argument("--color-crop", type=int, default=128)
    parser.add_argument("--test-color", type=int, default=12, help="CBSD68 images in the test pack")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit-mb",
        type=float,
        default=LIMIT_MB,
        help="refuse a larger pack (CPU training: no limit needed)",
    )
    args = parser.parse_args()
    paths = pack(args.out, args.color_crop, args.test_color, args.seed)
    total = sum(p.stat().st_size for p in paths) / 1e6
    for p in paths:
        print(f"{p}: {p.stat().st_size / 1e6:.1f} MB")
    print(f"total {total:.1f} MB (limit {args.limit_mb:g} MB)")
    if total > args.limit_mb:
        print(f"error: the pack weighs {total:.1f} MB, over {args.limit_mb:g} MB", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
