"""Colour images whose noise is the same in the three channels, or nearly: what each way of denoising makes of it.

Noise that is one value per pixel added to all three channels (Photoshop's and GIMP's "monochromatic"
noise, film grain, a sensor's luma noise after the camera smoothed its chroma) is correlated across the
channels; a colour network was trained on noise drawn per channel and leaves most of it. This scores
the pre-trained output (M = 0) on central crops with seeded Gaussian noise of level σ in each channel
and correlation ρ between the channels (ρ = 0: white, what the networks were trained on; ρ = 1: the
same value in all three), of:

* ``colour``: the colour network on the RGB image;
* ``gray per channel``: the gray network on each channel alone (each channel's noise is white whatever ρ);
* ``gray on the mean``: the gray network on the mean of the three channels, its correction added to each
  (the chroma, x − mean, is kept as it is: right where the noise has none, ρ = 1);
With ``--real``, the real-noise pairs of those folders of the shared data (camera noise, which is
correlated across the channels as well) instead, whole.

* ``auto``: what ``denoise`` and ``adapt-and-export --per-channel auto`` choose between the first two
  (:func:`rfr_deploy.noise.channels.shares_noise`), with the chroma share it read recorded per row.

    python benchmarks/luma_noise.py --threads 1 --real SIDD_samples,Nam_CBDNet25 \
        --methods "colour,gray per channel,auto" --name luma_noise_real
    python benchmarks/luma_noise.py --threads 1 --pairs "" --sigmas 5,10,15,25,50 --rhos 0,0.3,0.5,0.8,1 \
        --methods auto --name luma_noise_readings          # what the library reads, no network
    python benchmarks/luma_noise.py --threads 1                     # results/luma_noise.md
    python benchmarks/luma_noise.py --threads 1 --methods "colour,gray per channel,auto" \
        --sigmas 5,10,15,25,50 --rhos 0,0.3,0.5,0.8,1 --name luma_noise_auto
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch
from common import add_central_crop_arguments, central_crops, environment, report, use_threads

from rfr_deploy.adaptation.channel_choice import per_channel_scores_better
from rfr_deploy.datasets import load_pairs
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.metrics import psnr
from rfr_deploy.models.denoiser import each_channel
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.channels import chroma_share, neighbour_correlation, read_channel_noise
from rfr_deploy.shared import shared_path

PAIRS = {  # name: (colour weights, gray weights)
    "official": ("dncnn/dncnn_color_blind.pth", "dncnn/dncnn_gray_blind.pth"),
    "packaged": ("default", "default"),
}
METHODS = ("colour", "gray per channel", "gray on the mean", "auto")


def load_networks(pairs: list[str]) -> dict[str, tuple[torch.nn.Module, torch.nn.Module]]:
    def load(weights: str, channels: int) -> torch.nn.Module:
        path = weights if weights == "default" else str(shared_path("weights", *weights.split("/")))
        return create_model("dncnn", weights=path, channels=channels).eval()

    return {name: (load(PAIRS[name][0], 3), load(PAIRS[name][1], 1)) for name in pairs}


def add_noise(clean: np.ndarray, sigma: float, rho: float, seed: list[int]) -> np.ndarray:
    """``clean`` + Gaussian noise of σ (grey levels) per channel, correlation ``rho`` across them, in 8 bits."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(clean.shape[:2] + (1,))
    own = rng.standard_normal(clean.shape)
    noise = (sigma / 255) * (np.sqrt(rho) * shared + np.sqrt(1 - rho) * own)
    return quantize(np.clip(clean + noise, 0, 1)).astype(np.float32)


def run_method(method: str, colour: torch.nn.Module, gray: torch.nn.Module, noisy: np.ndarray) -> np.ndarray:
    if method == "colour":
        return to_pixels(denoise(colour, to_tensor(noisy, "cpu")))
    if method == "gray per channel":
        planes = [to_pixels(denoise(gray, to_tensor(noisy[:, :, c : c + 1], "cpu"))) for c in range(3)]
        return np.concatenate(planes, axis=2)
    mean = noisy.mean(axis=2, keepdims=True)
    return noisy - mean + to_pixels(denoise(gray, to_tensor(mean, "cpu")))


def noisy_images(args):
    """(row, noisy, clean) of every case: the synthetic ones, or with ``--real`` the real-noise pairs."""
    if args.real:
        for dataset in args.real.split(","):
            for noisy, clean in load_pairs(shared_path("data", "real", dataset)):
                yield {"set": dataset, "image": clean.name}, noisy.pixels, clean.pixels
        return
    for n, (dataset, name, clean) in enumerate(central_crops(args)):
        for sigma in args.sigmas:
            for rho in args.rhos:
                noisy = add_noise(clean, sigma, rho, [n, int(sigma), int(round(rho * 100))])
                yield {"set": dataset, "image": name, "sigma": sigma, "rho": rho}, noisy, clean


def auto_choice(reading, colour: torch.nn.Module, gray: torch.nn.Module, noisy: np.ndarray) -> str:
    """What ``denoise`` and ``adapt-and-export --per-channel auto`` give a colour PNG whose noise reads as
    ``reading`` (:meth:`rfr_deploy.jobs.model_cache.ModelCache.per_channel_suits`)."""
    if reading is None or not reading.white:
        return "colour"
    y = to_tensor(noisy, "cpu")
    better = per_channel_scores_better(
        colour, each_channel(gray, 3), y, level=reading.level, share=reading.share
    )
    return "gray per channel" if better else "colour"


@torch.inference_mode()
def score(args, networks) -> list[dict]:
    rows = []
    for row, noisy, clean in noisy_images(args):
        chw = torch.from_numpy(noisy).permute(2, 0, 1)
        reading = read_channel_noise(chw)
        share, level = chroma_share(chw)
        row |= {"chroma_share": round(share, 3), "level": round(level * 255, 2)}
        shared = reading is not None and reading.shared  # shares_noise(chw), from the reading already made
        row |= {"neighbour_correlation": round(neighbour_correlation(chw), 3), "shared": shared}
        for pair, (colour, gray) in networks.items():
            for method in (m for m in args.methods if m != "auto"):
                out = quantize(np.clip(run_method(method, colour, gray, noisy), 0, 1))
                row[f"{pair}: {method}"] = round(psnr(out, clean), 3)
            if "auto" in args.methods:
                row[f"{pair}: chose"] = auto_choice(reading, colour, gray, noisy)
                row[f"{pair}: auto"] = row[f"{pair}: {row[f'{pair}: chose']}"]
        rows.append(row)
        print(row, file=sys.stderr)
    return rows


def summarise(rows: list[dict], args) -> str:
    columns = [f"{pair}: {method}" for pair in args.pairs for method in args.methods]
    if args.real:
        return summarise_real(rows, columns)
    readings = ("chroma_share", "neighbour_correlation")
    head = ["σ", "ρ", *(f"{k.replace('_', ' ')} (min–max)" for k in readings), *columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for sigma in args.sigmas:
        for rho in args.rhos:
            chosen = [r for r in rows if r["sigma"] == sigma and r["rho"] == rho]
            ranges = [f"{min(r[k] for r in chosen):.2f}–{max(r[k] for r in chosen):.2f}" for k in readings]
            means = [statistics.mean(r[c] for r in chosen) for c in columns]
            cells = [
                f"{m:.2f}" + (_switched(chosen, c) if c.endswith("auto") else "")
                for m, c in zip(means, columns, strict=True)
            ]
            lines.append(f"| {sigma:g} | {rho:g} | " + " | ".join(ranges + cells) + " |")
    return "\n".join(lines)


def summarise_real(rows: list[dict], columns: list[str]) -> str:
    """Each real pair's chroma share, level per channel, neighbour correlation and scores, then each set's
    means."""
    readings = ("chroma_share", "level", "neighbour_correlation")
    head = ["set", "image", "chroma share", "level per channel", "neighbour correlation", *columns]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for r in rows:
        cells = " | ".join(f"{r[c]:.2f}" for c in (*readings, *columns))
        lines.append(f"| {r['set']} | {r['image']} | {cells} |")
    for dataset in dict.fromkeys(r["set"] for r in rows):
        chosen = [r for r in rows if r["set"] == dataset]
        cells = " | ".join(f"{statistics.mean(r[c] for r in chosen):.2f}" for c in columns)
        lines.append(f"| {dataset} | mean | | | | {cells} |")
    return "\n".join(lines)


def _switched(rows: list[dict], column: str) -> str:
    """How many of ``rows`` the auto ``column`` sent to the gray network per channel."""
    pair = column.split(":")[0]
    return f" ({sum(r[f'{pair}: chose'] != 'colour' for r in rows)}/{len(rows)} per channel)"


def add_noise_arguments(parser, datasets: str, limit: int, sigmas: str, rhos: str) -> None:
    """The crops (:func:`common.add_central_crop_arguments`, 128² by default) and ``--sigmas`` / ``--rhos``."""
    add_central_crop_arguments(parser)
    parser.set_defaults(datasets=datasets, limit=limit, crop=128)
    parser.add_argument("--sigmas", default=sigmas, help="grey levels per channel")
    parser.add_argument("--rhos", default=rhos, help="correlations between the channels")


def noise_arguments_text(args) -> str:
    """The command-line arguments of :func:`add_noise_arguments` as ``args`` holds them (levels read)."""
    return (
        f"--datasets {args.datasets} --limit {args.limit} --skip {args.skip} --crop {args.crop} "
        f"--sigmas {','.join(f'{s:g}' for s in args.sigmas)} --rhos {','.join(f'{r:g}' for r in args.rhos)}"
    )


def read_levels(args) -> None:
    """``args.sigmas`` and ``args.rhos`` as lists of numbers."""
    args.sigmas = [float(s) for s in args.sigmas.split(",")]
    args.rhos = [float(r) for r in args.rhos.split(",")]


def command_line(args) -> str:
    """The command that wrote the results file."""
    cases = (
        f"--real {args.real}"
        if args.real
        else f"--crop {args.crop}{_chosen_images(args)} --sigmas {_joined(args.sigmas)} --rhos {_joined(args.rhos)}"
    )
    methods = ",".join(args.methods)
    pairs = "" if args.pairs == list(PAIRS) else f' --pairs "{",".join(args.pairs)}"'
    return f'python benchmarks/luma_noise.py --threads {args.threads} {cases} --methods "{methods}"{pairs} --name {args.name}'


def _chosen_images(args) -> str:
    """``--limit`` and ``--skip`` where they are not the defaults."""
    return (f" --limit {args.limit}" if args.limit != 4 else "") + (
        f" --skip {args.skip}" if args.skip else ""
    )


def _joined(values: list[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_noise_arguments(parser, "Kodak24,CBSD68,McMaster", 4, sigmas="15,25,50", rhos="0,0.5,0.8,0.9,1")
    parser.add_argument("--pairs", default="official,packaged", help="'': no network, the readings alone")
    parser.add_argument("--methods", default="colour,gray per channel,gray on the mean")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--real", default="", help="real-noise folders of the shared data instead")
    parser.add_argument("--name", default="luma_noise")
    args = parser.parse_args()
    use_threads(args)
    read_levels(args)
    args.pairs = [p for p in args.pairs.split(",") if p]  # none: the readings alone
    args.methods = args.methods.split(",")
    if args.pairs and "auto" in args.methods and not {"colour", "gray per channel"} <= set(args.methods):
        parser.error("--methods auto needs colour and gray per channel")
    rows = score(args, load_networks(args.pairs))
    cases = (
        f"The real-noise pairs of {args.real} (whole images)"
        if args.real
        else f"Central {args.crop}² crops of {args.limit} images of {args.datasets} (after the first {args.skip}), "
        "Gaussian noise of "
        "σ per channel with correlation ρ between the channels, clipped and rounded to 8 bits"
    )
    markdown = (
        "# Noise correlated across the colour channels: colour network, gray network per channel, gray on the mean\n\n"
        + f"{cases}; "
        + (
            "pre-trained output (M = 0), mean PSNR in dB of the 8-bit output.\n\n"
            if args.pairs
            else "what `rfr_deploy.noise.channels` reads off each image (no network).\n\n"
        )
        + summarise(rows, args)
        + "\n\nauto: the library's choice (SURE with probes correlated like the noise, "
        "`rfr_deploy.adaptation.channel_choice`), with how many crops it sent to the gray network per channel.\n\n"
        + f"`{command_line(args)}`\n"
    )
    report(args.name, {"environment": environment(), "rows": rows, "args": vars(args)}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
