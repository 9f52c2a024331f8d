"""A guard for camera noise without a clean reference: does Gaussian SURE at the estimated level choose well?

SURE assumes white Gaussian noise; real photographs carry signal-dependent, demosaicked (spatially
correlated) noise, so its absolute figure is biased. What a guard needs is only the *ranking* of
the pre-trained network against partial steps towards the adapted one. For every real pair
(Nam, SIDD), the packaged camera-noise network is adapted with the CLI defaults (camera noise at the
estimated level, M = 10), and every interpolation α of θ0 + α(θ_M − θ0) is scored against the ground
truth and by SURE over the estimator's σ range. The table compares today's fixed α = 0.5, SURE's
choice and the oracle α.

    python benchmarks/real_guard.py --weights rfr_deploy/data/cbdnet_camera_color.safetensors --model cbdnet \\
        --crop 128 --limit 10
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch
from common import add_real_arguments, environment, write_results

from rfr_deploy.adaptation.blending import interpolated
from rfr_deploy.adaptation.coloured_sure import ColouredSureScorer
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.adaptation.sure import (
    CANDIDATES,
    choose_interpolation,
    select_interpolation,
)
from rfr_deploy.datasets import load_pairs
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import center_crop
from rfr_deploy.jobs.noise_aim import aim_noise
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.build import build_noise
from rfr_deploy.noise.camera import ENV_VAR
from rfr_deploy.noise.level import estimate_noise_level
from rfr_deploy.noise.registry import NoiseSettings
from rfr_deploy.shared import shared_path
from rfr_deploy.units import grey_levels

FIXED = 0.5


def score_pair(model, noisy_pixels, clean_pixels, index: int, steps: int, camera_level: str) -> dict:
    noisy = to_tensor(noisy_pixels)
    level = estimate_noise_level(noisy)
    config = AdaptConfig(steps=steps, select="off", interpolation=1.0, seed=index)
    if camera_level == "residual":  # the job's rule now, with its pseudo-clean targets
        settings = NoiseSettings(None, "estimate", (level.sigma,))
        aimed = aim_noise("camera", settings, model, [noisy], None, config, ["pair"], bit_depth=8)
        aim, targets, noise = aimed.levels["residual_levels"][0], aimed.targets, aimed.noise
    else:  # the white-noise estimate the job used before stop 24
        aim, targets = level.sigma, None
        noise = build_noise("camera", None, "estimate", [aim], bit_depth=8)
    origin = [p.detach().clone() for p in model.parameters()]
    result = adapt(model, noisy, noise, config, pseudo_clean=targets)

    def build(alpha: float):
        return interpolated(result.model, origin, alpha)

    true = {a: psnr(quantize(to_pixels(denoise(build(a), noisy))), clean_pixels) for a in CANDIDATES}
    choice = select_interpolation(build, [noisy], (level.low, level.high), None, seed=index)
    scorer = ColouredSureScorer.create([noisy], result.pseudo_clean, None, index)
    coloured = choose_interpolation(
        build, scorer
    )  # every candidate: the library caps them, this study does not
    return {
        "sigma": grey_levels(level.sigma),
        "camera_level": grey_levels(aim),
        "residual_rms": grey_levels(scorer.high),
        "psnr": true,
        "sure_db": choice.estimates,
        "picked": choice.interpolation,
        "coloured_db": coloured.estimates,
        "coloured_picked": coloured.interpolation,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_real_arguments(parser, crop=128)
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument(
        "--skip", type=int, default=0, help="leave out the first N pairs of each set (held-out runs)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--camera-level",
        choices=("estimate", "residual"),
        default="estimate",
        help="aim the camera noise at the white-noise estimate or at the pre-trained residual's RMS",
    )
    parser.add_argument("--name", default=None)
    return parser.parse_args()


def report_pair(dataset: str, name: str, row: dict) -> None:
    gains = {a: v - row["psnr"][0.0] for a, v in row["psnr"].items()}
    print(
        f"{dataset} {name}: σ̂ {row['sigma']:.2f}, fixed {gains[FIXED]:+.3f}, "
        f"SURE α={row['picked']:g} {gains[row['picked']]:+.3f}, "
        f"coloured (rms {row['residual_rms']:.2f}) α={row['coloured_picked']:g} "
        f"{gains[row['coloured_picked']]:+.3f}, oracle {max(gains.values()):+.3f}",
        flush=True,
    )


def to_markdown(args, rows: list[dict]) -> str:
    lines = [
        f"# Camera-noise guard: Gaussian SURE at the estimated level ({args.model}, {args.crop}² crops, M = {args.steps})",
        "",
        f"Weights `{args.weights}`. Gain over the pre-trained output, mean (worst image).",
        "",
        f"| set | images | fixed α = {FIXED:g} | Gaussian SURE's α | coloured SURE's α | oracle α |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for dataset in args.datasets.split(","):
        sub = [r for r in rows if r["set"] == dataset]
        fixed = [r["psnr"][FIXED] - r["psnr"][0.0] for r in sub]
        sure = [r["psnr"][r["picked"]] - r["psnr"][0.0] for r in sub]
        coloured = [r["psnr"][r["coloured_picked"]] - r["psnr"][0.0] for r in sub]
        best = [max(r["psnr"].values()) - r["psnr"][0.0] for r in sub]
        lines.append(
            f"| {dataset} | {len(sub)} | {statistics.mean(fixed):+.3f} ({min(fixed):+.3f}) | "
            f"{statistics.mean(sure):+.3f} ({min(sure):+.3f}) | "
            f"{statistics.mean(coloured):+.3f} ({min(coloured):+.3f}) | {statistics.mean(best):+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault(ENV_VAR, str(shared_path("data", "noise", "CBDNet_CRF")))
    model = create_model(args.model, weights=args.weights, channels=3).eval()
    rows: list[dict] = []
    for dataset in args.datasets.split(","):
        pairs = load_pairs(shared_path("data", "real", dataset), limit=args.skip + args.limit)
        for index, (n, c) in enumerate(pairs[args.skip :], start=args.skip):
            noisy, clean = center_crop(n.pixels, args.crop), center_crop(c.pixels, args.crop)
            score = score_pair(model, noisy, clean, index, args.steps, args.camera_level)
            rows.append({"set": dataset, "name": c.name, **score})
            report_pair(dataset, c.name, rows[-1])
    markdown = to_markdown(args, rows)
    name = args.name or f"real_guard_{args.model}_crop{args.crop}"
    write_results(name, {"args": vars(args), "images": rows, "environment": environment()}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
