"""``rfr-deploy bench``: time one fine-tuning update per model and runner (eager, fast paths, paper V100)."""

from __future__ import annotations

from typing import Any

import click

from exporters.registry import exporter_formats
from rfr_deploy.bench.job import JobRequest
from rfr_deploy.bench.report import plot_report, write_report
from rfr_deploy.bench.run import run_bench
from rfr_deploy.bench.settings import DEFAULT_MODELS, BenchSettings
from rfr_deploy.cli.options import default_of, device_option, emit_json, output_options, reporter_for
from rfr_deploy.jobs.adapt_export import adapt_and_export
from rfr_deploy.jobs.settings import JobSettings

B = BenchSettings


@click.command("bench")
@click.option(
    "--models",
    default=",".join(DEFAULT_MODELS),
    show_default=True,
    help="Comma-separated model names; unregistered names are listed as missing.",
)
@click.option("--size", type=click.IntRange(16), default=default_of(B, "size"), show_default=True)
@click.option(
    "--size-for",
    "sizes",
    multiple=True,
    metavar="MODEL=SIZE",
    help="Image side for one model (repeatable), e.g. --size-for mirnet=64 on CPU.",
)
@click.option(
    "--steps",
    type=click.IntRange(1),
    default=default_of(B, "steps"),
    show_default=True,
    help="Timed updates per repeat and mode.",
)
@click.option("--repeats", type=click.IntRange(1), default=default_of(B, "repeats"), show_default=True)
@click.option("--warmup", type=click.IntRange(0), default=default_of(B, "warmup"), show_default=True)
@device_option
@click.option(
    "--budget",
    type=click.FloatRange(min=1.0),
    default=default_of(B, "budget"),
    show_default=True,
    help="Seconds per model, shared by its modes and the adapt-and-export job.",
)
@click.option(
    "--job/--no-job",
    default=default_of(B, "job"),
    show_default=True,
    help="Also time a whole adapt-and-export of one generated image.",
)
@click.option("--job-steps", type=click.IntRange(1), default=default_of(B, "job_steps"), show_default=True)
@click.option(
    "--job-export/--no-job-export",
    default=default_of(B, "job_export"),
    show_default=True,
    help="Include the verified ONNX export in the job (where onnx is installed).",
)
@click.option(
    "--fit-budget/--no-fit-budget",
    default=default_of(B, "fit_budget"),
    show_default=True,
    help="On CPU, shrink a model's image when its updates would not fit the budget.",
)
@click.option(
    "--compile", "compile_", is_flag=True, help="Also time torch.compile on CPU (compiling takes long)."
)
@click.option(
    "--limits/--no-limits",
    default=default_of(B, "limits"),
    show_default=True,
    help="Measure the device's conv rates (and CUDA copy bandwidth) and count FLOPs per update.",
)
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: torch's).")
@click.option("--seed", type=int, default=default_of(B, "seed"), show_default=True)
@click.option(
    "--plot", type=click.Path(dir_okay=False), default=None, help="Bar chart PNG (needs matplotlib)."
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the results: JSON for a .json name, else markdown.",
)
@output_options
def command(
    models,
    size,
    sizes,
    steps,
    repeats,
    warmup,
    device,
    budget,
    job,
    job_steps,
    job_export,
    fit_budget,
    compile_,
    limits,
    threads,
    seed,
    plot,
    output,
    as_json,
    quiet,
):
    """Time one fine-tuning update per model: eager vs. the fast paths, next to the paper's V100 figures.

    GPU: eager fp32, CUDA graphs fp32, mixed precision, mixed precision + CUDA graphs.
    CPU: eager, channels-last, and bf16 convolutions where the CPU has native bf16. Each mode is
    also shown as GFLOP/s and as a fraction of the conv rate measured in the same run. Random weights of each model's full-size configuration.
    """
    settings = BenchSettings(
        models=tuple(m.strip().lower() for m in models.split(",") if m.strip()),
        size=size,
        sizes=_parse_sizes(sizes),
        steps=steps,
        repeats=repeats,
        warmup=warmup,
        device=device,
        budget=budget,
        job=job,
        job_steps=job_steps,
        job_export=job_export,
        fit_budget=fit_budget,
        compile=compile_,
        limits=limits,
        threads=threads,
        seed=seed,
    )
    report = run_bench(settings, reporter_for(quiet, as_json), run_job=run_adapt_and_export)
    if output:
        write_report(report, output)
    if plot:
        plot_report(report, plot)
    if as_json:
        emit_json(report.to_dict())
    elif not quiet:
        click.echo(report.to_markdown(), nl=False)


def run_adapt_and_export(request: JobRequest) -> dict[str, Any]:
    """The bench's whole job: adapt-and-export of its generated image; the manifest."""
    job = JobSettings(
        model=request.model,
        weights=str(request.weights),
        sigma=request.sigma,
        device=request.device.type,
        output_dir=str(request.output_dir),
    )
    formats = exporter_formats()
    exports = [formats[name]() for name in request.formats]
    return adapt_and_export([request.image], job, request.config, exporters=exports)[0]


def _parse_sizes(values: tuple[str, ...]) -> dict[str, int]:
    sizes = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not value.strip().isdigit():
            raise click.BadParameter(f"expected MODEL=SIZE, got {text!r}", param_hint="--size-for")
        sizes[name.strip().lower()] = int(value)
    return sizes
