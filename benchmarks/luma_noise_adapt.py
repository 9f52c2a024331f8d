"""Noise shared by the colour channels, end to end: ``adapt-and-export`` with ``--per-channel auto`` and ``off``.

Central crops with seeded Gaussian noise of level σ per channel and correlation ρ between the channels
(benchmarks/luma_noise.py's), saved as 8-bit PNGs; each adapted by
``rfr-deploy adapt-and-export CROP.png --reference CLEAN.png --threads 1 --per-channel MODE`` with the
packaged DnCNN (``auto``: its gray network per channel where the library chooses it, SURE since stop 63,
the shared-noise threshold before; ``off``: the colour network), defaults otherwise. Scores: pre-trained
and adapted PSNR of each run.

    python benchmarks/luma_noise_adapt.py --workers 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import adapt_command, central_crops, environment, job_outcome, report, run_json_job
from luma_noise import add_noise, add_noise_arguments, read_levels

from rfr_deploy.images import write_image

MODES = ("off", "auto")


def make_cases(args, folder: Path) -> list[tuple]:
    cases = []
    for n, (dataset, name, clean) in enumerate(central_crops(args)):
        for sigma in args.sigmas:
            for rho in args.rhos:
                tag = f"{name}_s{sigma:g}_r{rho:g}"
                noisy = write_image(
                    folder / f"{tag}.png", add_noise(clean, sigma, rho, [n, int(sigma), int(rho * 100)])
                )
                reference = write_image(folder / f"{tag}_clean.png", clean)
                cases += [(f"{dataset}/{name}", sigma, rho, mode, noisy, reference) for mode in MODES]
    return cases


def run_case(case: tuple, folder: Path) -> dict:
    image, sigma, rho, mode, noisy, reference = case
    out = folder / f"{noisy.stem}_{mode}"
    command = adapt_command(noisy, reference)
    command += ["--per-channel", mode, "--threads", "1", "-o", str(out), "--json", "--quiet"]
    manifest = run_json_job(command)
    row = {"image": image, "sigma": sigma, "rho": rho, "mode": mode, **job_outcome(manifest)}
    row["per_channel"] = bool(manifest["inputs"][0].get("per_channel", False))
    row["sigma_estimate"] = manifest["noise"]["sigma_estimates"][0]
    row["implied_level"] = (manifest["noise"].get("implied_levels") or [None])[0]
    print(row, file=sys.stderr, flush=True)
    return row


def render(args, rows: list[dict]) -> str:
    lines = [
        "| σ | ρ | off: pre-trained | off: adapted | auto: pre-trained | auto: adapted | per channel | auto − off (adapted) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for sigma in args.sigmas:
        for rho in args.rhos:
            runs = {
                m: [r for r in rows if (r["sigma"], r["rho"], r["mode"]) == (sigma, rho, m)] for m in MODES
            }
            means = {
                m: [statistics.mean(r[k] for r in runs[m]) for k in ("pretrained_psnr", "adapted_psnr")]
                for m in MODES
            }
            switched = f"{sum(r['per_channel'] for r in runs['auto'])}/{len(runs['auto'])}"
            cells = [f"{v:.2f}" for m in MODES for v in means[m]]
            lines.append(
                f"| {sigma:g} | {rho:g} | "
                + " | ".join(cells)
                + f" | {switched} | {means['auto'][1] - means['off'][1]:+.2f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_noise_arguments(parser, "Kodak24,CBSD68", 2, sigmas="15,25", rhos="0,0.5,1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="luma_noise_adapt")
    args = parser.parse_args()
    read_levels(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = make_cases(args, folder)
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda case: run_case(case, folder), cases))
    markdown = (
        "# Noise shared by the colour channels, end to end: adapt-and-export --per-channel auto vs. off\n\n"
        f"Central {args.crop}² crops of the first {args.limit} images of {args.datasets}, Gaussian noise of σ per "
        "channel with correlation ρ between the channels (8-bit PNGs), packaged DnCNN, defaults otherwise; "
        "mean PSNR in dB of the written outputs. off: the colour network (the behaviour before); auto: the gray "
        "network on each channel alone where the library chooses it (how many crops did: 'per channel').\n\n"
        + render(args, rows)
        + f"\n\n`python benchmarks/luma_noise_adapt.py --workers {args.workers} --datasets {args.datasets} "
        f"--limit {args.limit} --crop {args.crop} --sigmas {','.join(f'{s:g}' for s in args.sigmas)} "
        f"--rhos {','.join(f'{r:g}' for r in args.rhos)} --name {args.name}`\n"
    )
    report(args.name, {"environment": environment(), "rows": rows}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
