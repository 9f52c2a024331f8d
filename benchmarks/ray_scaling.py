"""Images per minute of ``adapt-and-export --ray`` against the number of Ray workers (and the sequential run).

* N small gray images (smooth structure + Gaussian noise σ = 25, seed 0, 8-bit), written to a
  temporary folder;
* the packaged gray DnCNN, M updates per image, one PyTorch thread per image (``--cpus-per-image 1``);
* for each worker count W: a fresh local Ray instance with ``num_cpus=W`` (started before the clock
  runs), one run into an empty folder; the time counts the workers' start (Python, PyTorch, the
  network) and every image, as a user's run would;
* the sequential run in this process (one thread) for reference.

    python benchmarks/ray_scaling.py              # writes benchmarks/results/ray_scaling.{md,json}
    python benchmarks/ray_scaling.py --images 16 --size 64 --steps 20 --workers 1,2,4

Wall-clock numbers on a shared machine are indicative only: the results file records the load
average before and after each measurement.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, write_results

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.images import write_image
from rfr_deploy.jobs.adapt_export import adapt_and_export
from rfr_deploy.jobs.distributed import RayOptions, adapt_and_export_ray
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.progress import QUIET


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    paths = []
    for i in range(count):
        clean = 0.5 + 0.3 * np.sin(x / (2 + i % 4)) * np.cos(y / (3 + i % 3))
        noisy = clean + 25 / 255 * rng.standard_normal(clean.shape)
        paths.append(
            write_image(folder / f"img{i:03d}.png", np.clip(noisy, 0, 1)[..., None].astype(np.float32))
        )
    return paths


def measure_ray(paths, workers: int, steps: int, root: Path) -> dict:
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        load = os.getloadavg()[0]
        settings = JobSettings(sigma=25 / 255, output_dir=str(root / f"ray{workers}"))
        started = time.perf_counter()
        summary = adapt_and_export_ray(paths, settings, AdaptConfig(steps=steps), RayOptions(), QUIET)
        seconds = time.perf_counter() - started
    finally:
        ray.shutdown()
    tasks = [r["seconds"] for r in summary["images"]]
    return {
        "workers": workers,
        "done": summary["counts"]["done"],
        "seconds": round(seconds, 2),
        "images_per_minute": round(len(paths) / seconds * 60, 2),
        "task_median_s": round(statistics.median(tasks), 3),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def measure_sequential(paths, steps: int, root: Path) -> dict:
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    settings = JobSettings(sigma=25 / 255, output_dir=str(root / "sequential"))
    started = time.perf_counter()
    manifests = adapt_and_export(paths, settings, AdaptConfig(steps=steps))
    seconds = time.perf_counter() - started
    return {
        "workers": "sequential",
        "done": len(manifests),
        "seconds": round(seconds, 2),
        "images_per_minute": round(len(paths) / seconds * 60, 2),
        "task_median_s": round(statistics.median(m["timings"]["total_s"] for m in manifests), 3),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def report(rows: list[dict], args, env: dict) -> str:
    lines = [
        "# adapt-and-export --ray: images per minute vs. Ray workers",
        "",
        f"{args.images} gray images {args.size}×{args.size} (σ = 25), packaged DnCNN, M = {args.steps}, "
        f"one thread per image; {env['device']}, {os.cpu_count()} cores, torch {env['torch']}, {env['date']}.",
        "",
        "This machine's 2 cores are shared with other engineers' CPU jobs running at the same time "
        "(load average columns): the figures are indicative, not a clean scaling curve.",
        "",
        "| workers | images | wall s | images/min | median task s | load before | load after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['done']} | {r['seconds']} | {r['images_per_minute']} | "
            f"{r['task_median_s']} | {r['load_before']} | {r['load_after']} |"
        )
    lines += ["", f"Command: `python benchmarks/ray_scaling.py {' '.join(sys.argv[1:])}`".rstrip()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--name", default="ray_scaling")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = make_images(root / "in", args.images, args.size)
        rows = [measure_ray(paths, int(w), args.steps, root) for w in args.workers.split(",")]
        rows.append(measure_sequential(paths, args.steps, root))
    env = environment()
    markdown = report(rows, args, env)
    json_path, _ = write_results(args.name, {"args": vars(args), "environment": env, "rows": rows}, markdown)
    print(markdown)
    print(f"wrote {json_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
