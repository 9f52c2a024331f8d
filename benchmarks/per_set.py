"""Per-image vs per-set restore-from-restored adaptation: quality and wall time.

One network adapted to a whole set of related images (``rfr-deploy adapt-and-export
DIR --per-set``, updates spread round-robin over the set) is exported and deployed
once; per-image adaptation gives every image its own network. This script measures
what each costs and gains on synthetic noise:

* sets of related images: 128×128 crops of one Kodak24 photograph (same scene), and
  one crop from each of several McMaster images (same camera data set);
* Gaussian noise σ = 25 added to the clean crops (seed 0), 8-bit quantised;
* CDnCNN-B (the official blind colour DnCNN weights, ``shared/weights``);
* pre-trained output, per-image adaptation (M steps per image), per-set adaptation
  with the same M steps in total (the compute of one image) and with M × images steps
  (the compute of per-image adaptation);
* PSNR/SSIM of 8-bit outputs against the clean crops, wall time of adaptation + outputs.

    python benchmarks/per_set.py              # writes benchmarks/results/per_set.{md,json}
    python benchmarks/per_set.py --steps 20 --crop 192 --images 6

Timings are wall-clock seconds on whatever CPU/GPU runs the script; on a shared
machine they are indicative only (the results file records the device).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rfr_deploy import __version__
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.devices import describe_device
from rfr_deploy.files import atomic_write
from rfr_deploy.images import quantize, read_image
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.metrics import psnr, ssim
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.shared import shared_available, shared_path

RESULTS = Path(__file__).resolve().parent / "results"
WEIGHTS = ("weights", "dncnn", "dncnn_color_blind.pth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=AdaptConfig.steps, help="adaptation steps per image (M)")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--images", type=int, default=4, help="images per set")
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--lr", type=float, default=AdaptConfig.lr)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=RESULTS / "per_set")
    args = parser.parse_args()
    if not shared_available():
        raise SystemExit("the shared data folder is needed (set RFR_SHARED)")
    torch.set_num_threads(args.threads)
    model = create_model("dncnn", weights=str(shared_path(*WEIGHTS)), channels=3).eval()
    sets = {
        "kodim_crops": kodak_crops("kodim01.png", args.images, args.crop),
        "mcmaster_crops": mcmaster_crops(args.images, args.crop),
    }
    started = time.perf_counter()
    results = {name: run_set(model, clean, args) for name, clean in sets.items()}
    record = {
        "benchmark": "per_set",
        "rfr_deploy_version": __version__,
        "settings": {
            "model": "dncnn (CDnCNN-B, official blind colour weights)",
            "noise": f"gaussian sigma={args.sigma:g}, seed 0, 8-bit quantised",
            "crop": args.crop,
            "images_per_set": args.images,
            "steps_per_image": args.steps,
            "lr": args.lr,
            "batch": 1,
            "threads": args.threads,
            "device": describe_device(torch.device("cpu")),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "sets": results,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    with atomic_write(args.output.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(record))
    print(markdown(record))


def kodak_crops(name: str, count: int, size: int) -> list[np.ndarray]:
    """Non-overlapping crops of one photograph, row by row from the top-left corner."""
    image = read_image(shared_path("data", "test", "Kodak24", name)).pixels
    h, w = image.shape[:2]
    corners = [(y, x) for y in range(0, h - size + 1, size) for x in range(0, w - size + 1, size)]
    step = max(1, len(corners) // count)
    return [image[y : y + size, x : x + size] for y, x in corners[::step][:count]]


def mcmaster_crops(count: int, size: int) -> list[np.ndarray]:
    """The centre crop of each of the first ``count`` McMaster images (sorted by number)."""
    folder = shared_path("data", "test", "McMaster")
    paths = sorted(folder.glob("*.tif"), key=lambda p: int(p.stem))[:count]
    crops = []
    for path in paths:
        image = read_image(path).pixels
        top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
        crops.append(image[top : top + size, left : left + size])
    return crops


def run_set(model, clean: list[np.ndarray], args) -> dict:
    rng = np.random.default_rng(0)
    noisy = [
        quantize(c + rng.standard_normal(c.shape).astype(np.float32) * (args.sigma / 255.0)) for c in clean
    ]
    tensors = [to_tensor(n) for n in noisy]
    noise = GaussianNoise(args.sigma / 255)
    n, m = len(clean), args.steps
    rows = {}

    t = time.perf_counter()
    outputs = [denoise(model, x) for x in tensors]
    rows["pre-trained"] = score(outputs, clean, time.perf_counter() - t, 0)

    t = time.perf_counter()
    outputs = []
    for x in tensors:
        result = adapt(model, x, noise, AdaptConfig(steps=m, lr=args.lr))
        outputs.append(denoise(result.model, x))
    rows[f"per-image, {m} steps each"] = score(outputs, clean, time.perf_counter() - t, n * m)

    for total in (m, n * m):
        t = time.perf_counter()
        result = adapt(model, tensors, noise, AdaptConfig(steps=total, lr=args.lr))
        outputs = [denoise(result.model, x) for x in tensors]
        rows[f"per-set, {total} steps in total"] = score(outputs, clean, time.perf_counter() - t, total)
    return {"images": n, "rows": rows}


def score(outputs: list[torch.Tensor], clean: list[np.ndarray], seconds: float, steps: int) -> dict:
    pixels = [quantize(to_pixels(o)) for o in outputs]
    p = [psnr(x, c) for x, c in zip(pixels, clean, strict=True)]
    s = [ssim(x, c) for x, c in zip(pixels, clean, strict=True)]
    return {
        "psnr_mean": round(statistics.fmean(p), 3),
        "ssim_mean": round(statistics.fmean(s), 4),
        "psnr_per_image": [round(v, 3) for v in p],
        "updates": steps,
        "seconds": round(seconds, 1),
    }


def markdown(record: dict) -> str:
    s = record["settings"]
    lines = [
        "# Per-image vs per-set adaptation",
        "",
        f"Model: {s['model']}. Noise: {s['noise']}. {s['images_per_set']} crops of {s['crop']}×{s['crop']} "
        f"per set; M = {s['steps_per_image']} updates per image, lr {s['lr']:g}, batch 1. "
        f"Device: {s['device']} (torch {s['torch']}; shared machine, timings indicative). "
        f"rfr-deploy {record['rfr_deploy_version']}. Total run time {record['total_seconds']} s.",
        "",
        "`python benchmarks/per_set.py` regenerates this file.",
        "",
    ]
    for name, data in record["sets"].items():
        lines += [
            f"## {name} ({data['images']} images)",
            "",
            "| method | updates | PSNR (dB) | SSIM | wall time (s) |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for method, row in data["rows"].items():
            lines.append(
                f"| {method} | {row['updates']} | {row['psnr_mean']:.2f} | {row['ssim_mean']:.4f} | {row['seconds']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
