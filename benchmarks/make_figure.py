"""Draw the README's picture: crops of the bundled sample, noisy / pre-trained / adapted / clean.

Runs the Quick start job and the plain pre-trained denoiser through the CLI, as a user would:

    rfr-deploy adapt-and-export --sample -o WORK    # WORK/sample_noisy_rfr.png + manifest sample_noisy.json
    rfr-deploy denoise rfr_deploy/data/sample_noisy.png -o WORK   # WORK/sample_noisy_denoised.png

then cuts the same square out of the noisy input, the two outputs and the clean reference, enlarges
each by pixel repetition (no smoothing) and writes them side by side, labelled with the whole-image
PSNRs that the adapt-and-export manifest records. About 2 minutes on one CPU thread:

    OMP_NUM_THREADS=1 python benchmarks/make_figure.py             # -> docs/sample_crops.png

With ``--work DIR`` the CLI outputs are kept there, and a rerun reuses them (adapt-and-export skips
an image whose manifest records the same input and settings).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

from rfr_deploy.jobs.reference import sample_paths

ROOT = Path(__file__).resolve().parent.parent
LABEL_HEIGHT = 44
GAP = 6


def run_cli(work: Path) -> dict:
    """Run the adapt-and-export Quick start and the pre-trained denoiser; return the job's manifest."""
    noisy, _ = sample_paths()
    subprocess.run(["rfr-deploy", "adapt-and-export", "--sample", "-o", str(work)], check=True)
    subprocess.run(["rfr-deploy", "denoise", str(noisy), "-o", str(work)], check=True)
    return json.loads((work / f"{noisy.stem}.json").read_text())


def read_pixels(path: Path) -> np.ndarray:
    """An 8-bit RGB image as a uint8 array."""
    return np.asarray(Image.open(path).convert("RGB"))


def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of two 8-bit images."""
    error = np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def labelled_panel(
    pixels: np.ndarray, box: tuple[int, int, int], scale: int, label: str, font
) -> Image.Image:
    """The crop ``box`` = (x, y, side) of ``pixels``, enlarged ``scale`` times, with ``label`` under it."""
    x, y, side = box
    crop = Image.fromarray(pixels[y : y + side, x : x + side])
    crop = crop.resize((side * scale, side * scale), Image.Resampling.NEAREST)
    panel = Image.new("RGB", (crop.width, crop.height + LABEL_HEIGHT), "white")
    panel.paste(crop, (0, 0))
    draw = ImageDraw.Draw(panel)
    for row, text in enumerate(label.split("\n")):
        width = draw.textlength(text, font=font)
        draw.text(((crop.width - width) / 2, crop.height + 3 + row * 20), text, fill="black", font=font)
    return panel


def compose(panels: list[Image.Image]) -> Image.Image:
    """The panels in one row, ``GAP`` white pixels apart."""
    width = sum(p.width for p in panels) + GAP * (len(panels) - 1)
    figure = Image.new("RGB", (width, max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        figure.paste(panel, (x, 0))
        x += panel.width + GAP
    return figure


def draw_figure(work: Path, box: tuple[int, int, int], scale: int) -> Image.Image:
    """Run the CLI into ``work`` and compose the four labelled crops."""
    manifest = run_cli(work)
    scores = manifest["scores"]
    noisy_path, clean_path = sample_paths()
    clean = read_pixels(clean_path)
    images = {
        "noisy": read_pixels(noisy_path),
        "pretrained": read_pixels(work / f"{noisy_path.stem}_denoised.png"),
        "adapted": read_pixels(work / f"{noisy_path.stem}_rfr.png"),
    }
    # The denoise command's output must be the pre-trained result the manifest scored.
    measured = psnr(images["pretrained"], clean)
    if abs(measured - scores["pretrained"]["psnr"]) > 0.01:
        raise SystemExit(
            f"denoise output scores {measured:.4f} dB, the manifest {scores['pretrained']['psnr']}"
        )
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 16)
    titles = {
        "noisy": "noisy input (σ = 25)",
        "pretrained": f"pre-trained ({manifest['model']['name']})",
        "adapted": f"adapted, {manifest['adaptation']['steps']} updates",
    }
    panels = [
        labelled_panel(images[name], box, scale, f"{titles[name]}\n{scores[name]['psnr']:.2f} dB", font)
        for name in images
    ]
    panels.append(labelled_panel(clean, box, scale, "clean reference\n(PSNR: whole image)", font))
    return compose(panels)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "sample_crops.png")
    parser.add_argument("--work", type=Path, help="keep the CLI outputs here (default: a temporary folder)")
    parser.add_argument("--box", type=int, nargs=3, default=(24, 150, 96), metavar=("X", "Y", "SIDE"))
    parser.add_argument("--scale", type=int, default=3, help="pixel repetition of each crop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        figure = draw_figure(work, tuple(args.box), args.scale)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.output, optimize=True)
    print(f"wrote {args.output} ({figure.width}x{figure.height}, {args.output.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
