"""Table 1 of the paper: an image made of k identical patches.

A clean patch is tiled √k × √k times, Gaussian noise is added, and we report (mean over patches,
PSNR/SSIM against the clean patch):
  * ``pretrained``: each of the k denoised copies scored on its own (the network's quality);
  * ``average``: the average of the k denoised copies (the ideal that recurrence allows);
  * ``adapted``: the copies denoised by the network after restore-from-restored adaptation (M steps,
    CLI defaults), which should move from ``pretrained`` towards ``average`` as k grows.

    python benchmarks/table1_patches.py --models dncnn:dncnn/dncnn_color_blind.pth --patches 6
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from common import environment, write_results

from rfr_deploy.adaptation.config import GAUSSIAN_STEPS, AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.datasets import convert_channels, load_folder
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise
from rfr_deploy.metrics import psnr, ssim
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.shared import shared_path

KS = (1, 4, 9, 16, 25)


def split(pixels: np.ndarray, side: int, n: int) -> list[np.ndarray]:
    return [pixels[i * side : (i + 1) * side, j * side : (j + 1) * side] for i in range(n) for j in range(n)]


def score(images: list[np.ndarray], reference: np.ndarray) -> tuple[float, float]:
    return (
        statistics.fmean(psnr(quantize(x), reference) for x in images),
        statistics.fmean(ssim(quantize(x), reference) for x in images),
    )


def run_model(name: str, weights: str, patches: list[np.ndarray], sigma: float, config: AdaptConfig) -> dict:
    model = create_model(name, weights=weights)  # colour where the weights are, else gray
    patches = [convert_channels(p, model.meta.channels) for p in patches]
    rows = {}
    for k in KS:
        n = int(round(k**0.5))
        acc = {"pretrained": [], "average": [], "adapted": []}
        for index, patch in enumerate(patches):
            side = patch.shape[0]
            clean = to_tensor(np.tile(patch, (n, n, 1)))
            noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=1000 * k + index)
            sigma_in = sigma / 255.0 if model.meta.noise_map else None
            before = split(to_pixels(denoise(model, noisy, sigma=sigma_in)), side, n)
            result = adapt(
                model,
                noisy,
                GaussianNoise(sigma / 255),
                dataclasses.replace(config, seed=index),
                sigma=sigma_in,
            )
            after = split(to_pixels(denoise(result.model, noisy, sigma=sigma_in)), side, n)
            acc["pretrained"].append(score(before, patch))
            acc["average"].append(score([np.mean(before, axis=0)], patch))
            acc["adapted"].append(score(after, patch))
        rows[k] = {
            name: {
                "psnr": round(statistics.fmean(v[0] for v in vals), 4),
                "ssim": round(statistics.fmean(v[1] for v in vals), 5),
            }
            for name, vals in acc.items()
        }
        print(name, k, rows[k], flush=True)
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        default="dncnn:dncnn/dncnn_color_blind.pth",
        help="comma-separated NAME:WEIGHTS (WEIGHTS under shared/weights, a path, or 'default')",
    )
    parser.add_argument("--dataset", default="Kodak24")
    parser.add_argument("--patches", type=int, default=6, help="number of clean patches (one per image)")
    parser.add_argument("--size", type=int, default=48, help="patch side")
    parser.add_argument("--sigma", type=float, default=25)
    parser.add_argument("--steps", type=int, default=GAUSSIAN_STEPS)
    parser.add_argument("--name", default="table1_patches", help="results file name under benchmarks/results")
    return parser.parse_args()


def textured_patches(dataset: str, count: int, size: int) -> list:
    """The most textured ``size``² patch of each of the first ``count`` images: recurrence matters most there."""
    patches = []
    for item in load_folder(shared_path("data", "test", dataset), limit=count):
        h, w = item.pixels.shape[:2]
        candidates = [
            item.pixels[y : y + size, x : x + size]
            for y in range(0, h - size, size)
            for x in range(0, w - size, size)
        ]
        patches.append(max(candidates, key=lambda p: float(p.std())).copy())
    return patches


def to_markdown(args, payload: dict) -> str:
    lines = [
        "# Table 1: k identical patches",
        "",
        f"{args.patches} patches of {args.size}² from {args.dataset} (most textured per image; gray models see their BT.601 luma), σ = {args.sigma:g}, "
        f"M = {args.steps}, device {payload['environment']['device']}.",
        "",
        "PSNR dB (SSIM): each denoised copy alone / average of the k copies / after adaptation.",
        "",
        "| model | " + " | ".join(f"k={k}" for k in KS) + " |",
        "|---" * (len(KS) + 1) + "|",
    ]
    for spec, rows in payload["results"].items():
        cells = [
            f"{r['pretrained']['psnr']:.2f} / {r['average']['psnr']:.2f} / {r['adapted']['psnr']:.2f}"
            for r in (rows[k] for k in KS)
        ]
        lines.append(f"| {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    config = AdaptConfig(steps=args.steps)
    patches = textured_patches(args.dataset, args.patches, args.size)
    results = {}
    started = time.perf_counter()
    for spec in args.models.split(","):
        name, _, weights = spec.partition(":")
        path = (
            weights
            if weights in ("default",) or weights.startswith("/")
            else str(shared_path("weights", weights))
        )
        results[spec] = run_model(name, path, patches, args.sigma, config)
    payload = {
        "protocol": vars(args),
        "adapt": dataclasses.asdict(config),
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    write_results(args.name, payload, to_markdown(args, payload))


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
