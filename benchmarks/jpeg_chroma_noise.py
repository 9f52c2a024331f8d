"""Adapting to 4:2:0 JPEGs on white noise (before) and on noise with its chroma subsampled like theirs (now).

Central crops of colour test images get white Gaussian noise of σ (clipped, 8-bit) and are saved as JPEG
with 4:2:0 chroma subsampling (Pillow's default, and most cameras'). Each crop is adapted end to end by
``rfr-deploy adapt-and-export CROP.jpg --reference CLEAN.png`` with the defaults, once with
``--noise-chroma off`` (white synthetic noise, as before the chroma model: the level read off the luma,
GCV choosing the interpolation) and once with the default ``auto`` (the noise's chroma subsampled as the
file's, :mod:`rfr_deploy.noise.chroma`; a fixed interpolation of 1). With the adapted weights the run wrote,
the chroma runs are also scored at the interpolations in ``ALPHAS`` (the pre-trained and adapted weights
blended), to show how the default of 1 sits among them. ``--stored-as png`` saves each JPEG's decoded
pixels as PNG, a file that does not say how its chroma was stored: the job reads it off the pixels
(:func:`rfr_deploy.noise.chroma.find_subsampled_chroma`).

    python benchmarks/jpeg_chroma_noise.py --workers 2
    python benchmarks/jpeg_chroma_noise.py --sigma 10 --images Kodak24/kodim19,CBSD68/102061 --workers 1
    python benchmarks/jpeg_chroma_noise.py --stored-as png --networks "dncnn (packaged)" --workers 2
    python benchmarks/jpeg_chroma_noise.py --quality 75 --networks "dncnn (packaged),FFDNet (official)"
    python benchmarks/jpeg_chroma_noise.py --subsampling 0 --quality 75 --modes off,jpeg --networks "dncnn (packaged)"
    python benchmarks/jpeg_chroma_noise.py --gray --images Set12/05,BSD68/test003 --modes off,jpeg --suffix _mine

``--subsampling 0`` writes full-chroma (4:4:4) JPEGs, ``--gray`` gray ones (the crops converted to luminance;
gray networks: the packaged DnCNN, "DnCNN-B (official)", "FFDNet gray (official)"). The results file is
named by σ, quality, storage, layout and modes, not by network: give runs of other networks a ``--suffix``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import (
    SUBSAMPLING,
    adapt_command,
    add_subsampling_argument,
    environment,
    job_outcome,
    report,
    run_json_job,
)
from PIL import Image

from rfr_deploy.datasets import load_folder
from rfr_deploy.inference import denoise
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.shared import shared_path

ALPHAS = (0.5, 0.75, 1.0, 1.25)
MODES = {
    "off": ["--noise-chroma", "off", "--noise-jpeg", "off", "--per-channel", "off"],
    "auto": ["--noise-chroma", "auto", "--noise-jpeg", "off", "--per-channel", "off"],
    "jpeg": ["--noise-chroma", "auto", "--noise-jpeg", "auto", "--per-channel", "off"],
    "channels": ["--noise-jpeg", "off", "--per-channel", "on"],
}
"""The synthetic noise of each run: white; its chroma subsampled like the file's (the default of stop 57);
compressed with the file's quantization tables, its chroma subsampled like the file's (the default since
stop 58 for subsampled colour JPEGs, since stop 59 for every JPEG, :mod:`rfr_deploy.noise.jpeg`); the
network's gray weights on each channel alone, white noise (``--per-channel on``, stop 62). The first three
keep the colour network (``--per-channel off``), as every run did before stop 62."""
NETWORKS = {
    "dncnn (packaged)": ["--model", "dncnn"],
    "CDnCNN-B (official)": ["--model", "dncnn", "--weights", "{weights}/dncnn/dncnn_color_blind.pth"],
    "FFDNet (official)": ["--model", "ffdnet", "--weights", "{weights}/ffdnet/ffdnet_color.pth"],
    "DnCNN-B (official)": ["--model", "dncnn", "--weights", "{weights}/dncnn/dncnn_gray_blind.pth"],
    "FFDNet gray (official)": ["--model", "ffdnet", "--weights", "{weights}/ffdnet/ffdnet_gray.pth"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", default="Kodak24/kodim05,Kodak24/kodim19,CBSD68/102061,CBSD68/105025")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--sigma", type=int, default=25, help="grey levels")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    add_subsampling_argument(parser)
    parser.add_argument("--gray", action="store_true", help="the crops converted to gray, gray JPEGs")
    parser.add_argument(
        "--stored-as", choices=("jpeg", "png"), default="jpeg", help="png: the JPEG's decoded pixels as PNG"
    )
    parser.add_argument("--workers", type=int, default=2, help="jobs at once, one thread each")
    parser.add_argument("--networks", default=",".join(NETWORKS), help="of: " + ", ".join(NETWORKS))
    parser.add_argument("--modes", default="off,auto", help="of: " + ", ".join(MODES))
    parser.add_argument("--suffix", default="", help="added to the results file's name")
    parser.add_argument(
        "--tell-sigma",
        action="store_true",
        help="give the jobs the true σ (--sigma) instead of estimating it",
    )
    return parser.parse_args()


def make_crops(args, folder: Path) -> list[tuple[str, Path, Path]]:
    """(name, noisy JPEG, clean PNG) per image of ``args.images``, noise from one seeded stream in order."""
    rng, crops, c = np.random.default_rng(5), [], args.crop
    channels = 1 if args.gray else 3
    for entry in args.images.split(","):
        dataset, stem = entry.split("/")
        image = next(
            i for i in load_folder(shared_path("data", "test", dataset), channels=channels) if i.name == stem
        )
        h, w = image.pixels.shape[:2]
        clean = np.round(
            image.pixels[h // 2 - c // 2 : h // 2 + c // 2, w // 2 - c // 2 : w // 2 + c // 2] * 255
        ).squeeze()
        noisy = np.clip(np.round(clean + rng.standard_normal(clean.shape) * args.sigma), 0, 255)
        Image.fromarray(clean.astype(np.uint8)).save(folder / f"{stem}_clean.png")
        buffer = io.BytesIO()
        Image.fromarray(noisy.astype(np.uint8)).save(
            buffer, "JPEG", quality=args.quality, subsampling=args.subsampling
        )
        (folder / f"{stem}.jpg").write_bytes(buffer.getvalue())
        if args.stored_as == "png":
            Image.open(folder / f"{stem}.jpg").save(folder / f"{stem}.png")
        crops.append(
            (
                entry,
                folder / f"{stem}.{'png' if args.stored_as == 'png' else 'jpg'}",
                folder / f"{stem}_clean.png",
            )
        )
    return crops


def run_case(case: tuple, folder: Path, told: int | None = None) -> dict:
    """One crop, network and noise: the job's outcome (and, for the chroma runs, the interpolation sweep)."""
    (entry, noisy, clean), network, chroma = case
    out = folder / f"{noisy.stem}-{network.split()[0]}-{chroma}"
    options = [o.format(weights=shared_path("weights")) for o in NETWORKS[network]]
    command = adapt_command(noisy, clean)
    command += [*options, *MODES[chroma], "--threads", "1", "--json", "--quiet", "-o", str(out)]
    command += ["--sigma", str(told)] if told is not None else []
    manifest = run_json_job(command)
    row = {"image": entry, "network": network, "noise_chroma": chroma, **job_outcome(manifest)}
    row["sigma_hat"] = manifest["noise"]["sigma_estimates"][0] if told is None else told  # σ̂, or σ told
    row["chroma"] = (manifest["noise"]["chroma_subsampled"], manifest["noise"].get("chroma_read_from"))
    row["jpeg_quality"] = manifest["noise"].get("jpeg_quality")
    row["aimed_levels"] = manifest["noise"].get("aimed_levels")
    row["told_levels"] = manifest["noise"].get("told_levels")  # a noise-map network told these instead of σ̂
    level = row["told_levels"][0] if row["told_levels"] else row["sigma_hat"]
    if chroma in (
        "auto",
        "jpeg",
    ):  # the sweep blends with the colour network, which "channels" runs do not use
        row["alphas"] = sweep(options, out / f"{noisy.stem}_rfr.safetensors", noisy, clean, level)
    print(row, flush=True)
    return row


@torch.no_grad()
def sweep(options: list[str], adapted_path: Path, noisy: Path, clean: Path, level: float) -> dict:
    """PSNR of the pre-trained and adapted weights blended at each of :data:`ALPHAS` (a noise-map network
    told ``level``, grey levels, as the job told it)."""
    from rfr_deploy.images import read_image

    model_name = options[options.index("--model") + 1]
    weights = options[options.index("--weights") + 1] if "--weights" in options else "default"
    y = torch.from_numpy(read_image(noisy).pixels).permute(2, 0, 1)[None]
    x = torch.from_numpy(read_image(clean).pixels).permute(2, 0, 1)[None]
    channels = y.shape[1]
    pretrained = create_model(model_name, weights=weights, channels=channels).eval()
    adapted = create_model(model_name, weights=str(adapted_path), channels=channels).eval()
    blended = create_model(model_name, weights=str(adapted_path), channels=channels).eval()
    sigma = level / 255 if pretrained.meta.noise_map else None
    scores = {}
    for alpha in ALPHAS:
        for p0, p1, pb in zip(
            pretrained.parameters(), adapted.parameters(), blended.parameters(), strict=True
        ):
            pb.copy_(p0 + alpha * (p1 - p0))
        scores[f"{alpha:g}"] = round(psnr(denoise(blended, y, sigma=sigma), x), 3)
    return scores


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        crops = make_crops(args, folder)
        networks = args.networks.split(",")
        modes = args.modes.split(",")
        cases = [(crop, net, mode) for crop in crops for net in networks for mode in modes]
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            told = args.sigma if args.tell_sigma else None
            rows = list(pool.map(lambda case: run_case(case, folder, told), cases))
    name = "jpeg_chroma_noise" + ("" if args.sigma == 25 else f"_sigma{args.sigma}")
    name += ("" if args.quality == 90 else f"_q{args.quality}") + (
        "" if args.stored_as == "jpeg" else f"_{args.stored_as}"
    )
    name += "" if args.subsampling == 2 else "_" + SUBSAMPLING[args.subsampling].replace(":", "")
    name += ("_gray" if args.gray else "") + (
        "" if args.modes == "off,auto" else "_" + args.modes.replace(",", "_")
    )
    name += args.suffix
    report(name, {"args": vars(args), "environment": environment(), "rows": rows}, render(args, rows))


def render(args: argparse.Namespace, rows: list[dict]) -> str:
    head = _render_compressed(rows) if "jpeg" in args.modes.split(",") else []
    head += _render_runs(rows) if "channels" in args.modes.split(",") else []
    if not {"off", "auto"} <= set(args.modes.split(",")):
        layout = "gray" if args.gray else SUBSAMPLING[args.subsampling]
        title = f"# {args.modes} runs, {layout} JPEGs of quality {args.quality}, σ = {args.sigma}"
        return "\n".join(
            [title, "", f"Central {args.crop}² crops of {args.images.replace(',', ', ')}.", "", *head]
        )
    lines = [
        f"# Adapting to {SUBSAMPLING[args.subsampling]} JPEGs: white synthetic noise against noise with its "
        "chroma subsampled",
        "",
        f"- Central {args.crop}² crops of {args.images.replace(',', ', ')}; white Gaussian noise σ = {args.sigma}, "
        f"clipped to 8 bits, saved as JPEG quality {args.quality} with {SUBSAMPLING[args.subsampling]} chroma"
        + (", decoded and saved as PNG (CROP.png)" if args.stored_as == "png" else "")
        + f". `rfr-deploy adapt-and-export CROP.{'png' if args.stored_as == 'png' else 'jpg'} --reference "
        "CLEAN.png --threads 1` with the defaults (σ estimated), `--noise-chroma off` (white noise) or `auto` "
        "(chroma subsampled). PSNR in dB against the clean crop.",
        "",
        *_alpha_header(
            "network | image | σ̂ | pre-trained | white noise | (α, by) | chroma subsampled (α = 1), as read",
            "|---|---|---:|---:|---:|---|---:|",
        ),
    ]
    for network in dict.fromkeys(r["network"] for r in rows):
        for entry in dict.fromkeys(r["image"] for r in rows):
            white, chroma = (_run(rows, network, entry, c) for c in ("off", "auto"))
            lines.append(
                f"| {network} | {entry} | {chroma['sigma_hat']:.2f} | {chroma['pretrained_psnr']:.2f} | "
                f"{white['adapted_psnr']:.2f} | ({white['interpolation']:g}, {white['selected_by']}) | "
                f"{chroma['adapted_psnr']:.2f}, {_chroma(chroma['chroma'])} | "
                + " | ".join(f"{v:.2f}" for v in chroma["alphas"].values())
                + " |"
            )
    lines += [
        "",
        "Mean gain over the pre-trained output, dB:",
        "",
        "| network | white noise | chroma subsampled |",
        "|---|---:|---:|",
    ]
    for network in dict.fromkeys(r["network"] for r in rows):
        white, chroma = (_mean_gain(rows, network, mode) for mode in ("off", "auto"))
        lines.append(f"| {network} | {white:+.2f} | {chroma:+.2f} |")
    lines += ["", *head] if head else []
    return "\n".join(lines)


def _render_compressed(rows: list[dict]) -> list[str]:
    """The runs on noise compressed with the file's tables: PSNR and gain per crop, and the mean gain."""
    runs = [r for r in rows if r["noise_chroma"] == "jpeg"]
    lines = [
        "Adapted on noise compressed as the file was (`--noise-jpeg auto`), PSNR in dB:",
        "",
        *_alpha_header(
            "network | image | σ̂ | pre-trained | white noise | chroma subsampled | compressed like the file | gain",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ),
    ]
    for r in runs:
        alphas = r.get("alphas") or {}
        white, chroma = (_run(rows, r["network"], r["image"], mode) for mode in ("off", "auto"))
        lines.append(
            f"| {r['network']} | {r['image']} | {r['sigma_hat']:.2f} | {r['pretrained_psnr']:.2f} | "
            f"{_psnr(white)} | {_psnr(chroma)} | {r['adapted_psnr']:.2f} | {r['gain_db']:+.2f} | "
            + " | ".join(f"{alphas[f'{a:g}']:.2f}" if alphas else "–" for a in ALPHAS)
            + " |"
        )
    for network in dict.fromkeys(r["network"] for r in runs):
        for mode, label in (("off", "white noise"), ("auto", "chroma subsampled"), ("jpeg", "compressed")):
            if (gain := _mean_gain(rows, network, mode)) is not None:
                lines.append(f"\nMean gain, {network}, {label}: {gain:+.2f} dB")
    return lines


def _render_runs(rows: list[dict]) -> list[str]:
    """Every run: its noise mode, σ̂, pre-trained and adapted PSNR; then the mean of each mode's."""
    lines = [
        "",
        "Every run (`channels`: the gray network on each channel alone, `--per-channel on`), PSNR in dB:",
        "",
        "| network | image | mode | σ̂ | pre-trained | adapted | gain |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['network']} | {r['image']} | {r['noise_chroma']} | {r['sigma_hat']:.2f} | "
            f"{r['pretrained_psnr']:.2f} | {r['adapted_psnr']:.2f} | {r['gain_db']:+.2f} |"
        )
    lines += ["", "| network | mode | mean pre-trained | mean adapted |", "|---|---|---:|---:|"]
    for network in dict.fromkeys(r["network"] for r in rows):
        for mode in dict.fromkeys(r["noise_chroma"] for r in rows):
            runs = [r for r in rows if (r["network"], r["noise_chroma"]) == (network, mode)]
            pre, post = (statistics.fmean(r[k] for r in runs) for k in ("pretrained_psnr", "adapted_psnr"))
            lines.append(f"| {network} | {mode} | {pre:.2f} | {post:.2f} |")
    return lines


def _alpha_header(columns: str, alignment: str) -> list[str]:
    """A table's header: ``columns``, then one per interpolation of :data:`ALPHAS`."""
    alphas = " | ".join(f"α = {a:g}" for a in ALPHAS)
    return [f"| {columns} | {alphas} |", alignment + "---:|" * len(ALPHAS)]


def _mean_gain(rows: list[dict], network: str, mode: str) -> float | None:
    """The mean gain of ``network``'s runs with the noise ``mode``; None where there are none."""
    gains = [r["gain_db"] for r in rows if (r["network"], r["noise_chroma"]) == (network, mode)]
    return statistics.fmean(gains) if gains else None


def _run(rows: list[dict], network: str, image: str, mode: str) -> dict | None:
    """The run of ``network`` on ``image`` with the noise ``mode``, if there is one."""
    return next(
        (r for r in rows if (r["network"], r["image"], r["noise_chroma"]) == (network, image, mode)), None
    )


def _psnr(run: dict | None) -> str:
    return f"{run['adapted_psnr']:.2f}" if run else "–"


def _chroma(read: list) -> str:
    """The noise the ``auto`` run drew: its chroma factors and where they were read, or white."""
    factors, source = read
    return "white" if factors is None else f"{factors[0]}×{factors[1]} from the {source}"


if __name__ == "__main__":
    main()
