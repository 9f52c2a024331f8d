"""How far to move from the pre-trained weights: true PSNR and SURE's estimate along the interpolation path.

Each image is adapted for M updates (CLI defaults, but returning the last weights θ_M); then every
interpolation weight α of θ0 + α(θ_M − θ0) is scored twice: against the clean image (PSNR) and by
Stein's unbiased risk estimate on the noisy image alone (what ``--select sure`` uses). The table
compares a fixed α, the α SURE picks per image, and the oracle α (best true PSNR per image).

    python benchmarks/interpolation_sweep.py Set12 --weights dncnn/dncnn_gray_blind.pth --crop 128
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
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
from rfr_deploy.adaptation.sure import CANDIDATES, select_interpolation
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise
from rfr_deploy.metrics import psnr
from rfr_deploy.noise.gaussian import GaussianNoise


def sweep_image(
    model, index: int, pixels: np.ndarray, sigma: float, config: AdaptConfig, candidates: tuple[float, ...]
) -> dict:
    clean = to_tensor(pixels)
    noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=index)
    origin = [p.detach().clone() for p in model.parameters()]
    result = adapt(model, noisy, GaussianNoise(sigma / 255), dataclasses.replace(config, seed=index))

    def build(alpha: float):
        return interpolated(result.model, origin, alpha)

    choice = select_interpolation(build, [noisy], sigma / 255.0, None, seed=index, candidates=candidates)
    true = {a: psnr(quantize(to_pixels(denoise(build(a), noisy))), pixels) for a in candidates}
    return {"psnr": true, "sure_db": choice.estimates, "picked": choice.interpolation}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_crop_arguments(parser, steps=GAUSSIAN_STEPS)
    parser.add_argument("--lr", type=float, default=AdaptConfig().lr, help="Adam learning rate")
    parser.add_argument(
        "--candidates",
        default=",".join(f"{a:g}" for a in CANDIDATES),
        help="interpolation weights to score (the first is the reference, normally 0)",
    )
    parser.add_argument(
        "--adapt",
        default="",
        help="AdaptConfig fields that differ from the CLI defaults, e.g. 'recorrupted=0.5'",
    )
    parser.add_argument("--name", default=None, help="results file name under benchmarks/results")
    args = parser.parse_args()
    candidates = tuple(float(a) for a in args.candidates.split(","))
    overrides = parse_overrides(args.adapt)
    config = AdaptConfig(steps=args.steps, lr=args.lr, **overrides, select="off", interpolation=1.0)
    started = time.perf_counter()
    rows = {}
    for index, name, pixels, model in crops_with_networks(args):
        rows[name] = sweep_image(model, index, pixels, args.sigma, config, candidates)
        print(name, rows[name]["picked"], flush=True)

    def gains(pick) -> list[float]:
        return [r["psnr"][pick(r)] - r["psnr"][0.0] for r in rows.values()]

    policies = {f"fixed α = {a:g}": (lambda r, a=a: a) for a in candidates if a}
    policies["SURE-selected α (--select sure)"] = lambda r: r["picked"]
    policies["oracle α (best true PSNR)"] = lambda r: max(r["psnr"], key=r["psnr"].get)
    summary = {
        name: {"mean_gain_db": statistics.fmean(gains(p)), "worst_gain_db": min(gains(p))}
        for name, p in policies.items()
    }
    payload = {
        "protocol": vars(args),
        "adapt": dataclasses.asdict(config),
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "summary": summary,
        "images": {
            n: {k: ({f"{a:g}": v for a, v in d.items()} if isinstance(d, dict) else d) for k, d in r.items()}
            for n, r in rows.items()
        },
    }
    name = (
        args.name
        or f"interpolation_sweep_{args.dataset}_s{args.sigma:g}_{crop_words(args.crop)[0]}_lr{args.lr:g}"
    )
    lines = [
        f"# {name}",
        "",
        f"{args.dataset}, first {len(rows)} images, {crop_words(args.crop)[1]}, weights `{args.weights}`, "
        f"σ = {args.sigma:g}, M = {args.steps}, Adam lr {args.lr:g}"
        + (f", {args.adapt}" if args.adapt else "")
        + f" (defaults otherwise); {payload['environment']['device']}, "
        f"torch {payload['environment']['torch']}; {payload['wall_seconds']:.0f} s.",
        "",
        "PSNR gain (dB) of θ0 + α(θ_M − θ0) over the pre-trained network (α = 0).",
        "",
        "| policy | mean gain | worst image |",
        "|---|---:|---:|",
        *(f"| {n} | {s['mean_gain_db']:+.3f} | {s['worst_gain_db']:+.3f} |" for n, s in summary.items()),
        "",
        "| image | picked α | " + " | ".join(f"α={a:g}" for a in candidates) + " |",
        "|---" * (len(candidates) + 2) + "|",
        *(
            f"| {n} | {r['picked']:g} | "
            + " | ".join(
                f"{r['psnr'][a] - r['psnr'][0.0]:+.3f} (SURE {r['sure_db'][a] - r['sure_db'][0.0]:+.3f})"
                for a in candidates
            )
            + " |"
            for n, r in rows.items()
        ),
    ]
    write_results(name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
