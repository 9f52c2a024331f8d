"""PSNR/SSIM of the pre-trained networks alone (M = 0): the packaged DnCNN weights next to the official ones.

Seeded Gaussian noise (the Table 2 protocol) on Set12 (gray) and CBSD68 (colour) at σ = 15/25/50;
the packaged gray/colour blind DnCNN from ``rfr_deploy/data`` (trained by ``rfr-deploy pretrain``)
and the official DnCNN-B / CDnCNN-B from ``shared/weights``.

    python benchmarks/shipped_weights.py                      # writes results/shipped_weights.{md,json}
    python benchmarks/shipped_weights.py --sigmas 25 --limit 4
"""

from __future__ import annotations

import argparse
import time

from common import environment, write_results

from rfr_deploy.adapt import AdaptConfig
from rfr_deploy.evaluation import EvalSettings, evaluate
from rfr_deploy.shared import shared_path
from rfr_deploy.weights import packaged_weights_path, read_weights_meta

SETS = {
    "Set12": ("dncnn_gray_blind.safetensors", "dncnn/dncnn_gray_blind.pth", "DnCNN-B"),
    "CBSD68": ("dncnn_color_blind.safetensors", "dncnn/dncnn_color_blind.pth", "CDnCNN-B"),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set (Set12 has 12)")
    parser.add_argument("--name", default="shipped_weights")
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    for dataset, (packaged, official, official_name) in SETS.items():
        candidates = {
            "packaged": str(packaged_weights_path(packaged)),
            official_name: str(shared_path("weights", official)),
        }
        for sigma in (float(s) for s in args.sigmas.split(",")):
            row = {"dataset": dataset, "sigma": sigma, "official_name": official_name}
            for label, weights in candidates.items():
                settings = EvalSettings(
                    weights=weights, sigma=sigma, steps=(0,), limit=args.limit, device="cpu"
                )
                report = evaluate(shared_path("data", "test", dataset), settings, AdaptConfig(steps=0))
                row[label] = {
                    "psnr": round(report.mean("psnr", 0), 3),
                    "ssim": round(report.mean("ssim", 0), 4),
                }
            rows.append(row)
            print(row, flush=True)
    meta = {
        name: read_weights_meta(packaged_weights_path(packaged))[0].notes
        for name, (packaged, _, _) in SETS.items()
    }
    payload = {
        "rows": rows,
        "packaged_weights": meta,
        "limit": args.limit,
        "seed": 0,
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    lines = [
        "# Packaged DnCNN weights vs the official ones (pre-trained output, M = 0)",
        "",
        f"Seeded Gaussian noise (seed 0), {'first ' + str(args.limit) + ' images' if args.limit else 'whole sets'}; "
        f"PSNR (dB) / SSIM of 8-bit outputs. Packaged weights: {meta}. "
        f"`python benchmarks/shipped_weights.py`, {payload['wall_seconds']:.0f} s on {payload['environment']['device']}.",
        "",
        "| set | σ | packaged (rfr-deploy pretrain) | official | official weights |",
        "|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ours, theirs = row["packaged"], row[row["official_name"]]
        lines.append(
            f"| {row['dataset']} | {row['sigma']:g} | {ours['psnr']:.2f} / {ours['ssim']:.4f} | "
            f"{theirs['psnr']:.2f} / {theirs['ssim']:.4f} | {row['official_name']} |"
        )
    write_results(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
