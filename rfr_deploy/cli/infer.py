"""``rfr-deploy infer``: run an exported ONNX model with ONNX Runtime (no PyTorch model code)."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import click

from rfr_deploy.cli.options import (
    emit_json,
    existing_paths,
    output_options,
    reporter_for,
    sigma_from_grey_levels,
)
from rfr_deploy.devices import MAX_THREADS
from rfr_deploy.files import check_output_dir
from rfr_deploy.images import read_image, write_image
from rfr_deploy.inference import tile_core
from rfr_deploy.jobs.inputs import reads_shared_noise, warn_grey_rgb, warn_shared_noise
from rfr_deploy.jobs.outputs import check_distinct_names, drop_earlier_outputs, output_bit_depth, output_name
from rfr_deploy.units import grey_levels

INFERRED_TAG = "onnx"
"""What ``rfr-deploy infer`` adds to an input's stem: ``<stem>_onnx.png``."""


@click.command("infer")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output-dir", default="rfr_out", show_default=True, help="Where to write results.")
@click.option(
    "--sigma",
    type=float,
    default=None,
    callback=sigma_from_grey_levels,
    help="Noise level in grey levels for noise-map models (default: the level stored at export).",
)
@click.option(
    "--tile",
    type=click.IntRange(16),
    default=None,
    help="Process in tiles of this side (default: only when an image exceeds the memory budget).",
)
@click.option(
    "--overlap",
    type=click.IntRange(0),
    default=None,
    help="Tile overlap in pixels (default: half the receptive field, exact for local networks).",
)
@click.option(
    "--provider",
    type=click.Choice(["auto", "tensorrt", "cuda", "cpu"]),
    default="auto",
    show_default=True,
    help="ONNX Runtime execution provider; 'auto': the best installed (TensorRT, CUDA, CPU).",
)
@click.option(
    "--threads",
    type=click.IntRange(1, MAX_THREADS),
    default=None,
    help="CPU provider threads (default: ONNX Runtime's).",
)
@output_options
def command(model, inputs, output_dir, sigma, tile, overlap, provider, threads, as_json, quiet):
    """Denoise INPUTS (files or folders) with the exported MODEL.onnx through ONNX Runtime.

    Writes <stem>_onnx.png (or .tif for TIFF inputs) at the input's bit depth. The best installed
    execution provider is used (TensorRT, CUDA with onnxruntime-gpu, else CPU) unless --provider names one.
    """
    from exporters.onnx_runtime import OnnxDenoiser, providers_for

    reporter = reporter_for(quiet, as_json)
    runner = OnnxDenoiser(model, providers=providers_for(provider), threads=threads)
    if tile is not None:  # before the first image: a folder's later, larger images would hit it mid-run
        tile_core(tile, runner.default_overlap if overlap is None else overlap, runner.pad_multiple)
    if sigma is not None and not runner.noise_map:
        warnings.warn(f"--sigma is ignored: {Path(model).name} takes no noise level", stacklevel=1)
    out_dir = Path(output_dir)
    paths = drop_earlier_outputs(existing_paths(inputs), out_dir, INFERRED_TAG)
    check_distinct_names(((p, output_name(p, INFERRED_TAG)) for p in paths), out_dir)
    check_output_dir(out_dir)
    for path in paths:  # every input decoded and checked before the first is denoised, one at a time
        image, _ = _read_for(runner, path)
        runner.check_channels(image.channels, str(path))
        _warn_colour_network(runner, image, path.name)
    records = []
    with reporter.bar(len(paths), f"denoising {len(paths)} image(s)") as progress:
        for done, path in enumerate(paths):
            records.append(_infer_one(runner, path, out_dir, (sigma, tile, overlap), reporter, progress))
            progress(done + 1)
    if as_json:
        emit_json(records)


def _infer_one(runner, path: Path, out_dir: Path, settings, reporter, progress) -> dict:
    """Denoise ``path`` with ``settings`` (σ, tile, overlap) and write ``<stem>_onnx.png``; returns its
    record. ``progress`` shows the image, and its tiles where it is tiled."""
    sigma, tile, overlap = settings
    image, stored = _read_for(runner, path)
    progress.stage(path.name)
    started = time.perf_counter()
    on_tile = progress.tiles_of(path.name)
    clean = runner.denoise(image.pixels, sigma=sigma, tile=tile, overlap=overlap, on_tile=on_tile)
    seconds = time.perf_counter() - started
    target = out_dir / output_name(path, INFERRED_TAG)
    if stored is not None:  # a grey image stored as RGB, taken as gray: RGB again
        clean = clean.repeat(stored, axis=2)
    write_image(target, clean, bit_depth=output_bit_depth(image), extras=image.extras)
    reporter.result(f"{path.name} -> {target} ({seconds:.2f} s, {runner.providers[0]})")
    return {
        "input": str(path),
        "output": str(target),
        "model": str(runner.path),
        "providers": runner.providers,
        "sigma": grey_levels(sigma if sigma is not None else runner.default_sigma)
        if runner.noise_map
        else None,
        "tile": tile or runner.tile_for(image.height, image.width),
        "seconds": round(seconds, 4),
    }


def _warn_colour_network(runner, image, name: str) -> None:
    """Warn where a colour network leaves most of ``image``'s noise: a grey image stored as RGB, or a colour
    image whose noise its three channels share (not a JPEG's: its own model describes it)."""
    if runner.channels == 1 or runner.per_channel:
        return
    if image.grey_rgb:
        warn_grey_rgb(name, "export a gray network to denoise it as gray")
    elif image.jpeg_tables is None and reads_shared_noise(image):
        warn_shared_noise(
            name, "export the gray network run per channel (adapt-and-export --per-channel on)", 5
        )


def _read_for(runner, path: Path) -> tuple:
    """``path``'s image as ``runner``'s model takes it, and the channels to write its output with where they
    differ: a grey image stored as RGB is gray for a gray model (its output written as RGB again)."""
    image = read_image(path)
    if runner.channels == 1 and image.grey_rgb:
        return image.to_gray(), 3
    return image, None
