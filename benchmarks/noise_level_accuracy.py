"""Accuracy of the noise-level estimator that unknown-σ adaptation relies on.

For every test set and σ, adds Gaussian noise to the first images (central crops), optionally
clipped and rounded to 8 bits like a real image file, and compares estimators of σ: the
patch-covariance eigenvalue rule on all patches (Chen et al. 2015, ``iterations=0``) and the
same rule on weak-texture patches (``rfr_deploy.noise.level.estimate_sigma``, the default). With
``--denoiser`` (weights under ../shared/weights) also the rule on the patches where that network's
output is flattest (``estimate_sigma_on_flat``) and the smaller of that and the weak-texture one
(the level stop 29 tried for SURE on gray images with an unknown σ, then withdrew), and the level that
network's own residual and divergence imply (``rfr_deploy.adaptation.implied_level``, what SURE
assumes for gray images with an unknown σ since stop 42; ``--crop 0``: whole images).

    python benchmarks/noise_level_accuracy.py --crop 256 --limit 12
    python benchmarks/noise_level_accuracy.py --crop 256 --limit 12 --file-like
    python benchmarks/noise_level_accuracy.py --datasets Set12,BSD68 --denoiser dncnn/dncnn_gray_blind.pth
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from common import environment, write_results

from rfr_deploy.adaptation.implied_level import implied_level
from rfr_deploy.adaptation.sure import draw_probes, probe_count
from rfr_deploy.datasets import load_folder
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise, center_crop
from rfr_deploy.noise.level import estimate_sigma, estimate_sigma_on_flat
from rfr_deploy.shared import shared_path

ESTIMATORS = {
    "all patches": lambda y, d: estimate_sigma(y, iterations=0),
    "weak-texture patches (default)": lambda y, d: estimate_sigma(y),
}
GUIDED = {
    "denoiser's flattest patches": estimate_sigma_on_flat,
    "smaller of weak-texture and flattest": lambda y, d: min(estimate_sigma(y), estimate_sigma_on_flat(y, d)),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="Set12,BSD68,CBSD68,Kodak24,McMaster")
    parser.add_argument("--sigmas", default="5,15,25,40,50")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument(
        "--file-like", action="store_true", help="clip to [0, 1] and round to 8 bits, as a saved image"
    )
    parser.add_argument(
        "--denoiser", default=None, help="weights under ../shared/weights for the network-guided rules"
    )
    parser.add_argument(
        "--model", default="dncnn", help="architecture of --denoiser (a noise-map one is given σ̂)"
    )
    parser.add_argument("--name", default=None)
    return parser.parse_args()


def score_level(args, estimators: dict, dataset: str, clean: list[torch.Tensor], sigma: float) -> dict:
    """σ̂/σ of every estimator over the noisy versions of ``clean`` at grey level ``sigma``."""
    row = {"dataset": dataset, "sigma": sigma, "images": len(clean)}
    noisy = [add_gaussian_noise(x, sigma / 255, 0, i) for i, x in enumerate(clean)]
    if args.file_like:
        noisy = [torch.round(y.clamp(0, 1) * 255) / 255 for y in noisy]
    denoised = [denoise_with(args, y) for y in noisy]
    for name, estimator in estimators.items():
        ratios = [estimator(y, d) / (sigma / 255) for y, d in zip(noisy, denoised, strict=True)]
        row[name] = {
            "mean_ratio": statistics.fmean(ratios),
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "mean_abs_error_pct": 100 * statistics.fmean(abs(r - 1) for r in ratios),
        }
    return row


def to_markdown(name: str, args, payload: dict, estimators: dict) -> str:
    env = payload["environment"]
    noise = "clipped and rounded to 8 bits" if args.file_like else "unclipped (the benchmark protocol)"
    lines = [
        f"# {name}",
        "",
        f"First {args.limit} images per set, "
        + (f"central {args.crop}² crops" if args.crop else "whole images")
        + f", Gaussian noise {noise}, seed 0; "
        f"torch {env['torch']}, {env['device']}; {payload['wall_seconds']:.0f} s."
        + (f" Denoiser for the flat-patch rule: `{args.denoiser}`." if args.denoiser else ""),
        "",
        "σ̂ / σ: mean [min, max] over the images, and the mean absolute error in percent.",
        "",
        "| set | σ | " + " | ".join(estimators) + " |",
        "|---|---:|" + "---|" * len(estimators),
        *(
            f"| {r['dataset']} | {r['sigma']:g} | "
            + " | ".join(
                f"{r[k]['mean_ratio']:.3f} [{r[k]['min_ratio']:.3f}, {r[k]['max_ratio']:.3f}], "
                f"{r[k]['mean_abs_error_pct']:.1f} %"
                for k in estimators
            )
            + " |"
            for r in payload["rows"]
        ),
    ]
    return "\n".join(lines)


FIXED_POINT_STEPS = 4
"""A noise-map network's implied level depends on the level its map is given: starting from the
all-patch estimate (the CLI's map), the map is set to the level implied this many times."""


def own_level(args, noisy: torch.Tensor) -> float:
    """The level the network's residual and divergence imply on ``noisy``, with the probes
    adapt-and-export draws (seed 0); for a noise-map network the fixed point of :data:`FIXED_POINT_STEPS`
    steps; 0 where it implies none."""
    net = _network(args.model, args.denoiser, noisy.shape[1])
    draws = draw_probes([noisy], 0, probe_count([noisy]))
    rough = estimate_sigma(noisy)
    if not net.meta.noise_map:
        return implied_level(net, [noisy], draws, rough) or 0.0
    level = estimate_sigma(noisy, iterations=0)
    for _ in range(FIXED_POINT_STEPS):
        level = implied_level(net, [noisy], draws, rough, model_sigma=level) or level
    return level


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    estimators = ESTIMATORS | (GUIDED if args.denoiser else {})
    if args.denoiser:
        estimators["network's own level (stop 42)"] = lambda y, d: own_level(args, y)
    started = time.perf_counter()
    rows = []
    for dataset in args.datasets.split(","):
        clean = [
            to_tensor(center_crop(item.pixels, args.crop or None))
            for item in load_folder(shared_path("data", "test", dataset), limit=args.limit)
        ]
        for sigma in (float(s) for s in args.sigmas.split(",")):
            rows.append(score_level(args, estimators, dataset, clean, sigma))
            print(dataset, sigma, {k: round(rows[-1][k]["mean_ratio"], 3) for k in estimators}, flush=True)
    suffix = "_file" if args.file_like else ""
    name = args.name or f"noise_level_accuracy_crop{args.crop}{suffix}"
    payload = {
        "protocol": vars(args),
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    write_results(name, payload, to_markdown(name, args, payload, estimators))


def denoise_with(args, noisy: torch.Tensor) -> torch.Tensor | None:
    """The ``--denoiser`` network's output for ``noisy`` (1×C×H×W; a noise-map network is given the
    all-patch estimate, as the CLI does); None without weights."""
    if args.denoiser is None:
        return None
    net = _network(args.model, args.denoiser, noisy.shape[1])
    return denoise(net, noisy, sigma=estimate_sigma(noisy, iterations=0) if net.meta.noise_map else None)


@functools.lru_cache(maxsize=2)
def _network(model: str, weights: str, channels: int):
    from rfr_deploy.models.factory import create_model

    return create_model(model, weights=str(shared_path("weights", weights)), channels=channels).eval()


if __name__ == "__main__":
    main()
