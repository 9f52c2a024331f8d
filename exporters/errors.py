"""Errors of the deployment tools, each reported to the user as one line (see :mod:`rfr_deploy.errors`;
:func:`rfr_deploy.errors.first_line` with :data:`QUOTED_CHARS` shortens a library's message to such a line)."""

from __future__ import annotations

from rfr_deploy.errors import RfrError

QUOTED_CHARS = 240
"""Longest line of a library's error (torch.onnx, onnx, ONNX Runtime...) quoted in an export error."""


class ExportError(RfrError):
    """The network could not be exported (unsupported operator, invalid settings...)."""


class ExportVerificationError(ExportError):
    """The exported model's output differs from PyTorch's by more than the tolerance."""


class EngineMismatchError(RfrError):
    """A TensorRT engine does not fit this machine, this TensorRT or the weights it is given."""


class ProfileError(RfrError):
    """An image size lies outside the shape range an engine was built for."""
