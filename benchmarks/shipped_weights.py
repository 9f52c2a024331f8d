"""PSNR/SSIM of the pre-trained networks alone (M = 0): the packaged Gaussian weights next to official ones.

Seeded Gaussian noise (the Table 2 protocol) on Set12 (gray) and CBSD68 (colour) at σ = 15/25/50;
the packaged weights from ``rfr_deploy/data`` (trained on this project's CPU: gray/colour blind
DnCNN, colour blind RDN, the Noise2Self DnCNN for σ = 25) and the official DnCNN-B / CDnCNN-B /
DnCNN-S from ``shared/weights``.

    python benchmarks/shipped_weights.py                      # writes results/shipped_weights.{md,json}
    python benchmarks/shipped_weights.py --sigmas 25 --limit 4 --models rdn,dncnn_n2s --name zoo_weights
"""

from __future__ import annotations

import argparse
import sys
import time

from common import environment, write_results
from paper_protocol import COLOR_WEIGHTS, GRAY_WEIGHTS, Network

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.jobs.evaluate import EvalSettings, evaluate
from rfr_deploy.models.weights import read_weights_meta
from rfr_deploy.shared import shared_path

# (dataset, packaged network, the official network it is compared with)
ROWS = (
    ("Set12", Network("dncnn", "packaged:dncnn_gray_blind.safetensors"), "DnCNN-B"),
    ("CBSD68", Network("dncnn", "packaged:dncnn_color_blind.safetensors"), "CDnCNN-B"),
    ("CBSD68", COLOR_WEIGHTS["RDN (ours)"], "CDnCNN-B"),
    ("Set12", GRAY_WEIGHTS["DnCNN-N2S (ours)"], "DnCNN-S"),
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set (Set12 has 12)")
    parser.add_argument("--name", default="shipped_weights")
    parser.add_argument("--models", default=None, help="only these zoo models, e.g. rdn,dncnn_n2s")
    return parser.parse_args()


def score_pretrained(dataset: str, network, weights, sigma: float, limit: int | None) -> dict[str, float]:
    """Mean PSNR / SSIM of ``network`` with ``weights`` (no adaptation) on ``dataset`` at grey level ``sigma``."""
    settings = EvalSettings(
        model=network.model, weights=str(weights), sigma=sigma / 255, steps=(0,), limit=limit, device="cpu"
    )
    report = evaluate(shared_path("data", "test", dataset), settings, AdaptConfig(steps=0))
    return {"psnr": round(report.mean("psnr", 0), 3), "ssim": round(report.mean("ssim", 0), 4)}


def to_markdown(args, payload: dict) -> str:
    lines = [
        "# Packaged weights vs the official DnCNN ones (pre-trained output, M = 0)",
        "",
        f"Seeded Gaussian noise (seed 0), {'first ' + str(args.limit) + ' images' if args.limit else 'whole sets'}; "
        f"PSNR (dB) / SSIM of 8-bit outputs. `python benchmarks/shipped_weights.py {' '.join(sys.argv[1:])}`, "
        f"{payload['wall_seconds']:.0f} s on {payload['environment']['device']}.",
        "",
        "| set | model | σ | packaged | official DnCNN | official weights |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in payload["rows"]:
        ours, theirs = row["packaged"], row[row["official_name"]]
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['sigma']:g} | {ours['psnr']:.2f} / {ours['ssim']:.4f} | "
            f"{theirs['psnr']:.2f} / {theirs['ssim']:.4f} | {row['official_name']} |"
        )
    meta = payload["packaged_weights"]
    lines += ["", "Training of the packaged weights:", ""] + [f"- {k}: {v}" for k, v in meta.items()]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    chosen = [r for r in ROWS if not args.models or r[1].model in args.models.split(",")]
    rows, meta = [], {}
    for dataset, packaged, official_name in chosen:
        official = {**COLOR_WEIGHTS, **GRAY_WEIGHTS}[official_name]
        for sigma in (float(s) for s in args.sigmas.split(",")):
            if not packaged.trained_for(sigma):
                continue
            packaged_path = packaged.path(sigma)
            meta[f"{packaged.model} ({dataset})"] = read_weights_meta(packaged_path)[0].notes
            row = {
                "dataset": dataset,
                "model": packaged.model,
                "sigma": sigma,
                "official_name": official_name,
                "packaged": score_pretrained(dataset, packaged, packaged_path, sigma, args.limit),
                official_name: score_pretrained(dataset, official, official.path(sigma), sigma, args.limit),
            }
            rows.append(row)
            print(row, flush=True)
    payload = {
        "rows": rows,
        "packaged_weights": meta,
        "limit": args.limit,
        "seed": 0,
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    write_results(args.name, payload, to_markdown(args, payload))


if __name__ == "__main__":
    main()
