"""Options shared by several sub-commands, and output helpers."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import click

from rfr_deploy.models.hub import model_for_weights
from rfr_deploy.noise.base import grey_levels, sigma_from_grey
from rfr_deploy.progress import Reporter


def model_options(f: Callable) -> Callable:
    """--model and --weights; without --model, named weights bring their architecture."""

    command = f

    @functools.wraps(command)
    def with_model(**kwargs):
        kwargs["model"] = model_for_weights(kwargs["model"], kwargs["weights"])
        return command(**kwargs)

    f = click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="Official weights by name (e.g. kair:dncnn_color_blind, downloaded once; see `rfr-deploy "
        "models`) or a weights file (.safetensors, KAIR .pth, MatConvNet .mat). Default: the packaged weights.",
    )(with_model)
    f = click.option(
        "--model",
        default=None,
        help="Model name from `rfr-deploy models` [default: the architecture of named --weights, else dncnn].",
    )(f)
    return f


def device_option(f: Callable) -> Callable:
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default="auto",
        show_default=True,
        help="Where to run: CUDA when available with 'auto'.",
    )(f)


def output_options(f: Callable) -> Callable:
    f = click.option("--quiet", "-q", is_flag=True, help="No progress bars or notes.")(f)
    f = click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON document on stdout (implies --quiet)."
    )(f)
    return f


def reporter_for(quiet: bool, as_json: bool) -> Reporter:
    return Reporter(quiet=quiet or as_json, results=not as_json)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=name) from exc
    if not values or any(v < 0 for v in values):
        raise click.BadParameter("expected non-negative integers", param_hint=name)
    return sorted(set(values))


def existing_paths(values: tuple[str, ...]) -> list[Path]:
    from rfr_deploy.images import list_images

    return list_images(list(values))


def default_of(cls, name: str):
    """The default of dataclass field ``name``, so CLI defaults never drift from the library's."""
    return cls.__dataclass_fields__[name].default


def grey_default_of(cls, name: str) -> float:
    """:func:`default_of` for a noise level: the library's [0, 1] default in grey levels."""
    return grey_levels(default_of(cls, name))


def sigma_from_grey_levels(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Click callback of the noise-level options: given in 8-bit grey levels, passed on in [0, 1] units
    (the unit of everything below the command line)."""
    return None if value is None else sigma_from_grey(value)


def parse_formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip().lower() for f in text.split(",") if f.strip() and f.strip().lower() != "none")
