"""Exceptions that carry a one-line, user-facing message, and :func:`first_line` to quote another error.

The CLI catches :class:`RfrError` and prints ``error: <message>`` with a
non-zero exit code instead of a traceback. Library users can catch the
specific subclasses.
"""

from __future__ import annotations


class RfrError(Exception):
    """Base class of every error rfr-deploy reports to a user."""

    exit_code = 2


class ImageError(RfrError):
    """An input image cannot be used (unreadable, truncated, unsupported layout...)."""


class WeightsError(RfrError):
    """A weights file cannot be loaded or does not match the architecture."""


class ModelError(RfrError):
    """Unknown model name or invalid model configuration."""


class ConfigError(RfrError):
    """Invalid combination of settings."""


class ResourceError(RfrError):
    """Work that does not fit the available memory or is otherwise impossible here."""


class MissingDependencyError(RfrError):
    """An optional dependency (onnx, onnxruntime, tensorrt, ...) is not installed."""

    def __init__(self, package: str, extra: str | None = None, purpose: str = ""):
        hint = f" (pip install 'rfr-deploy[{extra}]')" if extra else ""
        what = f" to {purpose}" if purpose else ""
        super().__init__(f"the optional package '{package}' is needed{what} but is not installed{hint}")
        self.package = package


class PartialFailure(RfrError):
    """A run finished, but some of its images failed (each is listed in the run's summary).

    ``results``: what the run returns where it finishes cleanly, the failed groups' records included
    (e.g. for ``--json``)."""

    exit_code = 1

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = results if results is not None else []


def first_line(error: object, *, typed: bool = False, limit: int | None = None) -> str:
    """The first non-blank line of ``str(error)``, stripped, to quote a library's error in one line.

    Where the text is blank: the name of ``error``'s type. ``typed`` puts that name in front
    (``"KeyError: 'x'"``); ``limit`` cuts a longer line to that many characters, ending in "...".
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    name = type(error).__name__
    text = lines[0] if lines else name
    if typed and lines:
        text = f"{name}: {text}"
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
