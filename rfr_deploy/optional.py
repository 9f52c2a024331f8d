"""Optional dependencies, imported only where they are used.

Heavy packages that only some commands need (ray, matplotlib, the ONNX and TensorRT stacks) are
imported through :func:`import_optional`, which turns a missing package into the one-line
:class:`MissingDependencyError` that names the extra to install; :func:`is_installed` asks whether
they are there and :func:`installed_version` which version, without importing them.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib import metadata
from types import ModuleType

from rfr_deploy.errors import MissingDependencyError


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` suggesting ``pip install 'rfr-deploy[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc


def installed_version(*distributions: str) -> str | None:
    """The version of the first of ``distributions`` that is installed, read from its metadata (nothing
    is imported), or None."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def is_installed(*modules: str) -> bool:
    """Whether every one of the top-level ``modules`` is installed (found, not imported)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)
