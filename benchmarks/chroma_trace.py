"""What :func:`rfr_deploy.noise.chroma.find_subsampled_chroma` reads off files that do not say how their
chroma was stored: white-noise PNGs, decoded JPEGs saved as PNG, and real camera photos.

Central crops of every Kodak24, CBSD68 and McMaster image get white Gaussian noise of σ (clipped, 8-bit,
one seeded stream) and are stored as PNG, or as JPEG (4:4:4 at quality 90; 4:2:0 at quality 95, 90, 75
and 50; 4:2:2 at 90) and decoded, as a PNG written from the JPEG holds them. Each is read at the true σ
(as a job told ``--sigma`` does; below :data:`~rfr_deploy.noise.chroma.TRACE_LEVEL` nothing is read), and
also without that floor, to show why it is there. The real photos (Nam, SIDD samples) are read at the
level :func:`~rfr_deploy.noise.level.estimate_noise_level` gives them, as a job estimating σ does.

    python benchmarks/chroma_trace.py --threads 2
"""

from __future__ import annotations

import argparse
import collections
import io

import numpy as np
import torch
from common import environment, report, use_threads
from PIL import Image

from rfr_deploy.datasets import load_folder
from rfr_deploy.images import list_images, read_image
from rfr_deploy.noise.chroma import CHROMA_TRACE, TRACE_LEVEL, find_subsampled_chroma
from rfr_deploy.noise.level import estimate_noise_level
from rfr_deploy.shared import shared_path

STORED = {
    "PNG": None,
    "JPEG 4:4:4 q90": (0, 90),
    "JPEG 4:2:0 q95": (2, 95),
    "JPEG 4:2:0 q90": (2, 90),
    "JPEG 4:2:0 q75": (2, 75),
    "JPEG 4:2:0 q50": (2, 50),
    "JPEG 4:2:2 q90": (1, 90),
}
"""How each noisy crop is stored: Pillow's (subsampling, quality), or None for PNG."""
TRUE = {"PNG": (1, 1), "JPEG 4:4:4 q90": (1, 1), "JPEG 4:2:2 q90": (1, 2)}
"""The subsampling each storage applied (4:2:0: (2, 2))."""
UNGATED = 1.0
"""The level a crop is told to read it without the floor (any level above TRACE_LEVEL does)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="Kodak24,CBSD68,McMaster")
    parser.add_argument("--crops", default="128,256", help="central crop sizes")
    parser.add_argument("--sigmas", default="0,1,2,3,5,8,10,15,25,50", help="grey levels")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def store(noisy: np.ndarray, how: tuple[int, int] | None) -> torch.Tensor:
    """``noisy`` (H×W×3 uint8) as the file stores it, decoded: a 3×H×W tensor in [0, 1]."""
    if how is not None:
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=how[1], subsampling=how[0])
        noisy = np.asarray(Image.open(buffer).convert("RGB"))
    return torch.from_numpy(np.array(noisy)).permute(2, 0, 1).float() / 255  # a writable copy


def read_crops(args) -> list[dict]:
    """One row per crop size, σ, storage and image: what is read at the true σ and without the floor."""
    images = [
        i for d in args.datasets.split(",") for i in load_folder(shared_path("data", "test", d), channels=3)
    ]
    rng, rows = np.random.default_rng(3), []
    for size in (int(c) for c in args.crops.split(",")):
        for sigma in (int(s) for s in args.sigmas.split(",")):
            for image in images:
                h, w = image.pixels.shape[:2]
                top, left = (h - size) // 2, (w - size) // 2
                clean = np.round(image.pixels[top : top + size, left : left + size] * 255)
                noisy = np.clip(np.round(clean + rng.standard_normal(clean.shape) * sigma), 0, 255).astype(
                    np.uint8
                )
                for stored, how in STORED.items():
                    x = store(noisy, how)
                    rows.append(
                        {
                            "crop": size,
                            "sigma": sigma,
                            "stored": stored,
                            "image": image.name,
                            "read": list(find_subsampled_chroma(x, sigma / 255)),
                            "ungated": list(find_subsampled_chroma(x, UNGATED)),
                        }
                    )
            print(f"{size}² σ = {sigma}: done", flush=True)
    return rows


def read_photos() -> list[dict]:
    """The real photos, each at its estimated level."""
    rows = []
    for folder in ("Nam_CBDNet25", "SIDD_samples"):
        for path in list_images([shared_path("data", "real", folder, "noisy")]):
            x = torch.from_numpy(read_image(path).pixels).permute(2, 0, 1)
            sigma = estimate_noise_level(x).sigma
            read, ungated = find_subsampled_chroma(x, sigma), find_subsampled_chroma(x, UNGATED)
            record = {"set": folder, "image": path.name, "sigma_hat": round(sigma * 255, 2)}
            rows.append({**record, "read": list(read), "ungated": list(ungated)})
    return rows


def main() -> None:
    args = parse_args()
    use_threads(args)
    rows, photos = read_crops(args), read_photos()
    data = {"args": vars(args), "environment": environment(), "rows": rows, "photos": photos}
    report("chroma_trace", data, render(args, rows, photos))


def _counts(rows: list[dict], key: str, truth: tuple[int, int]) -> str:
    """How many rows read ``truth``, and what the others read."""
    read = collections.Counter(tuple(r[key]) for r in rows)
    others = ", ".join(f"{n}× {a}×{b}" for (a, b), n in sorted(read.items()) if (a, b) != truth)
    return f"{read[truth]}/{len(rows)}" + (f" ({others})" if others else "")


def render(args, rows: list[dict], photos: list[dict]) -> str:
    lines = [
        "# Subsampled chroma read off the pixels",
        "",
        f"`python benchmarks/chroma_trace.py` (threshold {CHROMA_TRACE}, floor σ = {TRACE_LEVEL * 255:g}). "
        f"Central crops of {args.datasets.replace(',', ', ')}, white noise of σ, stored as below and decoded. "
        "Each cell: crops read as the storage's true subsampling (full chroma for PNG and 4:4:4, 2×2 for "
        "4:2:0, 1×2 for 4:2:2) out of all, and what the others read. 'ungated': read without the level floor.",
        "",
    ]
    for size in dict.fromkeys(r["crop"] for r in rows):
        lines += [
            f"## {size}² crops",
            "",
            "| σ | " + " | ".join(STORED) + " |",
            "|---:|" + "---|" * len(STORED),
        ]
        for sigma in dict.fromkeys(r["sigma"] for r in rows):
            cells = []
            for stored in STORED:
                part = [r for r in rows if (r["crop"], r["sigma"], r["stored"]) == (size, sigma, stored)]
                key = "read" if sigma / 255 >= TRACE_LEVEL else "ungated"
                cell = _counts(part, key, TRUE.get(stored, (2, 2)))
                cells.append(cell if key == "read" else f"ungated: {cell}")
            lines.append(f"| {sigma} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "## Real photos, at their estimated level",
        "",
        "| set | image | σ̂ | read | ungated |",
        "|---|---|---:|---|---|",
    ]
    for p in photos:
        read, ungated = ("×".join(map(str, p[k])) for k in ("read", "ungated"))
        lines.append(f"| {p['set']} | {p['image']} | {p['sigma_hat']:.2f} | {read} | {ungated} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
