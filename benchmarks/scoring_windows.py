"""A large photograph end to end: scoring it whole against scoring it on windows (``--score-pixels``).

Builds a mosaic of test images of one size (Kodak24's landscape ones by default: 3 × 3 of 768×512 is
2304×1536, 3.5 megapixels), adds seeded Gaussian noise, writes it as an 8-bit PNG, and runs
``rfr-deploy adapt-and-export`` on it once per ``--pixels`` value, each in a fresh process, scored
against the clean mosaic. Reports the job's timings, the PSNRs and what the scorer chose.

    python scoring_windows.py --pixels 0,524288 --threads 2 --name scoring_windows_kodak_mosaic3x3
    python scoring_windows.py compare WHOLE.json WINDOWS.json NAME   # two `rfr-deploy eval --json` runs
    python scoring_windows.py manifests NAME A.json B.json   # `adapt-and-export --json` runs of one image
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import environment, report

from rfr_deploy.images import list_images, read_image, write_image
from rfr_deploy.shared import shared_path


def build_mosaic(folder: Path, rows: int, cols: int) -> np.ndarray:
    """The first rows × cols images of ``folder`` that have the first image's shape, tiled row by row."""
    tiles: list[np.ndarray] = []
    for path in list_images([folder]):
        pixels = read_image(path).pixels
        if not tiles or pixels.shape == tiles[0].shape:
            tiles.append(pixels)
        if len(tiles) == rows * cols:
            break
    if len(tiles) < rows * cols:
        raise SystemExit(f"{folder}: only {len(tiles)} images of one shape, {rows * cols} needed")
    return np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)])


def run_job(noisy: Path, clean: Path, out: Path, pixels: int, args) -> dict:
    """One ``adapt-and-export`` in a fresh process; its manifest."""
    command = [
        *("rfr-deploy", "adapt-and-export", str(noisy), "--reference", str(clean), "-o", str(out)),
        *("--weights", str(shared_path("weights", *args.weights.split("/")))),
        *("--score-pixels", str(pixels), "--threads", str(args.threads), "--json"),
    ]
    if args.sigma_mode == "known":
        command += ["--sigma", str(args.sigma)]
    print(" ".join(command), file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]


def summarise(pixels: int, manifest: dict) -> dict:
    timings, scores, adaptation = manifest["timings"], manifest["scores"], manifest["adaptation"]
    return {
        "score_pixels": pixels,
        "adapt_s": timings["adapt_s"],
        "total_s": timings["total_s"],
        "steps": adaptation["steps"],
        "step_mean_s": timings["step_mean_s"],
        "pretrained_psnr": scores["pretrained"]["psnr"],
        "adapted_psnr": scores["adapted"]["psnr"],
        "gain_db": scores["adapted"]["psnr"] - scores["pretrained"]["psnr"],
        "interpolation": adaptation["interpolation"],
        "selected_by": adaptation["selected_by"],
        "checkpoint_used": adaptation.get("checkpoint_used"),
        "sure_db": adaptation.get("sure_db"),
    }


def mosaic_header(args, shape: tuple[int, ...]) -> list[str]:
    return [
        f"# A {shape[1]}×{shape[0]} mosaic of {args.dataset} ({args.rows} × {args.cols} images), σ = {args.sigma:g} "
        f"({args.sigma_mode}), whole against windowed scoring",
        "",
        f"Weights `{args.weights}`; `rfr-deploy adapt-and-export` defaults otherwise, {args.threads} threads, "
        "one fresh process per row. `--score-pixels 0` scores the whole image.",
    ]


def render(rows: list[dict], header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| --score-pixels | adapt (s) | job (s) | updates (s) | pre-trained (dB) | adapted (dB) | gain (dB) | α (by) | checkpoint |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['score_pixels']} | {r['adapt_s']:.1f} | {r['total_s']:.1f} | {r['steps'] * r['step_mean_s']:.1f} "
            f"| {r['pretrained_psnr']:.3f} | {r['adapted_psnr']:.3f} | {r['gain_db']:+.3f} "
            f"| {r['interpolation']:g} ({r['selected_by']}) | {r['checkpoint_used']} |"
        )
    return "\n".join(lines)


def compare_evals(whole_file: str, windows_file: str, name: str) -> None:
    """Per image, two ``rfr-deploy eval --json`` documents of one set side by side: scored whole
    (``--score-pixels 0``) and on windows; the updates are the same, the checkpoint and α may differ."""
    whole, windows = (json.loads(Path(f).read_text()) for f in (whole_file, windows_file))
    step = str(whole["settings"]["steps"][-1])
    lines = [
        f"# {Path(whole['dataset']).name}, first {len(whole['images'])} images, whole: scored whole against "
        f"--score-pixels {windows['adapt']['score_pixels']}",
        "",
        f"From `{Path(whole_file).name}` and `{Path(windows_file).name}` (`rfr-deploy eval --json`); gain over "
        f"the pre-trained network after M = {step} (dB), the α and checkpoint each kept, seconds per image.",
        "",
        "| image | whole: gain | α | checkpoint | s | windows: gain | α | checkpoint | s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(whole["images"], windows["images"], strict=True):
        cells = [a["name"]]
        for image in (a, b):
            gain = image["psnr"][step] - image["psnr"]["0"]
            alpha, kept = image["interpolation"][step], image["checkpoint"]
            cells += [f"{gain:+.3f}", f"{alpha:g}", str(kept), f"{image['seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    means = [
        f"{d['mean_gain_db'][step]:+.3f} (worst {d['worst_gain_db'][step]:+.3f})" for d in (whole, windows)
    ]
    seconds = [sum(i["seconds"] for i in d["images"]) / len(d["images"]) for d in (whole, windows)]
    lines += [
        "",
        f"Mean gain: whole {means[0]}, windows {means[1]}. "
        f"Mean seconds per image: whole {seconds[0]:.0f}, windows {seconds[1]:.0f}.",
    ]
    data = {"whole": whole_file, "windows": windows_file, "mean_gain_db": means, "mean_seconds": seconds}
    report(name, data, "\n".join(lines))


def tabulate_manifests(name: str, files: list[str]) -> None:
    """The same table from ``adapt-and-export --json`` documents of one image run elsewhere, one per
    ``--score-pixels`` value (each with its own ``--reference``)."""
    manifests = [json.loads(Path(f).read_text())[0] for f in files]
    rows = [summarise(m["adaptation"]["score_pixels"], m) for m in manifests]
    first = manifests[0]
    header = [
        f"# {Path(first['inputs'][0]['path']).name} ({first['inputs'][0]['width']}×{first['inputs'][0]['height']}), "
        "whole against windowed scoring",
        "",
        f"`rfr-deploy adapt-and-export` with model `{first['model']['name']}` ({first['model']['weights']}), noise "
        f"{first['noise']['kind']}, {first['torch']['threads']} threads, from "
        + ", ".join(f"`{Path(f).name}`" for f in files)
        + ". `--score-pixels 0` scores the whole image.",
    ]
    report(name, {"manifests": files, "rows": rows, "environment": environment()}, render(rows, header))


def main() -> None:
    if sys.argv[1:2] == ["compare"]:
        compare_evals(*sys.argv[2:5])
        return
    if sys.argv[1:2] == ["manifests"]:
        tabulate_manifests(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Kodak24")
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--cols", type=int, default=3)
    parser.add_argument("--sigma", type=float, default=25.0)
    parser.add_argument("--sigma-mode", choices=("estimate", "known"), default="estimate")
    parser.add_argument("--weights", default="dncnn/dncnn_color_blind.pth", help="under shared/weights")
    parser.add_argument("--pixels", default="0,524288", help="comma-separated --score-pixels values")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="scoring_windows_kodak_mosaic3x3")
    args = parser.parse_args()
    clean = build_mosaic(shared_path("data", "test", args.dataset), args.rows, args.cols)
    rng = np.random.default_rng(args.seed)
    noisy = clean + rng.normal(0.0, args.sigma / 255.0, clean.shape).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_image(folder / "clean.png", clean)
        write_image(folder / "mosaic.png", noisy)
        for pixels in (int(p) for p in args.pixels.split(",")):
            manifest = run_job(
                folder / "mosaic.png", folder / "clean.png", folder / f"out{pixels}", pixels, args
            )
            rows.append(summarise(pixels, manifest))
    data = {"args": vars(args), "shape": list(clean.shape), "rows": rows, "environment": environment()}
    report(args.name, data, render(rows, mosaic_header(args, clean.shape)))


if __name__ == "__main__":
    main()
