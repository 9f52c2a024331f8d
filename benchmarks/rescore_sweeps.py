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
    "±1 %": (0.99, 1.01),
    "±2 %": (0.98, 1.02),
    "±3 %": (0.97, 1.03),
    "+0 … +2 %": (1.0, 1.02),
    "−2 … +0 %": (0.98, 1.0),
}
"""Bands (low, high) as multiples of the implied level."""


def sure_mse(terms: dict[str, float], sigma: float) -> float:
    return terms["residual"] - sigma**2 + 2.0 * sigma**2 * terms["divergence"]


def pick(image: dict, band: tuple[float, float], around: str = "own_level") -> str:
    """The α (a key of the image's terms) SURE over ``band`` × the image's level ``around`` picks (the
    implied level, or ``weak_level``: the weak-texture estimate)."""
    level = image[around] / 255
    sigmas = (level * band[0], level * band[1])
    reference = image["terms"]["0"]

    def worst_gain(alpha: str) -> float:
        terms = image["terms"][alpha]
        return min(sure_mse(reference, s) - sure_mse(terms, s) for s in sigmas)

    return max(image["terms"], key=lambda a: (worst_gain(a), -abs(float(a) - 0.5)))


def rescore(sweep: dict, around: str = "own_level") -> dict[str, dict[str, float]]:
    """Mean and worst true gain (dB) of each band's picks (around the level ``around``) over the sweep's
    images."""
    out = {}
    for name, band in BANDS.items():
        images = sweep["images"].values()
        gains = [image["psnr"][pick(image, band, around)] - image["psnr"]["0"] for image in images]
        out[name] = {"mean_gain_db": statistics.fmean(gains), "worst_gain_db": min(gains)}
    return out


AROUND = {
    "own": ("own_level", "the level the pre-trained network implies"),
    "weak": ("weak_level", "the weak-texture estimate"),
}
"""--around: the stored level a band is centred on, and its words."""

SHIPPED = ("own", "±1 %")
"""The band jobs score gray images with an estimated σ over, and the level it is centred on."""


def to_markdown(name: str, around: str, rows: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = [
        f"# {name}",
        "",
        f"SURE over bands around {AROUND[around][1]}, re-scored from the stored "
        "terms of each sweep (`benchmarks/rescore_sweeps.py`); mean gain (worst image), dB.",
        "",
        "| sweep | " + " | ".join(f"{b} (shipped)" if (around, b) == SHIPPED else b for b in BANDS) + " |",
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
    parser.add_argument(
        "--around", choices=tuple(AROUND), default="own", help="the level bands are centred on"
    )
    args = parser.parse_args()
    key = AROUND[args.around][0]
    rows = {}
    for sweep in args.sweeps:
        data = json.loads((RESULTS / f"{sweep}.json").read_text())
        if key not in next(iter(data["images"].values())):
            parser.error(f"{sweep}: no {key} stored (a sweep from before it was recorded)")
        rows[sweep] = rescore(data, key)
    payload = {"sweeps": args.sweeps, "around": key, "bands": BANDS, "results": rows}
    write_results(args.name, payload, to_markdown(args.name, args.around, rows))


if __name__ == "__main__":
    main()
