"""Other σ bands for SURE on sweeps already run: re-scores the stored terms, adapts nothing.

An interpolation sweep (``interpolation_sweep.py``) stores, per image, the residual and divergence of
every interpolation weight α and the level the pre-trained network implies. SURE at any assumed σ needs
nothing else (the sweeps' noise is unclipped, so no clipping term): this picks α per image under each
band around the implied level, as ``make_scorer`` would (a candidate counts by its worst gain over the
band, ties towards α = 0.5), and reports the true gain of the picks.

    python benchmarks/rescore_sweeps.py interpolation_sweep_Set12_s25_whole_p64_own ... --name NAME
"""

from __future__ import annotations

import argparse
import json
import statistics

from common import RESULTS, write_results

BANDS: dict[str, tuple[float, float]] = {
    "±0 %": (1.0, 1.0),
    "±1 % (shipped)": (0.99, 1.01),
    "±2 %": (0.98, 1.02),
    "±3 %": (0.97, 1.03),
    "+0 … +2 %": (1.0, 1.02),
    "−2 … +0 %": (0.98, 1.0),
}
"""Bands (low, high) as multiples of the implied level."""


def sure_mse(terms: dict[str, float], sigma: float) -> float:
    return terms["residual"] - sigma**2 + 2.0 * sigma**2 * terms["divergence"]


def pick(image: dict, band: tuple[float, float]) -> str:
    """The α (a key of the image's terms) SURE over ``band`` × the implied level picks."""
    level = image["own_level"] / 255
    sigmas = (level * band[0], level * band[1])
    reference = image["terms"]["0"]

    def worst_gain(alpha: str) -> float:
        terms = image["terms"][alpha]
        return min(sure_mse(reference, s) - sure_mse(terms, s) for s in sigmas)

    return max(image["terms"], key=lambda a: (worst_gain(a), -abs(float(a) - 0.5)))


def rescore(sweep: dict) -> dict[str, dict[str, float]]:
    """Mean and worst true gain (dB) of each band's picks over the sweep's images."""
    out = {}
    for name, band in BANDS.items():
        gains = [image["psnr"][pick(image, band)] - image["psnr"]["0"] for image in sweep["images"].values()]
        out[name] = {"mean_gain_db": statistics.fmean(gains), "worst_gain_db": min(gains)}
    return out


def to_markdown(name: str, rows: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        f"# {name}",
        "",
        "SURE over bands around the level the pre-trained network implies, re-scored from the stored "
        "terms of each sweep (`benchmarks/rescore_sweeps.py`); mean gain (worst image), dB.",
        "",
        "| sweep | " + " | ".join(BANDS) + " |",
        "|---" * (len(BANDS) + 1) + "|",
    ]
    for sweep, result in rows.items():
        cells = " | ".join(f"{r['mean_gain_db']:+.3f} ({r['worst_gain_db']:+.3f})" for r in result.values())
        lines.append(f"| {sweep} | {cells} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweeps", nargs="+", help="results names of sweeps run with --adapt-sigma own")
    parser.add_argument("--name", required=True, help="results file name under benchmarks/results")
    args = parser.parse_args()
    rows = {}
    for sweep in args.sweeps:
        data = json.loads((RESULTS / f"{sweep}.json").read_text())
        if "own_level" not in next(iter(data["images"].values())):
            parser.error(f"{sweep}: no implied level stored (a sweep from before stop 43)")
        rows[sweep] = rescore(data)
    write_results(
        args.name, {"sweeps": args.sweeps, "bands": BANDS, "results": rows}, to_markdown(args.name, rows)
    )


if __name__ == "__main__":
    main()
