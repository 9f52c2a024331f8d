"""Gain against updates and wall time for each choice of what is tuned, and what a checkpoint rule keeps.

Every image (central crop, seeded Gaussian noise, official DnCNN weights) is adapted once per
setting for ``--steps`` updates, returning the raw weights (no interpolation). Every ``--every``
updates the current network is scored twice: against the clean image (true PSNR) and by SURE on
the noisy image alone, with one fixed set of probes per image. From one run the table reads

* the true gain after m updates, for every m on the grid (the budget curve), and the seconds it took;
* what the checkpoint rule (``--checkpoint-every``) would return: the network with the best SURE
  among the scored ones, the pre-trained one included, scored against the clean image;
* the pre-trained network's ×8 flip/rotation self-ensemble, for comparison.

    python benchmarks/budget_study.py CBSD68 --weights dncnn/dncnn_color_blind.pth --crop 128 --limit 6 \\
        --steps 200 --every 20 --setting all@tune=all --setting affine@tune=affine
"""

from __future__ import annotations

import argparse
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

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import StepInfo, adapt
from rfr_deploy.adaptation.sure import SureScorer
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise
from rfr_deploy.metrics import psnr
from rfr_deploy.noise.base import QuantizedNoise
from rfr_deploy.noise.gaussian import GaussianNoise


def parse_setting(text: str) -> tuple[str, dict]:
    label, _, overrides = text.partition("@")
    return label, parse_overrides(overrides)


def noisy_input(clean: torch.Tensor, sigma: float, index: int, clip: bool) -> torch.Tensor:
    noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=index)
    return torch.round(noisy.clamp(0, 1) * 255) / 255 if clip else noisy


def run_setting(model, noisy, pixels, sigma, overrides, args, index) -> dict:
    """One adaptation: true PSNR and SURE (dB) on the grid of updates, and seconds per update."""
    level = sigma / 255  # the library's unit; the script's options and results are in grey levels
    noise = QuantizedNoise(GaussianNoise(level), 8) if args.clip else GaussianNoise(level)
    scorer = SureScorer([noisy], level, None, seed=index)
    curve = {
        0: (psnr(quantize(to_pixels(denoise(model, noisy))), pixels), scorer.decibels(scorer.terms(model)))
    }
    scoring = [0.0]

    def on_step(info: StepInfo) -> None:
        if info.step % args.every == 0 or info.step == info.total:
            t = time.perf_counter()
            net = info.network()
            true = psnr(quantize(to_pixels(denoise(net, noisy))), pixels)
            curve[info.step] = (true, scorer.decibels(scorer.terms(net)))
            scoring[0] += time.perf_counter() - t

    config = AdaptConfig(steps=args.steps, select="off", interpolation=1.0, seed=index, **overrides)
    result = adapt(model, noisy, noise, config, callback=on_step)
    kept = max(curve, key=lambda m: curve[m][1])  # the checkpoint rule: best SURE (pre-trained included)
    return {
        "psnr": {m: v[0] for m, v in curve.items()},
        "sure_db": {m: v[1] for m, v in curve.items()},
        "kept": kept,
        "kept_psnr": curve[kept][0],
        "seconds_per_update": statistics.median(result.step_seconds),
        "scoring_seconds": scoring[0],
    }


def summarise(images: list[dict], labels: list[str], steps: list[int]) -> dict:
    out = {}
    for label in labels:
        gains = {m: [im[label]["psnr"][m] - im["pretrained"] for im in images] for m in steps}
        kept = [im[label]["kept_psnr"] - im["pretrained"] for im in images]
        ms = statistics.median(im[label]["seconds_per_update"] for im in images)
        out[label] = {
            "mean_gain": {m: statistics.mean(g) for m, g in gains.items()},
            "worst_gain": {m: min(g) for m, g in gains.items()},
            "oracle_checkpoint": statistics.mean(
                max(g[i] for g in gains.values()) for i in range(len(images))
            ),
            "rule_gain": statistics.mean(kept),
            "rule_worst": min(kept),
            "seconds_per_update": ms,
        }
    return out


def to_markdown(summary: dict, images: list[dict], steps: list[int], args, header: str) -> str:
    ens = statistics.mean(im["ensemble"] - im["pretrained"] for im in images)
    lines = [
        f"# Gain vs updates: {args.dataset}, σ = {args.sigma:g}, {header}, {len(images)} images",
        "",
        f"Weights `{args.weights}`; noisy input {'clipped + 8-bit' if args.clip else 'unclipped'};"
        f" pre-trained mean {statistics.mean(im['pretrained'] for im in images):.3f} dB;"
        f" its ×8 self-ensemble {ens:+.3f} dB. Mean gain over the pre-trained output after m updates"
        " (worst image in brackets); 'rule': the best-SURE checkpoint among those scored every"
        f" {args.every} updates; 'best m': the per-image best of the grid (an oracle).",
        "",
        "| setting | s/update | " + " | ".join(f"m = {m}" for m in steps) + " | rule | best m |",
        "|---|---:|" + "---:|" * (len(steps) + 2),
    ]
    for label, s in summary.items():
        cells = [f"{s['mean_gain'][m]:+.3f} ({s['worst_gain'][m]:+.2f})" for m in steps]
        lines.append(
            f"| {label} | {s['seconds_per_update']:.3f} | "
            + " | ".join(cells)
            + f" | {s['rule_gain']:+.3f} ({s['rule_worst']:+.2f}) | {s['oracle_checkpoint']:+.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_crop_arguments(parser, steps=200)
    parser.add_argument("--every", type=int, default=20, help="score the network every this many updates")
    parser.add_argument(
        "--setting", action="append", required=True, help="label@field=value,... (AdaptConfig)"
    )
    parser.add_argument(
        "--clip", action="store_true", help="clip and quantize the noisy input like an 8-bit file"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = dict(parse_setting(s) for s in args.setting)
    tag, header = crop_words(args.crop)
    name = args.name or f"budget_{args.dataset}_s{args.sigma:g}_{tag}"
    steps = sorted({m for m in range(0, args.steps + 1, args.every)} | {args.steps})
    images: list[dict] = []
    for index, image_name, pixels, model in crops_with_networks(args):
        noisy = noisy_input(to_tensor(pixels), args.sigma, index, args.clip)
        record = {
            "name": image_name,
            "pretrained": psnr(quantize(to_pixels(denoise(model, noisy))), pixels),
            "ensemble": psnr(quantize(to_pixels(denoise(model, noisy, ensemble=True))), pixels),
        }
        for label, overrides in settings.items():
            record[label] = run_setting(model, noisy, pixels, args.sigma, overrides, args, index)
            print(
                f"{image_name} {label}: kept m={record[label]['kept']}, "
                f"gain {record[label]['kept_psnr'] - record['pretrained']:+.3f} dB",
                flush=True,
            )
        images.append(record)
        summary = summarise(images, list(settings), steps)
        data = {
            "args": vars(args),
            "settings": settings,
            "summary": summary,
            "images": images,
            "environment": environment(),
        }
        write_results(name, data, to_markdown(summary, images, steps, args, header))
    print(to_markdown(summary, images, steps, args, header))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
