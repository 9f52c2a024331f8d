"""What keeping freed memory in the process (``AdaptConfig.keep_memory``, :mod:`rfr_deploy.heap`) saves.

Each case (model; runner mode, ``inference`` for one denoising pass or ``pretrain`` for the steps of
``rfr-deploy pretrain`` on the folder ``--train-data``; image or patch side) runs twice, in
fresh processes, because the setting cannot be undone: once with glibc's defaults, once with freed
memory kept. Each process runs the bench's update (random full-size network, generated RGB image,
σ = 25), ``--warmup`` updates and then ``--repeats`` rounds of ``--steps`` timed updates, counting
minor page faults over the timed ones. The two run back to back, default first, ``--pairs`` times.
``--job`` also times the README's Quick start job (``rfr-deploy adapt-and-export --sample``) both
ways, or with ``--job-clean`` a job on that image with seeded noise added.

    python benchmarks/freed_memory.py --cases dncnn:bf16:256,dncnn:bf16:512 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import environment, write_results

HERE = Path(__file__).resolve().parent
CASE_KEYS = ("ms_per_update", "faults_per_update")
JOB_KEYS = ("seconds", "faults", "peak_rss_mb")
DEFAULT_CASES = "dncnn:eager:256,dncnn:channels-last:256,dncnn:bf16:256,dncnn:bf16:512,ridnet:bf16:256"


def faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_case(args: argparse.Namespace, model: str, mode: str, size: int) -> dict:
    """One process's measurement: median ms per update (or per denoising pass, mode ``inference``) over
    rounds, minor page faults per update."""
    keep, warmup, steps, repeats = args.keep, args.warmup, args.steps, args.repeats
    if mode == "pretrain":
        return _time_pretraining(model, size, args)
    name, step = _inference(model, size, keep) if mode == "inference" else _updates(model, mode, size, keep)
    for k in range(warmup):
        step(k)
    rounds, start_faults = [], faults()
    for _ in range(repeats):
        t0 = time.perf_counter()
        for k in range(steps):
            step(k)
        rounds.append(1e3 * (time.perf_counter() - t0) / steps)
    return {
        "ms_per_update": round(statistics.median(rounds), 1),
        "faults_per_update": round((faults() - start_faults) / (steps * repeats)),
        "runner": name,
    }


def _updates(model: str, mode: str, size: int, keep: bool) -> tuple[str, Callable[[int], object]]:
    from common import update_context

    from rfr_deploy.adaptation.runners import make_runner

    runner = make_runner(update_context(model, size, keep_memory=keep), mode)
    return runner.name, lambda k: runner.step(0, k % 8, None)


def _inference(model: str, size: int, keep: bool) -> tuple[str, Callable[[int], object]]:
    """One denoising pass of a random full-size ``model`` over a ``size``² RGB image (fp32, no tiling)."""
    from rfr_deploy.heap import keep_freed_memory
    from rfr_deploy.inference import denoise
    from rfr_deploy.models.factory import create_model

    if keep:
        keep_freed_memory()
    net = create_model(model, weights=None, channels=3).eval()
    noisy = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return "denoise", lambda k: denoise(net, noisy, sigma=25 / 255)


def _time_pretraining(model: str, patch: int, args: argparse.Namespace) -> dict:
    """``rfr-deploy pretrain``'s steps (gray, its default batch, ``patch``² patches from the folder
    ``args.train_data``), timed by its progress callback: median ms per step over rounds of
    ``args.steps`` steps after ``args.warmup``, minor page faults per timed step."""
    from rfr_deploy.heap import keep_freed_memory
    from rfr_deploy.jobs import pretrain as pretraining

    keep, warmup, steps, repeats = args.keep, args.warmup, args.steps, args.repeats
    if warmup < 1 or not args.train_data:
        raise ValueError("pretrain cases need --warmup >= 1 and --train-data")
    if not keep:  # pretrain keeps freed memory on the CPU: measure it without by making that a no-op
        pretraining.keep_freed_memory = lambda: False
    else:
        keep_freed_memory()
    marks: list[tuple[float, int]] = []
    total = warmup + steps * repeats
    with tempfile.TemporaryDirectory() as tmp:
        config = pretraining.PretrainConfig(
            model=model, data=(args.train_data,), out=tmp, steps=total, patch=patch,
            device="cpu", checkpoint_every=total + 1,
        )  # fmt: skip
        pretraining.pretrain(
            config, progress=lambda step, _n, _loss: marks.append((time.perf_counter(), faults()))
        )
    ends = marks[warmup - 1 :: steps]  # the time and page faults after the warm-up and after each round
    rounds = [1e3 * (b[0] - a[0]) / steps for a, b in zip(ends, ends[1:], strict=False)]
    return {
        "ms_per_update": round(statistics.median(rounds), 1),
        "faults_per_update": round((ends[-1][1] - ends[0][1]) / (steps * repeats)),
        "runner": "pretrain",
    }


def run_child(args: argparse.Namespace, case: str, keep: bool) -> dict:
    command = [sys.executable, __file__, "--child", case, "--threads", str(args.threads)]
    command += ["--warmup", str(args.warmup), "--steps", str(args.steps), "--repeats", str(args.repeats)]
    command += ["--train-data", args.train_data] if args.train_data else []
    out = subprocess.run(command + (["--keep"] if keep else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def median_of(runs: list[dict], keys: tuple[str, ...], digits: int = 1) -> dict:
    """Median of each of ``keys`` over the processes of one kind (a case's or a job's)."""
    return {key: round(statistics.median(r[key] for r in runs), digits) for key in keys}


def time_job(keep: bool, threads: int, clean: Path | None, sigma: float) -> dict:
    """Wall time, page faults and peak memory of one adapt-and-export in a fresh process: the Quick
    start's (``--sample``), or on ``clean`` with seeded Gaussian noise of ``sigma`` grey levels."""
    command = [sys.executable, "-c", "from rfr_deploy.cli import main; main()", "adapt-and-export", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as tmp:
        if clean is None:
            command.append("--sample")
        else:
            command += [
                str(write_noisy(clean, sigma, Path(tmp) / f"{clean.stem}_noisy.png")),
                "--sigma",
                f"{sigma:g}",
            ]
        t0 = time.perf_counter()
        child = subprocess.Popen(
            command + ([] if keep else ["--no-keep-memory"]), cwd=tmp, env=env, stdout=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"the job failed (wait status {status}): {' '.join(command)}")
    return {
        "seconds": round(seconds, 1),
        "faults": usage.ru_minflt,
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
    }


def write_noisy(clean: Path, sigma: float, path: Path) -> Path:
    """``clean`` plus Gaussian noise of ``sigma`` grey levels (seed 0), as an 8-bit PNG at ``path``."""
    import numpy as np

    from rfr_deploy.images import read_image, write_image

    pixels = read_image(clean).pixels
    noise = np.random.default_rng(0).standard_normal(pixels.shape).astype(np.float32)
    return write_image(path, np.clip(pixels + sigma / 255 * noise, 0, 1))


def to_markdown(data: dict) -> str:
    a, env = data["args"], data["environment"]
    lines = [
        "# Keeping freed memory in the process: CPU updates with and without (glibc)",
        "",
        f"- {env['device']}; torch {env['torch']}; {a['threads']} threads; {env['platform']}.",
        f"- Per case (and job) {a['pairs']} pairs of fresh processes, back to back: glibc's defaults, then "
        f"freed memory kept. Each case: {a['warmup']} warm-up updates, {a['repeats']} rounds × {a['steps']} "
        "timed updates, median ms per round, minor page faults per timed update. The tables give the "
        "median over the processes of each kind, the JSON file every process.",
    ]
    if data["cases"]:
        lines += [
            "",
            "| model | mode | size | default ms | kept ms | speed-up | default faults/update | kept faults/update |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
    for r in data["cases"]:
        d, k = r["default"], r["kept"]
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['size']} | {d['ms_per_update']} | {k['ms_per_update']} | "
            f"{d['ms_per_update'] / k['ms_per_update']:.2f}x | {d['faults_per_update']:,.0f} | "
            f"{k['faults_per_update']:,.0f} |"
        )
    if data.get("job"):
        d, k = data["job"]["default"], data["job"]["kept"]
        lines += [
            "",
            f"Job (`rfr-deploy adapt-and-export {data['job']['input']}`, seeded noise added to a clean image "
            "unless --sample; whole process):",
            "",
            "| freed memory | seconds | minor page faults | peak RSS MB |",
            "|---|---:|---:|---:|",
            f"| C library's defaults | {d['seconds']} | {d['faults']:,.0f} | {d['peak_rss_mb']:.0f} |",
            f"| kept | {k['seconds']} | {k['faults']:,.0f} | {k['peak_rss_mb']:.0f} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated MODEL:MODE:SIZE")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-data", default=None, help="folder of clean images for pretrain cases")
    parser.add_argument("--pairs", type=int, default=2, help="default/kept process pairs per case")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--job", action="store_true", help="also time the Quick start job both ways")
    parser.add_argument(
        "--job-clean", type=Path, default=None, help="the job on this clean image, noise added"
    )
    parser.add_argument("--job-sigma", type=float, default=25.0, help="grey levels of the job's added noise")
    parser.add_argument("--name", default="freed_memory_cpu")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        model, mode, size = args.child.split(":")
        print(json.dumps(time_case(args, model, mode, int(size))))
        return
    cases = []
    for case in filter(None, args.cases.split(",")):
        model, mode, size = case.split(":")
        runs = {"default": [], "kept": []}
        for _ in range(args.pairs):
            runs["default"].append(run_child(args, case, False))
            runs["kept"].append(run_child(args, case, True))
            print(f"{case}: {runs['default'][-1]} -> {runs['kept'][-1]}", file=sys.stderr)
        row = {"model": model, "mode": mode, "size": int(size), "runs": runs}
        cases.append({**row, **{way: median_of(r, CASE_KEYS) for way, r in runs.items()}})
    data = {"args": vars(args), "environment": environment(), "cases": cases}
    if args.job:
        jobs: dict[str, list[dict]] = {"default": [], "kept": []}
        for _ in range(args.pairs):
            for way, runs in jobs.items():
                runs.append(time_job(way == "kept", args.threads, args.job_clean, args.job_sigma))
        where = "--sample" if args.job_clean is None else f"{args.job_clean.name} --sigma {args.job_sigma:g}"
        data["job"] = {way: median_of(runs, JOB_KEYS) for way, runs in jobs.items()}
        data["job"].update(runs=jobs, input=where)
    written = write_results(args.name, data, to_markdown(data))
    print(to_markdown(data))
    print("wrote", ", ".join(str(p) for p in written), file=sys.stderr)


if __name__ == "__main__":
    main()
