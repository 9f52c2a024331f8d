"""``--format`` and the options of the export formats, built from the registry (:mod:`exporters.registry`).

The formats' options come from the fields of their settings dataclasses (``settings_type``) through
:func:`rfr_deploy.cli.options.field_option`; an option several formats share (``--precision``) is
declared alike by each and sets all of them. ``--format`` is checked against the registry when the
command runs, so a format registered after the command was built is accepted with its default
settings; :func:`export_options` picks up the options of the formats registered when it is called.
An option given on the command line that none of the chosen formats has is refused
(:func:`check_format_options`), where it would otherwise be dropped, its value unchecked.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Collection, Mapping
from typing import Any

import click

# The built-in formats register themselves when imported.
import exporters.engine_format
import exporters.onnx_format
import exporters.torchscript_format  # noqa: F401
from exporters.registry import exporter_formats, resolve_formats
from rfr_deploy.cli.options import field_option, parse_formats, settings_from
from rfr_deploy.errors import ConfigError


def export_options(f: Callable) -> Callable:
    """``--format`` followed by the options of every registered format's settings."""
    formats = exporter_formats()
    names = ", ".join(f"{n} ({c.summary})" if c.summary else n for n, c in formats.items())
    options = [
        click.option(
            "--format",
            "formats",
            default="none",
            show_default=True,
            help=f"Comma-separated exports besides the weights: {names}.",
        )
    ]
    options += [field_option(cls, name) for cls, name in _setting_fields(formats.values())]
    for option in reversed(options):
        f = option(f)
    return f


def exporters_from(values: Mapping[str, Any], given: Mapping[str, str] | None = None) -> list:
    """The exporters a command's keyword arguments ask for: the ``--format`` list, the formats they
    need, and those an option selects (``--engine-from``), each built from its settings' options.
    ``given``: the options the user gave (keyword → the flag as typed), each of which a chosen format
    must use (:func:`check_format_options`)."""
    formats = exporter_formats()
    names = list(parse_formats(values.get("formats") or "none"))
    for name, cls in formats.items():
        if any(values.get(f.name) not in (None, f.default) for f in _selecting_fields(cls)):
            names.append(name)
    chosen = resolve_formats(names)
    check_format_options(chosen, given or {})
    exporters = []
    for name in chosen:
        cls = formats[name]
        exporters.append(cls(settings_from(cls.settings_type, values)) if cls.settings_type else cls())
    return exporters


def check_format_options(chosen: Collection[str], given: Mapping[str, str]) -> None:
    """Refuse a format's option given explicitly (``given``: keyword → the flag as typed) that none of
    the ``chosen`` formats has among its settings: it would be dropped without a word, unchecked."""
    users: dict[str, list[str]] = {}
    for name, cls in exporter_formats().items():
        for spec in dataclasses.fields(cls.settings_type) if cls.settings_type else ():
            users.setdefault(spec.name, []).append(name)
    for option, names in users.items():
        if option in given and not set(names) & set(chosen):
            listed = " and ".join(filter(None, (", ".join(names[:-1]), names[-1])))
            exports = "export" if len(names) == 1 else "exports"
            raise ConfigError(
                f"{given[option]} applies to the {listed} {exports}; add --format {names[0]} or drop it"
            )


def _setting_fields(classes) -> list[tuple[type, str]]:
    """(settings dataclass, field name) of every format's option, each name once: a name declared by
    several formats must have the same type, default and metadata in all of them."""
    seen: dict[str, tuple] = {}
    fields = []
    for cls in classes:
        if cls.settings_type is None:
            continue
        hints = typing.get_type_hints(cls.settings_type)
        for spec in dataclasses.fields(cls.settings_type):
            declared = (hints[spec.name], spec.default, dict(spec.metadata))
            if spec.name in seen:
                if seen[spec.name] != declared:
                    raise ValueError(
                        f"export format {cls.format!r} declares option {spec.name!r} differently"
                    )
                continue
            seen[spec.name] = declared
            fields.append((cls.settings_type, spec.name))
    return fields


def _selecting_fields(cls) -> list[dataclasses.Field]:
    if cls.settings_type is None:
        return []
    return [f for f in dataclasses.fields(cls.settings_type) if f.metadata.get("selects_format")]
