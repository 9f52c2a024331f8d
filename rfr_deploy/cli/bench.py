"""``rfr-deploy bench``: time one fine-tuning update per model and runner (eager, fast paths, paper V100)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from exporters.registry import exporter_formats
from rfr_deploy.bench.job import JobRequest
from rfr_deploy.bench.report import plot_report, write_report
from rfr_deploy.bench.run import run_bench
from rfr_deploy.bench.settings import DEFAULT_MODELS, BenchSettings
from rfr_deploy.cli.options import (
    device_option,
    emit_json,
    field_options,
    given_options,
    output_options,
    reporter_for,
    settings_from,
)
from rfr_deploy.errors import ConfigError
from rfr_deploy.files import check_output_file
from rfr_deploy.jobs.adapt_export import adapt_and_export
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.optional import import_optional

B = BenchSettings


@click.command("bench")
@click.option(
    "--models",
    default=",".join(DEFAULT_MODELS),
    show_default=True,
    help="Comma-separated model names (`rfr-deploy models` lists them).",
)
@field_options(B, "size")
@click.option(
    "--size-for",
    "sizes",
    multiple=True,
    metavar="MODEL=SIZE",
    help="Image side for one model (repeatable), e.g. --size-for mirnet=64 on CPU.",
)
@field_options(B, "steps", "repeats", "warmup")
@device_option
@field_options(B, "budget", "job", "job_steps", "job_export", "fit_budget")
@field_options(B, "compile", "unfused", "limits", "keep_memory", "threads", "seed")
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
def command(models, sizes, plot, output, as_json, quiet, **options):
    """Time one fine-tuning update per model: eager vs. the fast paths, next to the paper's V100 figures.

    GPU: eager fp32, CUDA graphs fp32, mixed precision, mixed precision + CUDA graphs.
    CPU: eager, channels-last, fused Adam in the default layout where channels-last updates are slower
    (below AVX-512), and bf16 convolutions where the CPU has native bf16. Each mode is also shown as
    GFLOP/s and as a fraction of the conv rate measured in the same run, at the size it ran. Random
    weights of each model's full-size configuration.
    """
    for path, option in ((output, "--output"), (plot, "--plot")):
        if path:
            check_output_file(path, option)
    given = given_options(click.get_current_context())
    job_only = [given[k] for k in ("job_steps", "job_export") if k in given]
    if not options["job"] and job_only:
        raise ConfigError(f"{job_only[0]} sets the adapt-and-export job, which --no-job leaves out: drop one")
    if plot:
        import_optional("matplotlib", "plot", "plot benchmark results")  # missing: say so before timing
        check_plot_format(plot)
    names = tuple(m.strip().lower() for m in models.split(",") if m.strip())
    settings = settings_from(BenchSettings, {**options, "models": names, "sizes": _parse_sizes(sizes)})
    report = run_bench(settings, reporter_for(quiet, as_json), run_job=run_adapt_and_export)
    if output:
        write_report(report, output)
    if plot:
        plot_report(report, plot)
    if as_json:
        emit_json(report.to_dict())
    else:  # --quiet silences the progress, not the result
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


def check_plot_format(path: str) -> None:
    """A :class:`ConfigError` for a ``--plot`` file whose suffix matplotlib cannot write, before any timing."""
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if Path(path).suffix.lower().lstrip(".") not in formats:
        raise ConfigError(f"--plot {path}: matplotlib writes {', '.join('.' + f for f in sorted(formats))}")


def _parse_sizes(values: tuple[str, ...]) -> dict[str, int]:
    sizes = {}
    for text in values:
        name, sep, value = text.partition("=")
        if not sep or not value.strip().isdigit():
            raise click.BadParameter(f"expected MODEL=SIZE, got {text!r}", param_hint="--size-for")
        sizes[name.strip().lower()] = int(value)
    return sizes
