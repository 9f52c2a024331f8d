"""How well two estimates of a real photograph's noise level read the truth: the white-noise estimator
and the RMS of the pre-trained network's residual (what camera noise aims at, ``residual_level``).

For every real pair (Nam, SIDD) the central crop's true noise RMS is that of noisy − clean over the
unsaturated values; both estimates are in grey levels. No adaptation, one forward pass per pair.

    python benchmarks/camera_levels.py --weights rfr_deploy/data/cbdnet_camera_color.safetensors --crop 128
"""

from __future__ import annotations

import argparse
import os

import torch
from common import add_real_arguments, environment, write_results

from rfr_deploy.datasets import load_pairs
from rfr_deploy.inference import denoise, to_tensor
from rfr_deploy.jobs.evaluate import center_crop
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.camera import ENV_VAR
from rfr_deploy.noise.level import estimate_noise_level, residual_level
from rfr_deploy.shared import shared_path
from rfr_deploy.units import grey_levels

_COLUMNS = (
    ("true", False),
    ("white_estimate", False),
    ("white_estimate", True),
    ("residual", False),
    ("residual", True),
)


def span(rows: list[dict], key: str, ratio: bool) -> str:
    """The range of ``key`` over ``rows`` (as a ratio to the true RMS with ``ratio``)."""
    values = [r[key] / r["true"] if ratio else r[key] for r in rows]
    return f"{min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_real_arguments(parser, crop=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault(ENV_VAR, str(shared_path("data", "noise", "CBDNet_CRF")))
    model = create_model(args.model, weights=args.weights, channels=3).eval()
    rows = []
    for dataset in args.datasets.split(","):
        for n, c in load_pairs(shared_path("data", "real", dataset)):
            noisy = to_tensor(center_crop(n.pixels, args.crop))
            clean = to_tensor(center_crop(c.pixels, args.crop))
            rows.append(
                {
                    "set": dataset,
                    "name": c.name,
                    "true": grey_levels(residual_level(noisy, clean), 3),
                    "white_estimate": grey_levels(estimate_noise_level(noisy).sigma, 3),
                    "residual": grey_levels(residual_level(noisy, denoise(model, noisy)), 3),
                }
            )
    lines = [
        f"# Noise level of real photographs: the white-noise estimate and the {args.model} residual "
        f"({args.crop}² crops)",
        "",
        "Grey levels; ratios to the true RMS of noisy − clean (unsaturated values).",
        "",
        "| set | pairs | true RMS | white estimate | its ratio | residual RMS | its ratio |",
        "|---|---:|---|---|---|---|---|",
    ]
    for dataset in args.datasets.split(","):
        sub = [r for r in rows if r["set"] == dataset]
        spans = [span(sub, key, ratio) for key, ratio in _COLUMNS]
        lines.append(f"| {dataset} | {len(sub)} | " + " | ".join(spans) + " |")
    name = f"camera_levels_{args.model}_crop{args.crop}"
    write_results(name, {"args": vars(args), "pairs": rows, "environment": environment()}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
