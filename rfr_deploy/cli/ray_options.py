"""``adapt-and-export ... --ray [local|ADDRESS]``: the options that send the work to a Ray cluster."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from rfr_deploy.cli.options import emit_json
from rfr_deploy.errors import PartialFailure


def ray_options(f: Callable) -> Callable:
    f = click.option(
        "--gpus-per-image",
        type=click.FloatRange(0),
        default=None,
        help="GPUs each image's Ray task asks for; fractions share a GPU "
        "[default: 1 where the cluster has GPUs and --device is not cpu, else 0].",
    )(f)
    f = click.option(
        "--cpus-per-image",
        type=click.IntRange(1),
        default=None,
        help="CPUs (and PyTorch threads) each image's Ray task asks for [default: 1].",
    )(f)
    f = click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[local|ADDRESS]",
        help="One Ray task per image (per set with --per-set) on a local Ray instance or the cluster at "
        "ADDRESS; resumable (done images are skipped), failures isolated, OUT/summary.json. "
        "OUT must be a folder every node sees.",
    )(f)
    return f


def check_ray_options(
    ray_address: str | None, cpus_per_image: int | None, gpus_per_image: float | None, threads: int | None
) -> None:
    if ray_address is None and (cpus_per_image is not None or gpus_per_image is not None):
        raise click.UsageError("--cpus-per-image and --gpus-per-image need --ray")
    if ray_address is not None and threads is not None:
        raise click.UsageError(
            "--threads is for a run on this machine; with --ray, --cpus-per-image sets each task's threads"
        )
    if ray_address not in (None, "local", "auto") and Path(ray_address).exists():
        raise click.UsageError(f"--ray takes 'local' or a cluster address, not the path {ray_address!r}")


def run_on_ray(
    inputs, settings, config, exporters, ray_address, cpus_per_image, gpus_per_image, reporter, as_json
):
    """Run over Ray, print the summary with --json; exit status 1 when any image failed."""
    from rfr_deploy.jobs.distributed import SUMMARY, RayOptions, adapt_and_export_ray

    options = RayOptions(
        address=ray_address, cpus_per_image=cpus_per_image or 1, gpus_per_image=gpus_per_image
    )
    summary = adapt_and_export_ray(inputs, settings, config, options, reporter, exporters)
    if as_json:
        emit_json(summary)
    counts = summary["counts"]
    if counts["failed"]:
        where = Path(settings.output_dir) / SUMMARY
        raise PartialFailure(f"{counts['failed']} of {counts['total']} image(s) failed; see {where}")
