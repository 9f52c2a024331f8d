"""SURE on clipped 8-bit inputs: its PSNR estimate against the true PSNR, with and without leaving the
saturated values (0 and 255) out of the residual and the divergence.

Noisy images are what an 8-bit file holds: round(clip(x + σn, 0, 1) · 255) / 255. Part 1 scores the
pre-trained network (official DnCNN-B / CDnCNN-B) on central crops of every shared test set; the
true PSNR is that of its (unrounded) output against the clean crop, over all pixels. Part 2 adapts
a few crops (CLI defaults, the last weights θ_M) and lets SURE choose the interpolation weight α of
θ0 + α(θ_M − θ0) with either estimator; the gain is the true PSNR of the chosen α over α = 0.

    python benchmarks/sure_clipping.py --threads 1 --limit 6 --crop 256 --sigmas 15,25 --adapt 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from common import environment, write_results

from rfr_deploy.adaptation.blending import interpolated
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.sure import CANDIDATES, draw_probes, probe_count, select_interpolation, sure_mse
from rfr_deploy.datasets import load_folder
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise, center_crop
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.base import QuantizedNoise
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.shared import shared_path

SETS = ("Set12", "BSD68", "CBSD68", "Kodak24", "McMaster")
WEIGHTS = {1: "dncnn/dncnn_gray_blind.pth", 3: "dncnn/dncnn_color_blind.pth"}
ESTIMATORS = {"clip-aware": True, "all values": False}


def clipped_noisy(clean: torch.Tensor, sigma: float, index: int) -> torch.Tensor:
    noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=index)
    return torch.round(noisy.clamp(0, 1) * 255) / 255


def sure_db(model, noisy: torch.Tensor, sigma: float, seed: int, exclude: bool) -> float:
    probes = draw_probes([noisy], seed, probe_count([noisy]))[0]
    mse = sure_mse(model, noisy, sigma / 255, probes=probes, clipping=exclude)
    return -10 * math.log10(mse) if mse > 0 else math.inf


def score_crops(dataset: str, sigma: float, limit: int, crop: int) -> list[dict]:
    rows = []
    for index, item in enumerate(load_folder(shared_path("data", "test", dataset), limit=limit)):
        pixels = center_crop(item.pixels, crop or None)
        model = create_model("dncnn", weights=str(shared_path("weights", WEIGHTS[pixels.shape[2]]))).eval()
        clean = to_tensor(pixels)
        noisy = clipped_noisy(clean, sigma, index)
        row = {
            "image": item.name,
            "clipped": float(((noisy == 0) | (noisy == 1)).float().mean()),
            "true_db": psnr(to_pixels(denoise(model, noisy)), pixels),
        }
        for name, exclude in ESTIMATORS.items():
            row[name] = sure_db(model, noisy, sigma, index, exclude)
        rows.append(row)
    return rows


def select_on_crop(dataset: str, index: int, sigma: float, crop: int, steps: int) -> dict:
    item = load_folder(shared_path("data", "test", dataset), limit=index + 1)[index]
    pixels = center_crop(item.pixels, crop or None)
    model = create_model("dncnn", weights=str(shared_path("weights", WEIGHTS[pixels.shape[2]]))).eval()
    noisy = clipped_noisy(to_tensor(pixels), sigma, index)
    origin = [p.detach().clone() for p in model.parameters()]
    config = AdaptConfig(steps=steps, seed=index, select="off", interpolation=1.0)
    result = adapt(model, noisy, QuantizedNoise(GaussianNoise(sigma / 255)), config)

    def build(alpha: float):
        return interpolated(result.model, origin, alpha)

    true = {a: psnr(to_pixels(denoise(build(a), noisy)), pixels) for a in CANDIDATES}
    row = {"image": f"{dataset}/{item.name}", "true_db": true}
    for name, exclude in ESTIMATORS.items():
        choice = select_interpolation(build, [noisy], sigma / 255, None, seed=index, clipping=exclude)
        row[name] = {"alpha": choice.interpolation, "gain": true[choice.interpolation] - true[0.0]}
    row["oracle"] = max(true.values()) - true[0.0]
    return row


def summary(rows: list[dict]) -> dict:
    out = {"images": len(rows), "clipped_mean": statistics.mean(r["clipped"] for r in rows)}
    for name in ESTIMATORS:
        errors = [r[name] - r["true_db"] for r in rows]
        out[name] = {"mean_error_db": statistics.mean(errors), "max_abs_error_db": max(map(abs, errors))}
    return out


def markdown(args, accuracy: dict, selections: list[dict], seconds: float) -> str:
    lines = [
        f"# SURE on clipped 8-bit inputs ({args.crop}² central crops, first {args.limit} images)",
        "",
        f"Command: `python benchmarks/sure_clipping.py --threads {args.threads} --limit {args.limit} "
        f"--crop {args.crop} --adapt {args.adapt} --adapt-crop {args.adapt_crop} --sigmas {args.sigmas}` "
        f"({seconds / 60:.1f} min).",
        "SURE's PSNR estimate minus the true PSNR of the pre-trained network (dB; inf: the estimated MSE "
        "was not positive):",
        "",
        "| set | σ | clipped | clip-aware mean | clip-aware max abs | all values mean | all values max abs |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, s in accuracy.items():
        c, a = s["clip-aware"], s["all values"]
        lines.append(
            f"| {key.replace('@', ' | ')} | {100 * s['clipped_mean']:.1f} % | {c['mean_error_db']:+.3f} | "
            f"{c['max_abs_error_db']:.3f} | {a['mean_error_db']:+.3f} | {a['max_abs_error_db']:.3f} |"
        )
    if selections:
        lines += [
            "",
            f"Selection on {args.adapt_crop}² crops at σ = 25 after {args.steps} updates "
            "(gain of the chosen α over α = 0, dB):",
            "",
        ]
        lines += [
            "| crop | clip-aware α | gain | all values α | gain | oracle |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in selections:
            c, a = r["clip-aware"], r["all values"]
            lines.append(
                f"| {r['image']} | {c['alpha']:g} | {c['gain']:+.3f} | {a['alpha']:g} | {a['gain']:+.3f} "
                f"| {r['oracle']:+.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--sigmas", default="25,50")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--adapt", type=int, default=3, help="crops of CBSD68 and of Set12 to adapt (part 2)")
    parser.add_argument("--adapt-crop", type=int, default=128, help="crop side for part 2")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows, accuracy = {}, {}
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for dataset in args.sets.split(","):
            key = f"{dataset}@{sigma:g}"
            rows[key] = score_crops(dataset, sigma, args.limit, args.crop)
            accuracy[key] = summary(rows[key])
            print(key, accuracy[key], flush=True)
    selections = []
    for dataset in ("CBSD68", "Set12")[: 2 if args.adapt else 0]:
        for index in range(args.adapt):
            selections.append(select_on_crop(dataset, index, 25.0, args.adapt_crop, args.steps))
            print(selections[-1], flush=True)
    seconds = time.perf_counter() - started
    data = {
        "environment": environment(),
        "args": vars(args),
        "accuracy": accuracy,
        "rows": rows,
        "selections": selections,
        "seconds": seconds,
    }
    name = args.name or f"sure_clipping_crop{args.crop}"
    for path in write_results(name, data, markdown(args, accuracy, selections, seconds)):
        print("wrote", path)


if __name__ == "__main__":
    main()
