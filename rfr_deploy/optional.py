"""Optional dependencies, imported only where they are used.

Heavy packages that only some commands need (ray; the ONNX and TensorRT stacks keep
their own checks in :mod:`exporters`) are imported through :func:`import_optional`,
which turns a missing package into the one-line :class:`MissingDependencyError`
that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from rfr_deploy.errors import MissingDependencyError


def import_optional(module: str, extra: str, purpose: str) -> ModuleType:
    """``import module``, or a :class:`MissingDependencyError` suggesting ``pip install 'rfr-deploy[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module.split(".")[0], extra, purpose) from exc
