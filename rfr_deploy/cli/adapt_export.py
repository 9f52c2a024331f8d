"""``rfr-deploy adapt-and-export``: the main job."""

from __future__ import annotations

import click

from rfr_deploy.adaptation.config import CAMERA_STEPS, CUDA_GAUSSIAN_STEPS, GAUSSIAN_STEPS, AdaptConfig
from rfr_deploy.cli.adapt_options import adapt_config, adapt_options
from rfr_deploy.cli.options import (
    default_of,
    device_option,
    emit_json,
    existing_paths,
    grey_default_of,
    model_options,
    output_options,
    parse_formats,
    reporter_for,
    sigma_from_grey_levels,
)
from rfr_deploy.cli.ray_options import check_ray_options, ray_options, run_on_ray
from rfr_deploy.jobs.adapt_export import JobSettings, adapt_and_export
from rfr_deploy.jobs.reference import sample_paths
from rfr_deploy.noise.build import list_noise_choices

A, J = AdaptConfig, JobSettings


@click.command("adapt-and-export")
@click.argument("inputs", nargs=-1)
@click.option(
    "--sample", is_flag=True, help="Run on the bundled sample image (scored against its clean reference)."
)
@click.option(
    "--reference",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Clean image to score the noisy, pre-trained and adapted results against (one input only).",
)
@model_options
@click.option(
    "--noise",
    type=click.Choice(list_noise_choices()),
    default=default_of(J, "noise"),
    show_default=True,
    help="Synthetic noise model: Gaussian, or CBDNet's in-camera model for real photographs; "
    "'auto' uses what the weights were trained on.",
)
@click.option(
    "--sigma",
    type=float,
    default=None,
    callback=sigma_from_grey_levels,
    help="Known noise level in grey levels (0-255). Omit when unknown.",
)
@click.option(
    "--unknown-sigma",
    type=click.Choice(["estimate", "uniform"]),
    default=default_of(J, "unknown_sigma"),
    show_default=True,
    help="Without --sigma: adapt at the estimated level, or with σ uniform in [low, high] "
    "(camera noise: CBDNet's random training levels).",
)
@click.option(
    "--noise-quantization",
    type=click.Choice(["auto", "off"]),
    default=default_of(J, "noise_quantization"),
    show_default=True,
    help="'auto' clips and rounds the synthetic noisy images like the (8/16-bit) input file.",
)
@click.option(
    "--sigma-low",
    type=float,
    default=grey_default_of(J, "sigma_low"),
    show_default=True,
    callback=sigma_from_grey_levels,
)
@click.option(
    "--sigma-high",
    type=float,
    default=grey_default_of(J, "sigma_high"),
    show_default=True,
    callback=sigma_from_grey_levels,
)
@click.option(
    "--steps",
    type=click.IntRange(0),
    default=default_of(A, "steps"),
    help=f"Number of fine-tuning updates M [default: {GAUSSIAN_STEPS} for Gaussian noise "
    f"({CUDA_GAUSSIAN_STEPS} on CUDA), {CAMERA_STEPS} for camera noise].",
)
@click.option(
    "--output-ensemble/--no-output-ensemble",
    default=default_of(J, "output_ensemble"),
    show_default=True,
    help="×8 self-ensemble for the written output (exported graphs compute it too).",
)
@click.option("--seed", type=int, default=default_of(A, "seed"), show_default=True)
@adapt_options
@device_option
@click.option(
    "--format",
    "formats",
    default="none",
    show_default=True,
    help="Comma-separated exports besides the weights: onnx, engine (TensorRT).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16"]),
    default=default_of(J, "precision"),
    show_default=True,
    help="Precision of the exported model.",
)
@click.option("--opset", "onnx_opset", type=int, default=default_of(J, "onnx_opset"), show_default=True)
@click.option(
    "--engine-from",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Refit this TensorRT engine with the adapted weights instead of building a new one.",
)
@click.option(
    "--engine-min-size",
    default=None,
    help="Smallest HxW the TensorRT engine accepts (default: from the inputs).",
)
@click.option(
    "--engine-max-size", default=None, help="Largest HxW the TensorRT engine accepts, e.g. 2048x2048."
)
@click.option(
    "--timing-cache", type=click.Path(dir_okay=False), default=None, help="TensorRT timing cache file."
)
@click.option("--per-set", is_flag=True, help="Adapt one network on all inputs together and export it once.")
@click.option("-o", "--output-dir", default=default_of(J, "output_dir"), show_default=True)
@ray_options
@output_options
def command(
    inputs,
    sample,
    reference,
    model,
    weights,
    noise,
    sigma,
    unknown_sigma,
    noise_quantization,
    sigma_low,
    sigma_high,
    steps,
    output_ensemble,
    seed,
    device,
    formats,
    precision,
    onnx_opset,
    engine_from,
    engine_min_size,
    engine_max_size,
    timing_cache,
    per_set,
    output_dir,
    ray_address,
    cpus_per_image,
    gpus_per_image,
    as_json,
    quiet,
    **adapt,
):
    """Adapt the pre-trained network to each of INPUTS (files or folders) and export the result.

    Writes <stem>_rfr.png (adapted output), <stem>_rfr.safetensors (adapted weights), the requested
    exports and <stem>.json, a manifest of every file with its sha256, the settings and the timings.
    """
    if sample:
        if inputs:
            raise click.UsageError("give either INPUTS or --sample, not both")
        noisy, clean = sample_paths()
        inputs, reference = (str(noisy),), reference or str(clean)
    elif not inputs:
        raise click.UsageError(
            "give one or more INPUTS (files or folders), or --sample for the bundled demo image"
        )
    check_ray_options(ray_address, cpus_per_image, gpus_per_image)
    config = adapt_config(steps, seed, adapt)
    settings = JobSettings(
        model=model,
        weights=weights,
        noise=noise,
        sigma=sigma,
        unknown_sigma=unknown_sigma,
        noise_quantization=noise_quantization,
        sigma_low=sigma_low,
        sigma_high=sigma_high,
        device=device,
        output_dir=output_dir,
        formats=parse_formats(formats),
        per_set=per_set,
        output_ensemble=output_ensemble,
        engine_from=engine_from,
        engine_min_size=engine_min_size,
        engine_max_size=engine_max_size,
        timing_cache=timing_cache,
        onnx_opset=onnx_opset,
        precision=precision,
        reference=reference,
    )
    if ray_address is not None:
        reporter = reporter_for(quiet, as_json)
        run_on_ray(
            existing_paths(inputs),
            settings,
            config,
            ray_address,
            cpus_per_image,
            gpus_per_image,
            reporter,
            as_json,
        )
        return
    manifests = adapt_and_export(
        existing_paths(inputs), settings, config, reporter=reporter_for(quiet, as_json)
    )
    if as_json:
        emit_json(manifests)
