"""A large photograph end to end: scoring it whole against scoring it on windows (``--score-pixels``).

Builds a mosaic of test images of one size (Kodak24's landscape ones by default: 3 × 3 of 768×512 is
2304×1536, 3.5 megapixels), adds seeded Gaussian noise, writes it as an 8-bit PNG, and runs
``rfr-deploy adapt-and-export`` on it once per ``--pixels`` value, each in a fresh process, scored
against the clean mosaic. Reports the job's timings (its phases too), its peak memory, the PSNRs and
what the scorer chose. ``--cycle`` repeats images, mirrored, for mosaics larger than a set;
``--noise camera`` adds CBDNet's camera noise at an RMS of ``--sigma`` instead of Gaussian noise.

    python scoring_windows.py --pixels 0,524288 --threads 2 --name scoring_windows_kodak_mosaic3x3
    python scoring_windows.py --rows 8 --cols 4 --cycle --noise camera --sigma 10 --model cbdnet \
        --pixels 524288 --name scoring_windows_kodak_mosaic8x4_camera   # 12.6 MP, CBDNet's camera noise
    python scoring_windows.py compare WHOLE.json WINDOWS.json NAME   # two `rfr-deploy eval --json` runs
    python scoring_windows.py manifests NAME A.json B.json   # `adapt-and-export --json` runs of one image
    python scoring_windows.py exactness NAME      # windows against the whole image, packaged networks
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import environment, job_outcome, report, run_json_job

from rfr_deploy.images import list_images, read_image, write_image
from rfr_deploy.shared import shared_path


def build_mosaic(folder: Path, rows: int, cols: int, cycle: bool = False) -> np.ndarray:
    """The first rows × cols images of ``folder`` that have the first image's shape, tiled row by row.
    ``cycle`` starts over, mirrored left to right, when the folder has too few (for a size, not a
    quality figure: the repeats recur under the update's own flips)."""
    tiles: list[np.ndarray] = []
    for path in list_images([folder]):
        pixels = read_image(path).pixels
        if not tiles or pixels.shape == tiles[0].shape:
            tiles.append(pixels)
        if len(tiles) == rows * cols:
            break
    distinct = len(tiles)
    while cycle and distinct and len(tiles) < rows * cols:
        tiles.append(tiles[len(tiles) % distinct][:, ::-1])
    if len(tiles) < rows * cols:
        raise SystemExit(f"{folder}: only {len(tiles)} images of one shape, {rows * cols} needed")
    return np.concatenate([np.concatenate(tiles[r * cols : (r + 1) * cols], axis=1) for r in range(rows)])


def add_noise(clean: np.ndarray, args) -> np.ndarray:
    """Seeded Gaussian noise of σ = ``args.sigma`` grey levels, or CBDNet's camera noise (a random camera
    of its model) scaled to that RMS."""
    if args.noise == "gaussian":
        rng = np.random.default_rng(args.seed)
        return clean + rng.normal(0.0, args.sigma / 255.0, clean.shape).astype(np.float32)
    import torch

    from rfr_deploy.noise.camera import CameraNoise

    x = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1)[None]
    noisy, _ = CameraNoise(level=args.sigma / 255.0)(x, torch.Generator().manual_seed(args.seed))
    return noisy[0].permute(1, 2, 0).numpy()


def run_job(noisy: Path, clean: Path, out: Path, pixels: int, args) -> dict:
    """One ``adapt-and-export`` in a fresh process; its manifest, with the process's peak resident
    memory added (``peak_rss_mb``, from ``wait4``)."""
    command = [
        *("rfr-deploy", "adapt-and-export", str(noisy), "--reference", str(clean), "-o", str(out)),
        *(
            ("--model", args.model)
            if args.model
            else ("--weights", str(shared_path("weights", *args.weights.split("/"))))
        ),
        *("--score-pixels", str(pixels), "--threads", str(args.threads), "--json"),
    ]
    if args.sigma_mode == "known":
        command += ["--sigma", str(args.sigma)]
    print(" ".join(command), file=sys.stderr)
    return run_json_job(command)


def summarise(pixels: int, manifest: dict) -> dict:
    timings, adaptation = manifest["timings"], manifest["adaptation"]
    return {
        "score_pixels": pixels,
        "adapt_s": timings["adapt_s"],
        "total_s": timings["total_s"],
        "steps": adaptation["steps"],
        "noise_level_s": timings.get("noise_level_s"),
        "pseudo_clean_s": timings["pseudo_clean_s"],
        "output_s": timings["output_s"],
        "step_mean_s": timings["step_mean_s"],
        **job_outcome(manifest),
        "checkpoint_used": adaptation.get("checkpoint_used"),
        "sure_db": adaptation.get("sure_db"),
    }


def mosaic_header(args, shape: tuple[int, ...]) -> list[str]:
    return [
        f"# A {shape[1]}×{shape[0]} mosaic of {args.dataset} ({args.rows} × {args.cols} images), "
        + ("camera noise of RMS " if args.noise == "camera" else "σ = ")
        + f"{args.sigma:g} "
        f"({args.sigma_mode}), whole against windowed scoring",
        "",
        *(
            [
                "Images repeat, mirrored, to fill the grid (`--cycle`): a size for timing, not a quality figure.",
                "",
            ]
            if args.cycle
            else []
        ),
        (f"Packaged `{args.model}`" if args.model else f"Weights `{args.weights}`")
        + f"; `rfr-deploy adapt-and-export` defaults otherwise, {args.threads} threads, "
        "one fresh process per row. `--score-pixels 0` scores the whole image.",
    ]


def render(rows: list[dict], header: list[str]) -> str:
    lines = [
        *header,
        "",
        "| --score-pixels | adapt (s) | job (s) | updates (s) | level (s) | target (s) | output (s) | peak memory (MB) "
        "| pre-trained (dB) | adapted (dB) | gain (dB) | α (by) | checkpoint | patch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        phases = [r.get(k) for k in ("noise_level_s", "pseudo_clean_s", "output_s", "peak_rss_mb")]
        lines.append(
            f"| {r['score_pixels']} | {r['adapt_s']:.1f} | {r['total_s']:.1f} | {r['steps'] * r['step_mean_s']:.1f} "
            + "".join("| – " if t is None else f"| {t:.0f} " if t > 999 else f"| {t:.1f} " for t in phases)
            + f"| {r['pretrained_psnr']:.3f} | {r['adapted_psnr']:.3f} | {r['gain_db']:+.3f} "
            f"| {r['interpolation']:g} ({r['selected_by']}) | {r['checkpoint_used']} | {r.get('patch_used', '–')} |"
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


def window_exactness(name: str, image: str = "NOISY_3.png", models: str = "dncnn,rdn,cbdnet,ridnet") -> None:
    """How far each window a job would score is from the whole image at its pixels, per packaged colour
    network: the output of the cut (with its margin) against the whole image's output in the window."""
    import torch

    from rfr_deploy.inference import to_tensor

    noisy = to_tensor(read_image(shared_path("data", "real", "SIDD_samples", "noisy", image)).pixels)
    probe = torch.randn(noisy.shape, generator=torch.Generator().manual_seed(1))
    sure_models = ("cbdnet", "ridnet")  # SURE's estimate on both routes, too
    rows = [_exactness_row(arch, noisy, probe, arch in sure_models) for arch in models.split(",")]
    lines = [
        f"# Scoring windows against the whole image: SIDD {image}, packaged networks",
        "",
        "Windows placed as a job places them on this image (default `--score-pixels`); in each, the output "
        "of the cut (window and margin) against the whole image's output at the window's pixels.",
        "",
        "| network | windows | max abs diff | rms diff | rms residual (Y − f(Y)) | SURE PSNR, cuts − exact (dB) |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['model']} | {r['windows']} | {r['max_abs_diff']:.2e} | {r['rms_diff']:.2e} | {r['rms_residual']:.2e} "
            + ("| – |" if r["sure_psnr_diff_db"] is None else f"| {r['sure_psnr_diff_db']:+.5f} |")
            for r in rows
        ),
        "",
        "SURE (σ = 10 grey levels, one probe, the same probe values on both routes) over all the windows: "
        "the terms of each cut against the whole image's terms restricted to the window (its divergence "
        "probed there only).",
    ]
    report(name, {"image": image, "rows": rows, "environment": environment()}, "\n".join(lines))


def _exactness_row(arch: str, noisy, probe, with_sure: bool, level: float = 10 / 255) -> dict:
    """One packaged network's differences, cut against whole, over the windows a job places on ``noisy``;
    ``with_sure``: SURE's PSNR estimate at ``level`` on both routes too."""
    import torch

    from rfr_deploy.adaptation.scoring_windows import SCORE_PIXELS, cut_window, window_origins
    from rfr_deploy.adaptation.sure import combine, sure_terms
    from rfr_deploy.models.factory import create_model

    model = create_model(arch, channels=3).eval()
    align = model.entry.pad_multiple
    origins = window_origins(*noisy.shape[-2:], SCORE_PIXELS, torch.Generator().manual_seed(0), align)
    diffs, residuals, on_cuts, on_whole = [], [], [], []
    with torch.no_grad():
        whole = model(noisy, None)
        for top, left, size in origins:
            cut, region = cut_window(noisy, top, left, size, align)
            out = model(noisy[cut], None)
            inside = region.expand_as(out)
            diffs.append((out - whole[cut])[inside])
            residuals.append((noisy[cut] - out)[inside])
            if with_sure:
                on_cuts.append(
                    sure_terms(model, noisy[cut], None, [probe[cut]], sigmas=(level,), region=region)
                )
                placed = torch.zeros_like(noisy, dtype=torch.bool)
                placed[cut] = inside
                on_whole.append(
                    sure_terms(model, noisy, None, [probe * placed], sigmas=(level,), region=placed)
                )
    diff, residual = torch.cat(diffs), torch.cat(residuals)
    estimates = [combine(terms).mse(level) for terms in (on_cuts, on_whole)] if with_sure else None
    return {
        "sure_psnr_diff_db": 10 * math.log10(estimates[1] / estimates[0]) if estimates else None,
        "model": arch,
        "windows": len(origins),
        "max_abs_diff": float(diff.abs().max()),
        "rms_diff": float(diff.pow(2).mean().sqrt()),
        "rms_residual": float(residual.pow(2).mean().sqrt()),
    }


def main() -> None:
    if sys.argv[1:2] == ["exactness"]:
        window_exactness(*sys.argv[2:])
        return
        return
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
    parser.add_argument("--cycle", action="store_true", help="repeat images (mirrored) to fill the grid")
    parser.add_argument(
        "--sigma", type=float, default=25.0, help="σ, or the camera noise's RMS (grey levels)"
    )
    parser.add_argument("--noise", choices=("gaussian", "camera"), default="gaussian")
    parser.add_argument("--model", help="a packaged model (its default weights) instead of --weights")
    parser.add_argument("--sigma-mode", choices=("estimate", "known"), default="estimate")
    parser.add_argument("--weights", default="dncnn/dncnn_color_blind.pth", help="under shared/weights")
    parser.add_argument("--pixels", default="0,524288", help="comma-separated --score-pixels values")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="scoring_windows_kodak_mosaic3x3")
    args = parser.parse_args()
    clean = build_mosaic(shared_path("data", "test", args.dataset), args.rows, args.cols, args.cycle)
    noisy = add_noise(clean, args)
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
