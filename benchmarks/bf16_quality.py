"""Does the bf16 CPU update adapt as well as fp32? Gains and update times of both, same crops.

Each central crop gets the same noise, plan and seed twice: ``amp='off'`` (channels-last fp32, the
CPU default) and ``amp='bf16'`` (bf16 convolutions, fp32 master weights and Adam). Reported per
image: PSNR of the pre-trained network, the gain of each run (the network adapt returns: SURE-chosen
interpolation and checkpoint, the CLI defaults), and the mean time per update. The criterion of
``--fast auto`` choosing bf16 (rfr_deploy.adaptation.cpu_runners.CPU_BF16_AUTO): faster, and the mean gain
within 0.01 dB of fp32's.

    python benchmarks/bf16_quality.py --threads 1        # Set12 (DnCNN-B) + CBSD68 (CDnCNN-B), 3 each
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from common import environment, parse_overrides, write_results

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.loop import adapt
from rfr_deploy.datasets import load_folder
from rfr_deploy.devices import cpu_native_bf16
from rfr_deploy.images import quantize
from rfr_deploy.inference import denoise, to_pixels, to_tensor
from rfr_deploy.jobs.evaluate import add_gaussian_noise, center_crop
from rfr_deploy.metrics import psnr
from rfr_deploy.models.factory import create_model
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.shared import shared_path

SETS = {"Set12": "dncnn/dncnn_gray_blind.pth", "CBSD68": "dncnn/dncnn_color_blind.pth"}
MODES = {"fp32": "off", "bf16": "bf16"}
TOLERANCE_DB = 0.01


def score_crop(model, pixels, index: int, sigma: float, steps: int, overrides: dict) -> dict:
    clean = to_tensor(pixels)
    noisy = add_gaussian_noise(clean, sigma / 255, seed=0, index=index)
    base = psnr(quantize(to_pixels(denoise(model, noisy))), pixels)
    row = {"pretrained_db": round(base, 4)}
    for mode, amp in MODES.items():
        config = AdaptConfig(steps=steps, seed=index, amp=amp, **overrides)
        result = adapt(model, noisy, GaussianNoise(sigma / 255), config)
        gain = psnr(quantize(to_pixels(denoise(result.model, noisy))), pixels) - base
        row[mode] = {
            "gain_db": round(gain, 4),
            "ms_per_update": round(1e3 * result.mean_step_seconds, 2),
            "runner": result.runner,
            "interpolation": result.interpolation,
        }
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    for mode in MODES:
        out[mode] = {
            "mean_gain_db": round(statistics.mean(r[mode]["gain_db"] for r in rows), 4),
            "mean_ms_per_update": round(statistics.mean(r[mode]["ms_per_update"] for r in rows), 2),
        }
    out["gain_difference_db"] = round(out["bf16"]["mean_gain_db"] - out["fp32"]["mean_gain_db"], 4)
    out["speedup"] = round(out["fp32"]["mean_ms_per_update"] / out["bf16"]["mean_ms_per_update"], 3)
    out["paired_speedups"] = [round(r["fp32"]["ms_per_update"] / r["bf16"]["ms_per_update"], 3) for r in rows]
    out["passes"] = abs(out["gain_difference_db"]) <= TOLERANCE_DB and out["speedup"] > 1.0
    return out


def render(data: dict) -> str:
    s, env = data["summary"], data["environment"]
    lines = [
        "# bf16 vs fp32 CPU update: adaptation gain and time per update",
        "",
        f"- {env['device']}, torch {env['torch']}, {env['cpu_threads']} thread(s); native bf16: "
        f"{data['native_bf16']}; load average {data['load_before']} at the start, {data['load_after']} at the end.",
        f"- **Timings are noisy**: 2-4 other CPU jobs ran concurrently on this 2-core machine. Both modes of "
        f"an image ran back to back, so their ratio (paired speed-ups {s['paired_speedups']}) is steadier "
        "than the absolute times.",
        f"- σ = {data['sigma']:g}, M = {data['steps']}, central {data['crop']}² crops, official weights "
        "(DnCNN-B gray on Set12, CDnCNN-B on CBSD68), CLI defaults otherwise (SURE-chosen interpolation "
        "and checkpoint); the gain is that of the network adapt returns."
        + (f" Overrides: {data['adapt_overrides']}." if data["adapt_overrides"] else ""),
        "",
        "| set | image | pre-trained dB | fp32 gain dB | bf16 gain dB | fp32 ms/update | bf16 ms/update |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["rows"]:
        lines.append(
            f"| {r['set']} | {r['image']} | {r['pretrained_db']:.2f} | {r['fp32']['gain_db']:+.3f} | "
            f"{r['bf16']['gain_db']:+.3f} | {r['fp32']['ms_per_update']:.1f} | {r['bf16']['ms_per_update']:.1f} |"
        )
    lines += [
        f"| **mean** | | | {s['fp32']['mean_gain_db']:+.4f} | {s['bf16']['mean_gain_db']:+.4f} | "
        f"{s['fp32']['mean_ms_per_update']:.1f} | {s['bf16']['mean_ms_per_update']:.1f} |",
        "",
        f"bf16 − fp32 mean gain: {s['gain_difference_db']:+.4f} dB (criterion: within ±{TOLERANCE_DB} dB); "
        f"speed-up of the mean update time: {s['speedup']:.2f}×. "
        + ("**Passes**: `--fast auto` may pick bf16." if s["passes"] else "**Fails**: auto stays on fp32."),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=3, help="crops per set")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=25)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="bf16_cpu_quality")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated: Set12, CBSD68")
    parser.add_argument(
        "--adapt", default="", help="AdaptConfig overrides, e.g. 'select=off,interpolation=1'"
    )
    args = parser.parse_args()
    if not cpu_native_bf16():
        print("error: this CPU has no native bf16 (AVX512-BF16 or AMX): nothing to compare", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    load_before = [round(v, 2) for v in os.getloadavg()]
    rows = []
    overrides = parse_overrides(args.adapt)
    for name in args.sets.split(","):
        weights = SETS[name]
        folder = shared_path("data", "test", name)
        for index, item in enumerate(load_folder(folder, limit=args.limit)):
            pixels = center_crop(item.pixels, args.crop)
            model = create_model(
                "dncnn", weights=str(shared_path("weights", weights)), channels=pixels.shape[2]
            )
            row = {
                "set": name,
                "image": item.name,
                **score_crop(model.eval(), pixels, index, args.sigma, args.steps, overrides),
            }
            rows.append(row)
            print(f"{name} {item.name}: fp32 {row['fp32']} bf16 {row['bf16']}", file=sys.stderr)
    data = {
        "environment": environment(),
        "native_bf16": True,
        "sigma": args.sigma,
        "steps": args.steps,
        "crop": args.crop,
        "adapt_overrides": overrides,
        "load_before": load_before,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "rows": rows,
        "summary": summarise(rows),
    }
    markdown = render(data)
    write_results(args.name, data, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
