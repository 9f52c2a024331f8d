"""The export formats by name: what ``--format`` accepts.

Every format is a class following :class:`rfr_deploy.export_protocol.Exporter` that registers itself
when its module is imported::

    @register_exporter
    class NpzExporter(Exporter):
        format = "npz"

        def __init__(self, settings=None): ...
        def export(self, request): ...

The built-in formats are :mod:`exporters.onnx_format` ('onnx'), :mod:`exporters.engine_format`
('engine', TensorRT) and :mod:`exporters.torchscript_format` ('torchscript'); the CLI imports them.
An exporter is made from its settings: ``cls(settings)``, or ``cls()`` for the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable

from rfr_deploy.errors import ConfigError

_FORMATS: dict[str, type] = {}


def register_exporter(cls: type) -> type:
    """Register ``cls`` under ``cls.format`` (a class decorator); a name registered before is a ValueError."""
    name = getattr(cls, "format", None)
    if not isinstance(name, str) or not name or name != name.lower() or "," in name or name == "none":
        raise ValueError(f"{cls.__name__}.format must be a lower-case name without commas, not {name!r}")
    if name in _FORMATS:
        raise ValueError(f"export format '{name}' is already registered ({_qualified(_FORMATS[name])})")
    unknown = [n for n in getattr(cls, "needs", ()) if n not in _FORMATS]
    if unknown:
        raise ValueError(f"export format '{name}' needs {', '.join(unknown)}, which is not registered")
    _FORMATS[name] = cls
    return cls


def exporter_formats() -> dict[str, type]:
    """Every registered format's class by name, in the order of registration."""
    return dict(_FORMATS)


def resolve_formats(names: Iterable[str]) -> list[str]:
    """The formats to export for ``names``: with the formats they need, each after those, else in the
    order of registration (so the manifest lists files in the same order whatever the user's order)."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in _FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {', '.join(unknown)}; choose from {', '.join(_FORMATS)}")
    ordered: list[str] = []

    def visit(name: str) -> None:
        for needed in _FORMATS[name].needs:
            visit(needed)
        if name not in ordered:
            ordered.append(name)

    for name in _FORMATS:
        if name in names:
            visit(name)
    return ordered


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
