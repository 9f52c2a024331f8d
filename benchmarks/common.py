"""Helpers shared by the benchmark scripts: environment record and results files."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    """:func:`rfr_deploy.devices.describe_environment` of the default device, with numpy's version."""
    import numpy

    from rfr_deploy.devices import describe_environment, resolve_device

    return {**describe_environment(resolve_device("auto")), "numpy": numpy.__version__}


def write_results(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    from rfr_deploy.files import atomic_write

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    with atomic_write(json_path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with atomic_write(md_path) as tmp:
        tmp.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def report(name: str, data: dict[str, Any], markdown: str) -> None:
    """Write the results files (:func:`write_results`), then print ``markdown`` and where they went."""
    written = write_results(name, data, markdown)
    print(markdown)
    print("wrote", ", ".join(str(p) for p in written))


SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
"""Pillow's JPEG ``subsampling`` values, and the chroma layouts they write."""


def add_subsampling_argument(parser) -> None:
    """``--subsampling`` (a key of :data:`SUBSAMPLING`, default 4:2:0) for the scripts that write JPEGs."""
    parser.add_argument(
        "--subsampling",
        type=int,
        choices=tuple(SUBSAMPLING),
        default=2,
        help="Pillow's: 0 4:4:4, 1 4:2:2, 2 4:2:0",
    )


def add_central_crop_arguments(parser) -> None:
    """``--datasets``, ``--limit`` and ``--crop``: the central crops :func:`central_crops` yields."""
    parser.add_argument("--datasets", default="Kodak24,CBSD68,McMaster")
    parser.add_argument("--limit", type=int, default=4, help="images per set")
    parser.add_argument("--skip", type=int, default=0, help="leave out the first N images of each set")
    parser.add_argument("--crop", type=int, default=128)


def central_crops(args, channels: int = 3):
    """(set, image name, central ``args.crop``² crop as H×W×C float32 in [0, 1]) of ``args.limit`` images of
    each of ``args.datasets`` in the shared test data, after the first ``args.skip`` (where given)."""
    import numpy as np

    from rfr_deploy.datasets import load_folder
    from rfr_deploy.shared import shared_path

    c, skip = args.crop, getattr(args, "skip", 0)
    for name in args.datasets.split(","):
        images = load_folder(shared_path("data", "test", name), channels=channels, limit=skip + args.limit)
        for image in images[skip:]:
            h, w = image.pixels.shape[:2]
            clean = image.pixels[h // 2 - c // 2 : h // 2 + c // 2, w // 2 - c // 2 : w // 2 + c // 2]
            yield name, image.name, np.ascontiguousarray(clean, dtype=np.float32)


def use_threads(args) -> None:
    """Set torch's CPU threads to ``args.threads`` where given, and record the number in use there."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()


def interleaved_ms(
    calls: Mapping[str, Callable[[int], object]], rounds: int, repeats: int
) -> dict[str, float]:
    """Median ms per call of each of ``calls`` (called with the repeat's index) over ``rounds`` rounds of
    ``repeats`` calls, the callables interleaved round by round so that drift in the machine's speed
    falls on all of them alike."""
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            for k in range(repeats):
                call(k)
            times[key].append(1e3 * (time.perf_counter() - start) / repeats)
    return {key: round(statistics.median(v), 2) for key, v in times.items()}


def update_context(model_name: str, size: int, channels: int = 3, **config):
    """The bench's update: a random full-size ``model_name`` (seed 0), the first ``channels`` channels of
    one generated ``size``² image, σ = 25; ``config`` overrides :class:`AdaptConfig` fields (by default
    1000 steps, seed 0, no fp32 tail: bf16 modes in bf16 throughout)."""
    import torch

    from rfr_deploy.adaptation.config import AdaptConfig
    from rfr_deploy.adaptation.update import UpdateContext
    from rfr_deploy.bench.run import synthetic_image
    from rfr_deploy.models.factory import create_model
    from rfr_deploy.noise.gaussian import GaussianNoise

    torch.manual_seed(0)
    model = create_model(model_name, weights=None, channels=channels).train()
    clean, _ = synthetic_image(size, seed=0)
    target = torch.from_numpy(clean).permute(2, 0, 1)[None, :channels].contiguous()
    settings = AdaptConfig(**{"steps": 1000, "seed": 0, "fp32_tail": 0, **config})
    return UpdateContext(model, [target], GaussianNoise(25 / 255), settings, torch.Generator().manual_seed(0))


def time_updates(
    runners: Mapping[str, Any],
    rounds: int,
    updates: int,
    extra: Mapping[str, Callable[[int], object]] | None = None,
) -> dict[str, float]:
    """Median ms per update of each of ``runners`` (step runners, three warm-up updates each), and per call
    of each of ``extra``, all interleaved round by round (:func:`interleaved_ms`)."""
    for runner in runners.values():
        for k in range(3):
            runner.step(0, k, None)
    calls = {key: lambda k, r=runner: r.step(0, k % 8, None) for key, runner in runners.items()}
    return interleaved_ms({**calls, **(extra or {})}, rounds, updates)


def add_case_arguments(parser, rounds: int, name: str) -> None:
    """The arguments of the interleaved update timings: ``--cases`` (channels:size, comma-separated),
    ``--rounds``, ``--updates`` per round, ``--threads`` and the results' ``--name``."""
    parser.add_argument("--cases", default="1:64,3:64,3:256", help="comma-separated channels:size")
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--updates", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default=name)


def time_cases(args, time_case: Callable[[int, int, int, int], dict]) -> list[dict]:
    """``time_case(channels, size, rounds, updates)`` for each of ``args.cases``, each printed as it lands."""
    cases = []
    for case in filter(None, args.cases.split(",")):
        channels, size = (int(v) for v in case.split(":"))
        cases.append(time_case(channels, size, args.rounds, args.updates))
        print(cases[-1], flush=True)
    return cases


def parse_overrides(text: str) -> dict[str, Any]:
    """'lr=2e-5,warmup=10,schedule=cosine' → typed keyword arguments for AdaptConfig."""
    out: dict[str, Any] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                try:
                    out[key] = float(value)
                except ValueError:
                    out[key] = value
    return out


def add_crop_arguments(parser, steps: int) -> None:
    """The arguments of the crop sweeps: a test set, official DnCNN weights, σ, crop side, images, M."""
    parser.add_argument("dataset", help="folder name under shared/data/test")
    parser.add_argument("--weights", required=True, help="DnCNN weights file under shared/weights")
    parser.add_argument("--sigma", type=float, default=25)
    parser.add_argument("--crop", type=int, default=128, help="side of the central crop; 0: whole images")
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--steps", type=int, default=steps)


def add_real_arguments(parser, crop: int) -> None:
    """The arguments of the real-noise studies: a network for camera noise, its weights, the sets of pairs
    under shared/data/real, the crop side, CPU threads."""
    parser.add_argument("--model", default="cbdnet")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--datasets", default="Nam_CBDNet25,SIDD_samples")
    parser.add_argument("--crop", type=int, default=crop)
    parser.add_argument("--threads", type=int, default=1)


def crops_with_networks(args, model: str = "dncnn"):
    """(index, name, pixels of the central crop, pre-trained ``model`` in eval mode) for each image of
    ``args.dataset`` (see :func:`add_crop_arguments`); a fresh network per image."""
    from rfr_deploy.datasets import load_folder
    from rfr_deploy.jobs.evaluate import center_crop
    from rfr_deploy.models.factory import create_model
    from rfr_deploy.shared import shared_path

    weights = str(shared_path("weights", args.weights))
    for index, item in enumerate(load_folder(shared_path("data", "test", args.dataset), limit=args.limit)):
        pixels = center_crop(item.pixels, args.crop or None)
        yield (
            index,
            item.name,
            pixels,
            create_model(model, weights=weights, channels=pixels.shape[2]).eval(),
        )


def crop_words(crop: int) -> tuple[str, str]:
    """(tag for file names, words for the table header) of a ``--crop`` value (0: whole images)."""
    return (f"crop{crop}", f"central {crop}² crops") if crop else ("whole", "whole images")


def run_json_job(command: list[str]) -> dict[str, Any]:
    """The first record of ``command``'s ``--json`` output (an ``rfr-deploy`` job), run in a fresh
    process, with the process's peak resident memory added (``peak_rss_mb``, from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as stdout:
        job = subprocess.Popen(command, stdout=stdout)
        _, status, usage = os.wait4(job.pid, 0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{' '.join(command[:3])}: exited with {os.waitstatus_to_exitcode(status)}")
        stdout.seek(0)
        manifest = json.loads(stdout.read())[0]
    manifest["peak_rss_mb"] = usage.ru_maxrss / 1024
    return manifest


def adapt_command(noisy, reference) -> list[str]:
    """The start of an ``rfr-deploy adapt-and-export`` of ``noisy`` scored against ``reference``, run by this
    interpreter (:func:`run_json_job` runs it)."""
    import sys

    return [
        sys.executable,
        "-m",
        "rfr_deploy.cli",
        "adapt-and-export",
        str(noisy),
        "--reference",
        str(reference),
    ]


def job_outcome(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a job's manifest (run with ``--reference``) says it gained and chose."""
    scores, adaptation = manifest["scores"], manifest["adaptation"]
    return {
        "pretrained_psnr": scores["pretrained"]["psnr"],
        "adapted_psnr": scores["adapted"]["psnr"],
        "gain_db": scores["adapted"]["psnr"] - scores["pretrained"]["psnr"],
        "interpolation": adaptation["interpolation"],
        "selected_by": adaptation["selected_by"],
        "patch_used": adaptation.get("patch_used"),
        "peak_rss_mb": manifest.get("peak_rss_mb"),
    }
