"""The margin of the choice between the colour network and the gray one per channel, scored on adapted outputs.

``--per-channel auto`` chooses before adapting: the gray network per channel where SURE expects it to do
``margin`` dB better than the colour network on the pre-trained outputs
(:func:`rfr_deploy.adaptation.channel_choice.per_channel_advantage`). On noise its channels share, the
colour network adapts on noise correlated alike and gains more from adapting than the gray one
(``--noise-channels auto``, stop 65). This reads ``benchmarks/luma_noise_adapt.py`` runs with
``--modes off`` and ``on`` (both networks adapted on every crop), computes SURE's advantage on the same
crops (:func:`luma_noise_adapt.noisy_crops`; the packaged networks, pre-trained), and scores every margin of
a grid by the adapted PSNR of the network it chooses. The first ``--dev`` images of each set choose a
margin; the others check it.

    python benchmarks/channel_choice_adapted.py --results luma_noise_adapt_choice_dev --skip 2 --limit 3 \\
        --dev 3 --name channel_choice_adapted_dev
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from common import environment, report
from luma_noise import add_noise_arguments, noise_arguments_text, read_levels
from luma_noise_adapt import noisy_crops

from rfr_deploy.adaptation.channel_choice import MARGIN_DB, per_channel_advantage
from rfr_deploy.inference import to_tensor
from rfr_deploy.models.denoiser import each_channel
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.channels import read_channel_noise

MARGINS_DB = (MARGIN_DB, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
RESULTS = Path(__file__).parent / "results"


@torch.inference_mode()
def read_advantages(args) -> dict[tuple, dict]:
    """SURE's advantage of the gray network per channel (dB) per crop, σ and ρ (None where the noise does not
    read as white, and the choice is not made)."""
    colour = create_model("dncnn", weights="default", channels=3).eval()
    gray = each_channel(create_model("dncnn", weights="default", channels=1).eval(), 3)
    found = {}
    for position, image, sigma, rho, noisy, _ in noisy_crops(args):
        y = to_tensor(noisy, "cpu")
        reading = read_channel_noise(y)
        advantage = None
        if reading is not None and reading.white:
            advantage = per_channel_advantage(colour, gray, y, reading.level, reading.share)
        found[(image, sigma, rho)] = {
            "position": position,
            "advantage_db": round(advantage, 3)
            if advantage is not None and math.isfinite(advantage)
            else None,
        }
        shown = "not scored" if advantage is None else f"{advantage:.2f} dB"
        print(f"{image} σ {sigma:g} ρ {rho:g}: {shown}", file=sys.stderr, flush=True)
    return found


def join(args, advantages: dict[tuple, dict]) -> list[dict]:
    """One row per crop: both networks' adapted PSNR from the results file, and SURE's advantage."""
    rows = []
    for name in args.results.split(","):
        path = Path(name)
        rows += json.loads((path if path.suffix else RESULTS / f"{name}.json").read_text())["rows"]
    by_case: dict[tuple, dict] = {}
    for r in rows:
        key = (r["image"], r["sigma"], r["rho"])
        by_case.setdefault(key, {"image": r["image"], "sigma": r["sigma"], "rho": r["rho"]} | advantages[key])
        by_case[key][{"off": "colour", "on": "gray"}[r["mode"]]] = r["adapted_psnr"]
    return [row for row in by_case.values() if "colour" in row and "gray" in row]


def chosen(row: dict, margin: float) -> float:
    """The adapted PSNR of the network the rule with ``margin`` chooses for ``row``."""
    return row["gray"] if picks_gray(row, margin) else row["colour"]


def picks_gray(row: dict, margin: float) -> bool:
    """Whether the rule with ``margin`` chooses the gray network per channel for ``row``."""
    return row["advantage_db"] is not None and row["advantage_db"] >= margin


def render(args, rows: list[dict]) -> str:
    parts = {
        "dev": [r for r in rows if r["position"] < args.dev],
        "check": [r for r in rows if r["position"] >= args.dev],
    }
    lines = []
    for sigma in args.sigmas:
        for part, members in parts.items():
            case = [r for r in members if r["sigma"] == sigma]
            if not case:
                continue
            cells = [f"{statistics.mean(chosen(r, m) for r in case):.3f}" for m in MARGINS_DB]
            best = statistics.mean(max(r["colour"], r["gray"]) for r in case)
            colour = sum(not picks_gray(r, MARGIN_DB) for r in case)
            lines.append(
                f"| {sigma:g} | {part} ({len(case)}) | " + " | ".join(cells) + f" | {best:.3f} | {colour} |"
            )
    heads = " | ".join(f"{m:g}" for m in MARGINS_DB)
    return "\n".join(
        [
            f"| σ | crops | {heads} | best of both | colour at {MARGIN_DB:g} |",
            "|---:|---|" + "---:|" * (len(MARGINS_DB) + 2),
        ]
        + lines
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_noise_arguments(parser, "Kodak24,CBSD68,McMaster", 8, sigmas="25,50", rhos="0.5")
    parser.add_argument(
        "--results",
        required=True,
        help="luma_noise_adapt.py runs with --modes off and on (names or .json paths, comma-separated)",
    )
    parser.add_argument("--dev", type=int, default=4, help="images per set that choose the margin")
    parser.add_argument("--name", default="channel_choice_adapted")
    args = parser.parse_args()
    read_levels(args)
    rows = join(args, read_advantages(args))
    markdown = (
        "# Colour network or gray per channel, scored on adapted outputs: the margin\n\n"
        f"Central {args.crop}² crops of {args.limit} images of {args.datasets} after the first {args.skip}, "
        f"Gaussian noise of σ per channel correlated by ρ = {','.join(f'{r:g}' for r in args.rhos)} between "
        f"the channels; both packaged DnCNN networks adapted end to end ({args.results.replace(',', '.md, ')}.md: "
        "off the colour network, on the gray one per channel). Mean adapted PSNR in dB of the network chosen where the gray one "
        "per channel must score this many dB better by SURE on the pre-trained outputs; dev: the first "
        f"{args.dev} images of each set, check: the others.\n\n"
        + render(args, rows)
        + f"\n\n`python benchmarks/channel_choice_adapted.py --results {args.results} {noise_arguments_text(args)} "
        f"--dev {args.dev} --name {args.name}`\n"
    )
    report(args.name, {"environment": environment(), "rows": rows}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
