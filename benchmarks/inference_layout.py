"""One whole-image denoising pass on the CPU, in the default (NCHW) layout and in channels-last.

Times ``rfr_deploy.inference.denoise`` (what SURE's scoring, the pseudo-clean target, ``eval`` and
``rfr-deploy denoise`` run) with ``channels_last=False`` and ``True`` in interleaved rounds, per
network, image channels and size; full-size networks with random weights, freed memory kept (as the
CLI does). Also the largest difference between the two outputs.

    python benchmarks/inference_layout.py --threads 2
"""

from __future__ import annotations

import argparse

import torch
from common import environment, interleaved_ms, report, use_threads

from rfr_deploy.heap import keep_freed_memory
from rfr_deploy.inference import denoise
from rfr_deploy.models.factory import create_model

CASES = (
    "dncnn:1:256,dncnn:3:256,dncnn:3:512,ffdnet:1:256,ffdnet:3:256,fdncnn:1:256,"
    "rdn:3:256,ridnet:3:256,cbdnet:3:256,mirnet:3:128"
)
LAYOUTS = {"default": False, "channels-last": True}


def time_case(name: str, channels: int, size: int, rounds: int, repeats: int) -> dict:
    """Median ms per pass in each layout of :data:`LAYOUTS`, interleaved round by round."""
    torch.manual_seed(0)
    model = create_model(name, weights=None, channels=channels).eval()
    noisy = torch.rand(1, channels, size, size)
    sigma = 25 / 255 if model.needs_sigma else None
    outputs = {k: denoise(model, noisy, sigma=sigma, channels_last=v) for k, v in LAYOUTS.items()}  # warm-up
    calls = {
        k: lambda _, v=v: denoise(model, noisy, sigma=sigma, channels_last=v) for k, v in LAYOUTS.items()
    }
    ms = interleaved_ms(calls, rounds, repeats)
    return {
        "model": name,
        "channels": channels,
        "size": size,
        "ms": ms,
        "speed_up": round(ms["default"] / ms["channels-last"], 2),
        "max_difference": float((outputs["default"] - outputs["channels-last"]).abs().max()),
    }


def to_markdown(data: dict) -> str:
    a = data["args"]
    lines = [
        "# A whole-image denoising pass on the CPU: default layout against channels-last",
        "",
        f"- {data['environment']['device']}; torch {data['environment']['torch']}; {a['threads']} threads.",
        f"- `inference.denoise`, full-size networks with random weights, batch 1; median of {a['rounds']} "
        f"rounds of {a['calls']} passes per layout, the layouts interleaved; freed memory kept.",
        "",
        "| network | channels | size | default ms | channels-last ms | speed-up | largest difference |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in data["cases"]:
        lines.append(
            f"| {r['model']} | {r['channels']} | {r['size']}² | {r['ms']['default']} | "
            f"{r['ms']['channels-last']} | {r['speed_up']}× | {r['max_difference']:.1e} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=CASES, help="comma-separated network:channels:size")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="inference_layout_cpu")
    args = parser.parse_args()
    use_threads(args)
    keep_freed_memory()
    cases = []
    for case in filter(None, args.cases.split(",")):
        name, channels, size = case.split(":")
        cases.append(time_case(name, int(channels), int(size), args.rounds, args.calls))
        print(cases[-1], flush=True)
    data = {"args": vars(args), "environment": environment(), "cases": cases}
    report(args.name, data, to_markdown(data))


if __name__ == "__main__":
    main()
