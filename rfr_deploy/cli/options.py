"""Options shared by several sub-commands, options generated from settings dataclasses, output helpers.

:func:`field_option` turns a dataclass field into a click option named after it (``refresh_every`` →
``--refresh-every``), so the CLI's names, types, defaults and help never drift from the library's:

* the type from the annotation: ``Literal[...]`` → a choice of its values (``Literal[1, 3]`` gives an
  int), ``int`` / ``float`` → a number (a range with ``metadata`` ``min`` / ``max`` / ``min_open`` /
  ``max_open``), ``bool`` → a flag (``--name/--no-name``), ``X | None`` → ``X`` with no default shown;
* the default from the field, the help from ``metadata["help"]``;
* ``metadata["cli"]``: the option's own spelling where it is not ``--name`` (``("-o", "--output-dir")``,
  ``"--per-set"`` for a flag without a ``--no-`` form); ``metadata["file"]``: ``"existing"`` or
  ``"any"`` for a file path; ``metadata["choices"]``: a function returning the names a registry knows
  (a choice made when the command is built); ``metadata["unit"] == "grey"``: a noise level, given in
  8-bit grey levels on the command line and passed on in [0, 1] units.

A command that describes a field in its own words passes ``help`` to :func:`field_option`. Fields
parsed from a text of their own (comma-separated lists, ``MODEL=SIZE`` pairs) keep hand-written options.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import click
from click.core import ParameterSource

from rfr_deploy.files import json_text
from rfr_deploy.models.factory import model_for_weights
from rfr_deploy.progress import Reporter
from rfr_deploy.units import GREY_LEVELS, grey_levels, sigma_from_grey


def model_options(f: Callable) -> Callable:
    """--model and --weights; without --model, named weights bring their architecture."""

    command = f

    @functools.wraps(command)
    def with_model(**kwargs):
        kwargs["model"] = model_for_weights(kwargs["model"], kwargs["weights"] or kwargs.get("gray_weights"))
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
        help="Model name from `rfr-deploy models` [default: the architecture --weights names or fits, else dncnn].",
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
    click.echo(json_text(data, indent=2, default=str))


def existing_paths(values: tuple[str, ...]) -> list[Path]:
    from rfr_deploy.images import list_images

    return list_images(list(values))


def sigma_from_grey_levels(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Click callback of the noise-level options: given in 8-bit grey levels, passed on in [0, 1] units
    (the unit of everything below the command line); refused outside [0, 255] whatever the command does
    with it."""
    if value is not None and not 0 <= value <= GREY_LEVELS:  # NaN too
        raise click.UsageError(
            f"{param.opts[0]} must be within [0, {GREY_LEVELS:g}] grey levels, got {value:g}", ctx
        )
    return None if value is None else sigma_from_grey(value)


def field_option(cls: type, name: str, help: str | None = None) -> Callable[[Callable], Callable]:
    """The click option that sets field ``name`` of dataclass ``cls`` (see the module's docstring);
    ``help`` replaces the field's own help text where a command describes the field its own way."""
    spec = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = {**spec.metadata, **({"help": help} if help is not None else {})}
    hint = _without_none(typing.get_type_hints(cls)[name])
    dashed = name.replace("_", "-")
    flags = meta.get("cli") or (f"--{dashed}/--no-{dashed}" if hint is bool else f"--{dashed}")
    flags = (flags,) if isinstance(flags, str) else tuple(flags)
    if hint is bool and "/" not in flags[0]:  # an on-flag: off by default, nothing to show
        return click.option(name, *flags, is_flag=True, help=meta.get("help"))
    kwargs: dict[str, Any] = {"default": spec.default}
    if spec.default is not None:
        kwargs["show_default"] = True
    if hint is bool:
        kwargs["is_flag"] = True
    else:
        kwargs["type"] = _click_type(hint, meta)
    if meta.get("unit") == "grey":  # a noise level: grey levels on the command line, [0, 1] below it
        kwargs["callback"] = sigma_from_grey_levels
        if spec.default is not None:
            kwargs["default"] = grey_levels(spec.default)
    return click.option(name, *flags, help=meta.get("help"), **kwargs)


def field_options(cls: type, *names: str) -> Callable[[Callable], Callable]:
    """Options for the fields ``names`` of ``cls`` (every field when none is named), listed in that order."""
    names = names or tuple(f.name for f in dataclasses.fields(cls))

    def add(f: Callable) -> Callable:
        for name in reversed(names):
            f = field_option(cls, name)(f)
        return f

    return add


def settings_from(cls: type, values: Mapping[str, Any]):
    """``cls`` built from a command's keyword arguments: every field that has an option there."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def _without_none(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _click_type(hint, meta: Mapping[str, Any]):
    if "choices" in meta:  # names known at run time (a registry)
        return click.Choice(list(meta["choices"]()))
    if typing.get_origin(hint) is Literal:
        return click.Choice(list(typing.get_args(hint)))
    if "file" in meta:
        return click.Path(exists=meta["file"] == "existing", dir_okay=False)
    bounds = {k: meta[k] for k in ("min", "max", "min_open", "max_open") if k in meta}
    if hint is int:
        return click.IntRange(**bounds) if bounds else int
    if hint is float:
        return click.FloatRange(**bounds) if bounds else float
    return hint


def parse_formats(text: str) -> tuple[str, ...]:
    return tuple(f.strip().lower() for f in text.split(",") if f.strip() and f.strip().lower() != "none")


def given_options(ctx: click.Context) -> dict[str, str]:
    """The options given on the command line, not left at their defaults: keyword → the flag as typed
    (``--no-graph-cache`` for a flag's off form)."""
    defaults = (None, ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
    given = {}
    for param in ctx.command.params:
        if isinstance(param, click.Option) and ctx.get_parameter_source(param.name) not in defaults:
            off = bool(param.secondary_opts) and ctx.params.get(param.name) is False
            given[param.name] = max(param.secondary_opts if off else param.opts, key=len)
    return given
