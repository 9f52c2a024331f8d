"""Pool ``real_guard.py`` results files (e.g. the design pairs and the held-out ones) and print, per set
and fixed interpolation α, the mean gain, the worst image and how many images lose more than 0.05 dB.

    python benchmarks/real_guard_pool.py results/real_guard_cbdnet_crop128_residual.json \\
        results/real_guard_cbdnet_crop128_residual_heldout.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

LOSS = -0.05


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+")
    parser.add_argument("--alphas", default="0.25,0.5,0.75,1.0")
    args = parser.parse_args()
    rows = [r for f in args.files for r in json.loads(Path(f).read_text())["images"]]
    print(f"| set | pairs | α | mean gain | worst | below {LOSS:g} dB |")
    print("|---|---:|---:|---:|---:|---:|")
    for dataset in dict.fromkeys(r["set"] for r in rows):
        sub = [r for r in rows if r["set"] == dataset]
        for alpha in args.alphas.split(","):
            gains = [r["psnr"][str(float(alpha))] - r["psnr"]["0.0"] for r in sub]
            below = sum(g < LOSS for g in gains)
            print(
                f"| {dataset} | {len(sub)} | {float(alpha):g} | {statistics.mean(gains):+.3f} | "
                f"{min(gains):+.3f} | {below} |"
            )


if __name__ == "__main__":
    main()
