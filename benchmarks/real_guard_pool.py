"""Pool ``real_guard.py`` results files (e.g. the design pairs and the held-out ones) and print, per set,
the mean gain, the worst image and how many images lose more than 0.05 dB: for every fixed
interpolation α, and for coloured SURE's choice among the weights up to each ``--caps`` value (the rule
the camera-noise guard ships with a cap of 0.5, :mod:`rfr_deploy.adaptation.coloured_sure`).

    python benchmarks/real_guard_pool.py results/real_guard_cbdnet_crop128_residual.json \\
        results/real_guard_cbdnet_crop128_residual_heldout.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

LOSS = -0.05


def coloured_choice(row: dict, cap: float) -> str:
    """The α (as the files key it) coloured SURE scores best among those up to ``cap``."""
    allowed = [a for a in row["coloured_db"] if float(a) <= cap]
    return max(allowed, key=lambda a: row["coloured_db"][a])


def print_row(dataset: str, rule: str, gains: list[float]) -> None:
    below = sum(g < LOSS for g in gains)
    print(
        f"| {dataset} | {len(gains)} | {rule} | {statistics.mean(gains):+.3f} | {min(gains):+.3f} | {below} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+")
    parser.add_argument("--alphas", default="0.25,0.5,0.75,1.0")
    parser.add_argument("--caps", default="0.25,0.5,0.75,1.25", help="largest α coloured SURE may choose")
    args = parser.parse_args()
    rows = [r for f in args.files for r in json.loads(Path(f).read_text())["images"]]
    print(f"| set | pairs | α | mean gain | worst | below {LOSS:g} dB |")
    print("|---|---:|---|---:|---:|---:|")
    for dataset in dict.fromkeys(r["set"] for r in rows):
        sub = [r for r in rows if r["set"] == dataset]
        for alpha in args.alphas.split(","):
            print_row(
                dataset, f"{float(alpha):g}", [r["psnr"][str(float(alpha))] - r["psnr"]["0.0"] for r in sub]
            )
        for cap in map(float, args.caps.split(",")):
            gains = [r["psnr"][coloured_choice(r, cap)] - r["psnr"]["0.0"] for r in sub]
            print_row(dataset, f"coloured SURE ≤ {cap:g}", gains)


if __name__ == "__main__":
    main()
