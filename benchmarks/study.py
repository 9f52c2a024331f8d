"""What makes the restore-from-restored gain appear and grow: one dataset, several adaptation settings.

Each setting is a comma-separated list of AdaptConfig overrides; every setting runs on the
same images with the same noise. Results accumulate in
``benchmarks/results/study_<dataset>_s<sigma>[_<tag>].{json,md}``.

    python benchmarks/study.py CBSD68 --weights dncnn/dncnn_color_blind.pth --sigma 25 --limit 8 --crop 192 \
        --setting "lr=1e-5" --setting "lr=1e-5,warmup=10"
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

from common import RESULTS, environment, parse_overrides, write_results

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.jobs.evaluate import EvalSettings, evaluate
from rfr_deploy.progress import Reporter
from rfr_deploy.shared import shared_path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="folder name under shared/data/test, or a path")
    parser.add_argument("--weights", required=True, help="file under shared/weights, or a path")
    parser.add_argument("--model", default="dncnn")
    parser.add_argument("--sigma", type=float, default=25)
    parser.add_argument("--sigma-mode", default="known", choices=["known", "estimate", "uniform"])
    parser.add_argument("--steps", default="0,10,20,40")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None)
    parser.add_argument("--output-ensemble", action="store_true")
    parser.add_argument(
        "--setting", action="append", required=True, help="AdaptConfig overrides, e.g. lr=2e-5,warmup=10"
    )
    parser.add_argument("--tag", default="")
    return parser.parse_args()


def run_setting(args, dataset, weights: str, steps: tuple[int, ...], text: str) -> tuple[str, dict]:
    """One row of the study: the evaluation with the overrides ``text``; its key and its report."""
    config = AdaptConfig(steps=max(steps), **parse_overrides(text))
    settings = EvalSettings(
        model=args.model,
        weights=weights,
        sigma=args.sigma / 255,
        steps=steps,
        sigma_mode=args.sigma_mode,
        crop=args.crop,
        limit=args.limit,
        output_ensemble=args.output_ensemble,
        device="cpu",
    )
    started = time.perf_counter()
    result = evaluate(dataset, settings, config, reporter=Reporter()).to_dict()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    key = f"{describe(dataclasses.asdict(config))} | sigma_mode={args.sigma_mode}" + (
        " | output_ensemble" if args.output_ensemble else ""
    )
    print(
        f"{key}: base {result['mean']['0']['psnr']:.3f} dB, gains {result['mean_gain_db']}, "
        f"worst {result['worst_gain_db']}, {result['wall_seconds']:.0f} s",
        flush=True,
    )
    return key, result


def main() -> None:
    args = parse_args()
    dataset = shared_path("data", "test", args.dataset) if "/" not in args.dataset else args.dataset
    weights = (
        str(shared_path("weights", args.weights))
        if "/" in args.weights and not args.weights.startswith("/")
        else args.weights
    )
    steps = tuple(int(s) for s in args.steps.split(","))
    name = f"study_{args.dataset.rstrip('/').split('/')[-1]}_s{args.sigma:g}" + (
        f"_{args.tag}" if args.tag else ""
    )
    path = RESULTS / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    for text in args.setting:
        key, data["runs"][key] = run_setting(args, dataset, weights, steps, text)
        data["environment"] = environment()
        data["protocol"] = {
            "dataset": str(dataset),
            "weights": weights,
            "sigma": args.sigma,
            "limit": args.limit,
            "crop": args.crop,
            "steps": steps,
            "defaults": dataclasses.asdict(AdaptConfig()),
        }
        write_results(name, data, _markdown(name, data))


# The paper's setting; each row of a study is labelled by how it differs from this. Runs recorded
# before a field existed ran with the paper's value of it.
PAPER = {
    "lr": 1e-5,
    "loss": "mse",
    "batch": 1,
    "patch": None,
    "schedule": "constant",
    "warmup": 0,
    "target_ensemble": False,
    "refresh_every": 0,
    "ema": 0.0,
    "interpolation": 1.0,
    "optimizer": "adam",
    "select": "off",
}


def describe(adapt: dict) -> str:
    """'lr=1e-05,warmup=10,interpolation=0.5': the settings of a run that differ from the paper's."""
    given = {key: adapt.get(key, value) for key, value in PAPER.items()}
    changed = [
        f"{key}={'auto' if v is None else format(v, 'g') if isinstance(v, float) else v}"
        for key, v in given.items()
        if v != PAPER[key]
    ]
    return ",".join(changed) or "paper (lr=1e-05)"


def _markdown(name: str, data: dict) -> str:
    p = data["protocol"]
    lines = [
        f"# {name}",
        "",
        f"Dataset `{p['dataset']}`, weights `{p['weights']}`, σ = {p['sigma']:g}, "
        f"first {p['limit'] or 'all'} images, central crop {p['crop'] or 'none'}; "
        f"environment: {data['environment']['device']}, torch {data['environment']['torch']}.",
        "",
        "Mean PSNR gain over the pre-trained output (dB), worst single image in brackets. Each row lists "
        "the settings that differ from the paper's (Adam lr 1e-5 constant, MSE, one noise sample per "
        "step, no warm-up, last weights).",
        "",
        "| setting | pre-trained dB | " + " | ".join(f"M={m}" for m in p["steps"] if m) + " | wall s |",
        "|---" * (len([m for m in p["steps"] if m]) + 3) + "|",
    ]
    for key, run in data["runs"].items():
        cells = " | ".join(
            f"{run['mean_gain_db'][str(m)]:+.3f} ({run['worst_gain_db'][str(m)]:+.3f})"
            for m in p["steps"]
            if m
        )
        mode = key.partition(" | ")[2]  # sigma mode and output ensemble
        label = f"{describe(run['adapt'])} | {mode}" if mode else describe(run["adapt"])
        lines.append(
            f"| `{label}` | {run['mean']['0']['psnr']:.3f} | {cells} | {run.get('wall_seconds', 0):.0f} |"
        )
    best = max(data["runs"].values(), key=lambda run: statistics.fmean(run["mean_gain_db"].values()))
    lines += ["", f"Best mean gain over the listed M: `{describe(best['adapt'])}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
