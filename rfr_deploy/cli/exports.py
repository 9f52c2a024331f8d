"""``--format`` and the options of the export formats, built from the registry (:mod:`exporters.registry`).

The formats' options come from the fields of their settings dataclasses (``settings_type``) through
:func:`rfr_deploy.cli.options.field_option`; an option several formats share (``--precision``) is
declared alike by each and sets all of them. ``--format`` is checked against the registry when the
command runs, so a format registered after the command was built is accepted with its default
settings; :func:`export_options` picks up the options of the formats registered when it is called.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Mapping
from typing import Any

import click

# The built-in formats register themselves when imported.
import exporters.engine_format
import exporters.onnx_format
import exporters.torchscript_format  # noqa: F401
from exporters.registry import exporter_formats, resolve_formats
from rfr_deploy.cli.options import field_option, parse_formats, settings_from


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


def exporters_from(values: Mapping[str, Any]) -> list:
    """The exporters a command's keyword arguments ask for: the ``--format`` list, the formats they
    need, and those an option selects (``--engine-from``), each built from its settings' options."""
    formats = exporter_formats()
    names = list(parse_formats(values.get("formats") or "none"))
    for name, cls in formats.items():
        if any(values.get(f.name) not in (None, f.default) for f in _selecting_fields(cls)):
            names.append(name)
    exporters = []
    for name in resolve_formats(names):
        cls = formats[name]
        exporters.append(cls(settings_from(cls.settings_type, values)) if cls.settings_type else cls())
    return exporters


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
