"""PSNR/SSIM of the pre-trained networks alone (M = 0): the packaged Gaussian weights next to official ones.

Seeded Gaussian noise (the Table 2 protocol) on Set12 (gray) and CBSD68 (colour) at σ = 15/25/50;
the packaged weights from ``rfr_deploy/data`` (trained by ``rfr-deploy pretrain``: gray/colour blind
DnCNN, colour blind RDN, the Noise2Self DnCNN for σ = 25) and the official DnCNN-B / CDnCNN-B /
DnCNN-S from ``shared/weights``.

    python benchmarks/shipped_weights.py                      # writes results/shipped_weights.{md,json}
    python benchmarks/shipped_weights.py --sigmas 25 --limit 4 --models rdn,dncnn_n2s --name zoo_weights
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass

from common import environment, write_results

from rfr_deploy.adapt import AdaptConfig
from rfr_deploy.evaluation import EvalSettings, evaluate
from rfr_deploy.shared import shared_path
from rfr_deploy.weights import packaged_weights_path, read_weights_meta


@dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    packaged: str
    official: str
    """File under ``shared/weights``; ``{sigma}`` is replaced by σ."""
    official_name: str
    sigmas: tuple[float, ...] | None = None
    """The σ the packaged weights were trained for (None: blind)."""


ROWS = (
    Row("Set12", "dncnn", "dncnn_gray_blind.safetensors", "dncnn/dncnn_gray_blind.pth", "DnCNN-B"),
    Row("CBSD68", "dncnn", "dncnn_color_blind.safetensors", "dncnn/dncnn_color_blind.pth", "CDnCNN-B"),
    Row("CBSD68", "rdn", "rdn_color_blind.safetensors", "dncnn/dncnn_color_blind.pth", "CDnCNN-B"),
    Row(
        "Set12", "dncnn_n2s", "dncnn_n2s_gray_s25.safetensors", "dncnn/dncnn_{sigma}.pth", "DnCNN-S", (25.0,)
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--limit", type=int, default=None, help="first N images of each set (Set12 has 12)")
    parser.add_argument("--name", default="shipped_weights")
    parser.add_argument("--models", default=None, help="only these zoo models, e.g. rdn,dncnn_n2s")
    args = parser.parse_args()
    started = time.perf_counter()
    chosen = [r for r in ROWS if not args.models or r.model in args.models.split(",")]
    rows, meta = [], {}
    for spec in chosen:
        meta[f"{spec.model} ({spec.dataset})"] = read_weights_meta(packaged_weights_path(spec.packaged))[
            0
        ].notes
        for sigma in (float(s) for s in args.sigmas.split(",")):
            if spec.sigmas is not None and sigma not in spec.sigmas:
                continue
            row = {
                "dataset": spec.dataset,
                "model": spec.model,
                "sigma": sigma,
                "official_name": spec.official_name,
            }
            candidates = {
                "packaged": (spec.model, packaged_weights_path(spec.packaged)),
                spec.official_name: ("dncnn", shared_path("weights", spec.official.format(sigma=int(sigma)))),
            }
            for label, (model, weights) in candidates.items():
                settings = EvalSettings(
                    model=model, weights=str(weights), sigma=sigma, steps=(0,), limit=args.limit, device="cpu"
                )
                report = evaluate(shared_path("data", "test", spec.dataset), settings, AdaptConfig(steps=0))
                row[label] = {
                    "psnr": round(report.mean("psnr", 0), 3),
                    "ssim": round(report.mean("ssim", 0), 4),
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
    lines = [
        "# Packaged weights vs the official DnCNN ones (pre-trained output, M = 0)",
        "",
        f"Seeded Gaussian noise (seed 0), {'first ' + str(args.limit) + ' images' if args.limit else 'whole sets'}; "
        f"PSNR (dB) / SSIM of 8-bit outputs. `python benchmarks/shipped_weights.py {' '.join(sys.argv[1:])}`, "
        f"{payload['wall_seconds']:.0f} s on {payload['environment']['device']}.",
        "",
        "| set | model | σ | packaged (rfr-deploy pretrain) | official DnCNN | official weights |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        ours, theirs = row["packaged"], row[row["official_name"]]
        lines.append(
            f"| {row['dataset']} | {row['model']} | {row['sigma']:g} | {ours['psnr']:.2f} / {ours['ssim']:.4f} | "
            f"{theirs['psnr']:.2f} / {theirs['ssim']:.4f} | {row['official_name']} |"
        )
    lines += ["", "Training of the packaged weights:", ""] + [f"- {k}: {v}" for k, v in meta.items()]
    write_results(args.name, payload, "\n".join(lines))


if __name__ == "__main__":
    main()
