"""Noise shared by the colour channels, end to end: ``adapt-and-export`` with ``--per-channel auto``, ``off``, ``on``.

Central crops with seeded Gaussian noise of level σ per channel and correlation ρ between the channels
(benchmarks/luma_noise.py's), saved as 8-bit PNGs; each adapted by
``rfr-deploy adapt-and-export CROP.png --reference CLEAN.png --threads 1 --per-channel MODE`` with the
packaged DnCNN (``auto``: its gray network per channel where the library chooses it, SURE since stop 63,
the shared-noise threshold before; ``off``: the colour network; ``on``: the gray network per channel
always), defaults otherwise. Scores: pre-trained and adapted PSNR of each run.

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
from luma_noise import add_noise, add_noise_arguments, noise_arguments_text, read_levels

from rfr_deploy.images import write_image

MODES = ("off", "auto", "on")


def noisy_crops(args):
    """(crop index in its set, 'set/name', σ, ρ, noisy, clean) for every crop, σ and ρ of ``args``: the noise
    seeded per crop, level and correlation, as every run of this script drew it."""
    for n, (dataset, name, clean) in enumerate(central_crops(args)):
        for sigma in args.sigmas:
            for rho in args.rhos:
                noisy = add_noise(clean, sigma, rho, [n, int(sigma), int(rho * 100)])
                yield n % args.limit, f"{dataset}/{name}", sigma, rho, noisy, clean


def make_cases(args, folder: Path) -> list[tuple]:
    cases = []
    for _, image, sigma, rho, noisy, clean in noisy_crops(args):
        tag = f"{image.split('/')[1]}_s{sigma:g}_r{rho:g}"
        noisy_png = write_image(folder / f"{tag}.png", noisy)
        reference = write_image(folder / f"{tag}_clean.png", clean)
        cases += [(image, sigma, rho, mode, noisy_png, reference) for mode in args.modes]
    return cases


def run_case(case: tuple, folder: Path, args) -> dict:
    image, sigma, rho, mode, noisy, reference = case
    out = folder / f"{noisy.stem}_{mode}"
    command = adapt_command(noisy, reference) + [
        "--model",
        args.model,
        "--noise-channels",
        args.noise_channels,
    ]
    command += ["--per-channel", mode, "--threads", "1", "-o", str(out), "--json", "--quiet"]
    manifest = run_json_job(command)
    row = {"image": image, "sigma": sigma, "rho": rho, "mode": mode, **job_outcome(manifest)}
    row["per_channel"] = bool(manifest["inputs"][0].get("per_channel", False))
    row["sigma_estimate"] = manifest["noise"]["sigma_estimates"][0]
    row["implied_level"] = (manifest["noise"].get("implied_levels") or [None])[0]
    row["channel_correlation"] = manifest["noise"].get("channel_correlation")
    print(row, file=sys.stderr, flush=True)
    return row


def render(args, rows: list[dict]) -> str:
    both = {"off", "auto"} <= set(args.modes)
    heads = [f"{m}: {k}" for m in args.modes for k in ("pre-trained", "adapted")]
    heads += ["per channel", "correlated noise"] + (["auto − off (adapted)"] if both else [])
    lines = ["| σ | ρ | " + " | ".join(heads) + " |", "|---:|---:|" + "---:|" * len(heads)]
    for sigma in args.sigmas:
        for rho in args.rhos:
            case = [r for r in rows if (r["sigma"], r["rho"]) == (sigma, rho)]
            runs = {m: [r for r in case if r["mode"] == m] for m in args.modes}
            means = {
                m: [statistics.mean(r[k] for r in runs[m]) for k in ("pretrained_psnr", "adapted_psnr")]
                for m in args.modes
            }
            cells = [f"{v:.2f}" for m in args.modes for v in means[m]]
            cells.append(f"{sum(r['per_channel'] for r in case)}/{len(case)}")
            cells.append(f"{sum(r.get('channel_correlation') is not None for r in case)}/{len(case)}")
            if both:
                cells.append(f"{means['auto'][1] - means['off'][1]:+.2f}")
            lines.append(f"| {sigma:g} | {rho:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_noise_arguments(parser, "Kodak24,CBSD68", 2, sigmas="15,25", rhos="0,0.5,1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="luma_noise_adapt")
    parser.add_argument("--modes", default=",".join(MODES), help="--per-channel modes run (off, auto, on)")
    parser.add_argument("--model", default="dncnn", help="a model with packaged weights")
    parser.add_argument("--noise-channels", default="auto", choices=("auto", "off"))
    args = parser.parse_args()
    args.modes = [m for m in MODES if m in args.modes.split(",")]
    read_levels(args)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = make_cases(args, folder)
        with ThreadPoolExecutor(args.workers) as pool:
            rows = list(pool.map(lambda case: run_case(case, folder, args), cases))
    markdown = (
        f"# Noise shared by the colour channels, end to end: adapt-and-export --per-channel {', '.join(args.modes)}\n\n"
        f"Central {args.crop}² crops of {args.limit} images of {args.datasets} after the first {args.skip}, Gaussian noise of σ per "
        f"channel with correlation ρ between the channels (8-bit PNGs), packaged {args.model}, "
        f"--noise-channels {args.noise_channels}, defaults otherwise; "
        "mean PSNR in dB of the written outputs. off: the colour network (the behaviour before); auto: the gray "
        "network on each channel alone where the library chooses it; on: the gray network on each channel alone "
        "(how many runs did: 'per channel'; how many drew "
        "noise correlated between the channels, --noise-channels auto since stop 65: 'correlated noise').\n\n"
        + render(args, rows)
        + f"\n\n`python benchmarks/luma_noise_adapt.py --workers {args.workers} {noise_arguments_text(args)} "
        f"--modes {','.join(args.modes)} --model {args.model} --noise-channels {args.noise_channels} "
        f"--name {args.name}`\n"
    )
    report(args.name, {"environment": environment(), "rows": rows}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
