"""Errors of the deployment tools, each reported to the user as one line (see :mod:`rfr_deploy.errors`),
and :func:`one_line`, which shortens a library's message to such a line."""

from __future__ import annotations

from rfr_deploy.errors import RfrError


class ExportError(RfrError):
    """The network could not be exported (unsupported operator, invalid settings...)."""


class ExportVerificationError(ExportError):
    """The exported model's output differs from PyTorch's by more than the tolerance."""


class EngineMismatchError(RfrError):
    """A TensorRT engine does not fit this machine, this TensorRT or the weights it is given."""


class ProfileError(RfrError):
    """An image size lies outside the shape range an engine was built for."""


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 240 characters), for a one-line error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 240 else text[:237] + "..."
