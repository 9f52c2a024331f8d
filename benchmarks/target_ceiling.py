"""How much of the restore-from-restored gain the pseudo-clean target allows: an oracle ceiling.

Every image is adapted once per (target, learning rate) with the same noise, dihedral transforms
and updates, on pairs (T + N, T) with fresh noise N at every update:
- ``pseudo``: T = X̃ = f(Y), restore-from-restored (what the product does);
- ``clean``: T = X, the clean image itself, an oracle no user has (the noise of the evaluated input
  Y is never seen). It bounds what any better pseudo-clean target could buy with the same optimiser
  and number of updates; the gap to ``pseudo`` is what the target costs;
- ``mix=B``: T = X̃ + B (Y − X̃), part of the residual the network removed put back (B = 1 is the
  noisy image: an unbiased but noisy target, Noise2Noise-like).
Each trained network is scored along the path θ0 + α(θ_M − θ0) against the clean image.

    python benchmarks/target_ceiling.py CBSD68 --weights dncnn/dncnn_color_blind.pth --crop 128
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time

import numpy as np
import torch
from common import (
    add_crop_arguments,
    crop_words,
    crops_with_networks,
    environment,
    parse_overrides,
    write_results,
)

from rfr_deploy.adaptation.blending import interpolated
from rfr_deploy.adaptation.config import GAUSSIAN_STEPS, AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise
from rfr_deploy.metrics import psnr
from rfr_deploy.noise.gaussian import GaussianNoise

TARGETS = ("pseudo", "clean", "mix=B")


def mix_weight(kind: str) -> float | None:
    """B of the target X̃ + B (Y − X̃): 0 for 'pseudo', None for 'clean'; ValueError for anything else."""
    if kind in ("pseudo", "clean"):
        return 0.0 if kind == "pseudo" else None
    try:
        weight = float(kind.removeprefix("mix=")) if kind.startswith("mix=") else math.nan
    except ValueError:
        weight = math.nan
    if not 0.0 <= weight <= 1.0:
        raise ValueError(repr(kind))
    return weight


def best_gain(gains: dict[str, float]) -> float:
    """Gain at the best α of one run, α = 0 (the pre-trained network, gain 0) included."""
    return max(0.0, *gains.values())


def score_image(
    model,
    index: int,
    pixels: np.ndarray,
    sigma: float,
    runs: dict[str, tuple[float | None, AdaptConfig]],
    alphas,
) -> dict[str, dict[str, float]]:
    """PSNR gain over the pre-trained network of every α, for every run (mix weight, settings)."""
    clean = to_tensor(pixels)
    noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=index)
    origin = [p.detach().clone() for p in model.parameters()]
    pseudo = denoise(model, noisy).detach()
    base = psnr(quantize(to_pixels(pseudo)), pixels)
    out: dict[str, dict[str, float]] = {"pre-trained": {"psnr": base}}
    for key, (weight, config) in runs.items():
        target = clean if weight is None else pseudo + weight * (noisy - pseudo)
        result = adapt(
            model,
            noisy,
            GaussianNoise(sigma / 255),
            dataclasses.replace(config, seed=index),
            targets=[target],
        )
        out[key] = {
            f"{a:g}": psnr(quantize(to_pixels(denoise(interpolated(result.model, origin, a), noisy))), pixels)
            - base
            for a in alphas
        }
    return out


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_crop_arguments(parser, steps=GAUSSIAN_STEPS)
    parser.add_argument("--lrs", default="1e-5,1e-4", help="Adam learning rates, comma-separated")
    parser.add_argument(
        "--targets",
        default="pseudo,clean",
        help="pseudo (X̃ = f(Y)), clean (oracle) and/or mix=B (X̃ + B (Y − X̃), 0 ≤ B ≤ 1)",
    )
    parser.add_argument("--alphas", default="0.5,1,1.5,2", help="interpolation weights to score")
    parser.add_argument("--adapt", default="", help="further AdaptConfig overrides, e.g. 'warmup=0'")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--name", default=None, help="results file name under benchmarks/results")
    args = parser.parse_args()
    try:
        args.target_weights = {t.strip(): mix_weight(t.strip()) for t in args.targets.split(",")}
    except ValueError as error:
        parser.error(f"unknown target {error}: choose from {', '.join(TARGETS)} (0 ≤ B ≤ 1)")
    return args


def summarise(rows: dict, runs: dict, alphas: tuple[float, ...]) -> dict:
    """Per run: mean and worst gain at each α and at the best α of each image."""
    summary = {}
    for key in runs:
        at = {f"α = {a:g}": [r[key][f"{a:g}"] for r in rows.values()] for a in alphas}
        at["oracle α"] = [best_gain(r[key]) for r in rows.values()]
        summary[key] = {name: {"mean": statistics.fmean(v), "worst": min(v)} for name, v in at.items()}
    return summary


def to_markdown(name: str, args, payload: dict, rows: dict, runs: dict, alphas: tuple[float, ...]) -> str:
    columns = [f"α = {a:g}" for a in alphas] + ["oracle α"]
    lines = [
        f"# {name}",
        "",
        f"{args.dataset}, first {len(rows)} images, {crop_words(args.crop)[1]}, weights `{args.weights}`, "
        f"σ = {args.sigma:g} known, M = {args.steps}"
        + (f", {args.adapt}" if args.adapt else "")
        + f" (CLI defaults otherwise, no SURE); {payload['environment']['device']}, "
        f"torch {payload['environment']['torch']}; {payload['wall_seconds']:.0f} s.",
        "",
        "Mean PSNR gain in dB (worst image) of θ0 + α(θ_M − θ0) over the pre-trained network. "
        "Pairs (T + N, T): 'pseudo' T = X̃ = f(Y), restore-from-restored; 'clean' T = X, the clean "
        "image, an oracle; 'mix=B' T = X̃ + B (Y − X̃).",
        "",
        "| target, lr | " + " | ".join(columns) + " |",
        "|---" + "|---:" * len(columns) + "|",
        *(
            f"| {key} | " + " | ".join(f"{s[c]['mean']:+.3f} ({s[c]['worst']:+.3f})" for c in columns) + " |"
            for key, s in payload["summary"].items()
        ),
        "",
        "Per image, best α of each run (α = 0 included):",
        "",
        "| image | M = 0 PSNR | " + " | ".join(runs) + " |",
        "|---|---:" + "|---:" * len(runs) + "|",
        *(
            f"| {n} | {r['pre-trained']['psnr']:.2f} | "
            + " | ".join(f"{best_gain(r[k]):+.3f}" for k in runs)
            + " |"
            for n, r in rows.items()
        ),
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    alphas = tuple(float(a) for a in args.alphas.split(","))
    lrs = tuple(float(v) for v in args.lrs.split(","))
    overrides = parse_overrides(args.adapt)
    runs = {
        f"{t} lr {lr:g}": (
            weight,
            AdaptConfig(steps=args.steps, lr=lr, **overrides, select="off", interpolation=1.0),
        )
        for t, weight in args.target_weights.items()
        for lr in lrs
    }
    started = time.perf_counter()
    rows = {}
    for index, name, pixels, model in crops_with_networks(args):
        rows[name] = score_image(model, index, pixels, args.sigma, runs, alphas)
        print(name, " ".join(f"{k}: {best_gain(rows[name][k]):+.3f}" for k in runs), flush=True)
    payload = {
        "protocol": {k: v for k, v in vars(args).items() if k != "target_weights"},
        "adapt": {k: dataclasses.asdict(c) for k, (_, c) in runs.items()},
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summarise(rows, runs, alphas),
        "images": rows,
    }
    name = args.name or f"target_ceiling_{args.dataset}_s{args.sigma:g}_{crop_words(args.crop)[0]}"
    write_results(name, payload, to_markdown(name, args, payload, rows, runs, alphas))


if __name__ == "__main__":
    main()
