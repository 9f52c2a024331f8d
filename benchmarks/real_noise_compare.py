"""Compare ``real_noise.py`` results files image by image: per file and set, the mean gain at the
last M, the worst image, how many images lose more than 0.05 dB, and the interpolations that ran.

    python benchmarks/real_noise_compare.py results/real_noise_cbdnet_crop128_fixed_sidd.json \\
        results/real_noise_cbdnet_crop128_guard_sidd.json
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
from pathlib import Path

LOSS = -0.05


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    print(f"| file | set | pairs | M | mean gain | worst | below {LOSS:g} dB | α chosen (count) |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name in args.files:
        payload = json.loads(Path(name).read_text())
        last = str(max(payload["steps"]))
        select = payload["adapt"].get("select", "sure")
        for data in payload["datasets"]:
            images = data["images"]
            gains = [im["psnr"][last] - im["psnr"]["0"] for im in images]
            alphas = collections.Counter(im["interpolation"][last] for im in images)
            chosen = ", ".join(f"{a:g} ({n})" for a, n in sorted(alphas.items()))
            print(
                f"| {Path(name).stem} (select={select}) | {data['name']} | {len(images)} | {last} | "
                f"{statistics.mean(gains):+.3f} | {min(gains):+.3f} | {sum(g < LOSS for g in gains)} | {chosen} |"
            )


if __name__ == "__main__":
    main()
