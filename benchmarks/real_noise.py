"""Tables 4/5 of the paper: real camera noise (Nam et al. CBDNet crops, SIDD samples).

For each network given with ``--model NAME=WEIGHTS``, every noisy photograph of the sets is
denoised by the pre-trained network (M = 0) and after M restore-from-restored updates with
CBDNet's in-camera noise model (``--noise camera``), scored against the ground truth
(PSNR/SSIM on 8-bit outputs). The camera model uses the 201 measured response curves of
``shared/data/noise/CBDNet_CRF`` (``$RFR_CRF_DATA`` when set). Results go to
``benchmarks/results/real_noise_<NAME><suffix>.{md,json}``.

    python benchmarks/real_noise.py --model dncnn=../shared/weights/dncnn/dncnn_color_blind.pth
    python benchmarks/real_noise.py --model ridnet=runs/ridnet_c3/final.safetensors --steps 0,10,20,40
    python benchmarks/real_noise.py --model dncnn=... --limit 2 --crop 96 --steps 0,2 --suffix _smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from common import environment, parse_overrides, write_results

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.files import sha256_file
from rfr_deploy.jobs.evaluate import EvalSettings, evaluate
from rfr_deploy.noise.camera import ENV_VAR, CameraResponses
from rfr_deploy.progress import Reporter
from rfr_deploy.shared import shared_available, shared_path, shared_root

DATASETS = ("Nam_CBDNet25", "SIDD_samples")


def parse_model(text: str) -> tuple[str, str]:
    name, sep, weights = text.partition("=")
    if not sep or not name or not weights:
        raise argparse.ArgumentTypeError(f"expected NAME=WEIGHTS, got {text!r}")
    if not Path(weights).is_file():
        raise argparse.ArgumentTypeError(f"{weights}: weights file not found")
    return name, weights


def run_model(name: str, weights: str, args, config: AdaptConfig, steps: tuple[int, ...]) -> dict:
    started = time.perf_counter()
    reports = []
    for dataset in args.datasets.split(","):
        settings = EvalSettings(
            model=name,
            weights=weights,
            steps=steps,
            noise="camera",
            sigma_mode="estimate" if args.camera_level == "estimate" else "uniform",
            pairs=True,
            crop=args.crop,
            limit=args.limit,
            seed=args.seed,
            device=args.device,
            output_ensemble=args.output_ensemble,
        )
        t = time.perf_counter()
        report = evaluate(shared_path("data", "real", dataset), settings, config, reporter=Reporter())
        data = report.to_dict()
        data["name"] = dataset
        data["wall_seconds"] = round(time.perf_counter() - t, 1)
        data["markdown"] = report.to_markdown()
        reports.append(data)
        print(f"{name} {dataset}: {data['mean']} gains {data['mean_gain_db']}", flush=True)
    return {
        "title": f"Real noise (Tables 4/5 protocol): {name}",
        "model": name,
        "weights": str(weights),
        "weights_sha256": sha256_file(weights),
        "steps": list(steps),
        "limit": args.limit,
        "crop": args.crop,
        "seed": args.seed,
        "camera_responses": repr(CameraResponses.default()),
        "camera_level": args.camera_level,
        "adapt": dataclasses.asdict(config),
        "environment": environment(),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "datasets": reports,
    }


def markdown(payload: dict) -> str:
    env = payload["environment"]
    lines = [
        f"# {payload['title']}",
        "",
        f"Weights `{payload['weights']}` (sha256 {payload['weights_sha256'][:16]}…); images: "
        f"{payload['limit'] or 'all'} per set; crop: {payload['crop'] or 'whole images'}; seed {payload['seed']}.",
        f"Camera noise model: {payload['camera_responses']}; noise level: "
        + (
            "estimated on each photograph."
            if payload.get("camera_level") == "estimate"
            else "random (CBDNet's training range)."
        ),
        "Adaptation: " + ", ".join(f"{k}={v}" for k, v in payload["adapt"].items() if k != "steps") + ".",
        f"Device {env['device']}; torch {env['torch']}; rfr-deploy {env['rfr_deploy']}; {env['date']}; "
        f"wall time {payload['wall_seconds']:.0f} s.",
        "",
        "PSNR (dB) / SSIM of the pre-trained network (M=0) and after M updates.",
    ]
    for data in payload["datasets"]:
        lines += ["", f"## {data['name']} ({len(data['images'])} images, {data['wall_seconds']:.0f} s)", ""]
        lines.append(data["markdown"])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=parse_model, action="append", required=True, help="NAME=WEIGHTS")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--steps", default="0,10,20,40")
    parser.add_argument("--limit", type=int, default=None, help="first N pairs of each set")
    parser.add_argument("--crop", type=int, default=None, help="central crop side (default: whole images)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output-ensemble", action="store_true")
    parser.add_argument(
        "--camera-level",
        choices=("estimate", "random"),
        default="estimate",
        help="camera noise at the level estimated on each photograph, or CBDNet's random training levels",
    )
    parser.add_argument("--adapt", default="", help="AdaptConfig overrides, e.g. 'lr=2e-5,batch=2'")
    parser.add_argument("--suffix", default="", help="appended to the results file names (e.g. _smoke)")
    args = parser.parse_args()
    if not shared_available():
        parser.error(f"the real-noise pairs live in the shared data, not found at {shared_root()}")
    os.environ.setdefault(ENV_VAR, str(shared_path("data", "noise", "CBDNet_CRF")))
    steps = tuple(sorted({int(s) for s in args.steps.split(",")} | {0}))
    config = AdaptConfig(**parse_overrides(args.adapt))
    for name, weights in args.model:
        payload = run_model(name, weights, args, dataclasses.replace(config, steps=max(steps)), steps)
        json_path, md_path = write_results(f"real_noise_{name}{args.suffix}", payload, markdown(payload))
        print(f"wrote {md_path} and {json_path}")


if __name__ == "__main__":
    main()
