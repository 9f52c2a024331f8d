"""A grey image stored as RGB: what a colour network makes of it, against the gray network it is given now.

A grey photograph saved as RGB has three equal channels, and so does its noise. A colour network was
trained on noise drawn per channel and leaves such noise in place. Since stop 61 ``denoise`` and
``adapt-and-export`` take such an image as gray where the network has gray weights (``--model dncnn``'s
packaged ones, or a gray ``--weights``) and write it as RGB again. This scores, on whole Set12 images with
seeded Gaussian noise (the same in the three channels), the pre-trained output (M = 0) of:

* the colour network on the RGB file (what the jobs did before), official CDnCNN-B and the packaged one;
* the gray network on its gray image (what they do now), official DnCNN-B and the packaged one.

    python benchmarks/grey_rgb.py --threads 1          # about two minutes on one core
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import torch
from common import environment, report, use_threads

from rfr_deploy.datasets import load_folder
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.shared import shared_path

NETWORKS = {  # name: (weights, channels the network takes)
    "CDnCNN-B (official) on the RGB file": ("dncnn/dncnn_color_blind.pth", 3),
    "DnCNN-B (official) on the gray image": ("dncnn/dncnn_gray_blind.pth", 1),
    "CDnCNN (packaged) on the RGB file": ("default", 3),
    "DnCNN (packaged) on the gray image": ("default", 1),
}


def load_networks() -> dict[str, torch.nn.Module]:
    networks = {}
    for name, (weights, channels) in NETWORKS.items():
        path = weights if weights == "default" else str(shared_path("weights", *weights.split("/")))
        networks[name] = create_model("dncnn", weights=path, channels=channels).eval()
    return networks


@torch.inference_mode()
def score(networks, sigmas: list[float], limit: int | None) -> list[dict]:
    rows = []
    for n, image in enumerate(load_folder(shared_path("data", "test", "Set12"), channels=1, limit=limit)):
        clean = image.pixels
        for sigma in sigmas:
            generator = np.random.default_rng([n, int(sigma)])
            noisy = clean + (sigma / 255) * generator.standard_normal(clean.shape).astype(np.float32)
            row = {"image": image.name, "sigma": sigma}
            for name, net in networks.items():
                channels = NETWORKS[name][1]
                out = to_pixels(denoise(net, to_tensor(np.repeat(noisy, channels, axis=2), "cpu")))
                row[name] = round(psnr(quantize(out)[:, :, :1], clean), 3)
            rows.append(row)
            print(row, file=sys.stderr)
    return rows


def summarise(rows: list[dict], sigmas: list[float]) -> str:
    lines = [
        "| network | " + " | ".join(f"σ = {s:g}" for s in sigmas) + " |",
        "|---|" + "---:|" * len(sigmas),
    ]
    for name in NETWORKS:
        means = [statistics.mean(r[name] for r in rows if r["sigma"] == s) for s in sigmas]
        lines.append(f"| {name} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--limit", type=int, default=None, help="Set12 images (default: all 12)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="grey_rgb_set12")
    args = parser.parse_args()
    use_threads(args)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    rows = score(load_networks(), sigmas, args.limit)
    table = summarise(rows, sigmas)
    markdown = (
        "# A grey image stored as RGB: colour network on the RGB file vs. gray network on the gray image\n\n"
        f"Whole Set12 images ({len(rows) // len(sigmas)}), the same seeded Gaussian noise in all three "
        "channels, pre-trained output (M = 0), mean PSNR in dB on the 8-bit output's gray channel.\n\n"
        + table
        + "\n\n`python benchmarks/grey_rgb.py "
        + f"--threads {args.threads}`\n"
    )
    report(args.name, {"environment": environment(), "sigmas": sigmas, "rows": rows}, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
