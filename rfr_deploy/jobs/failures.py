"""A group of a run that fails mid-run: named in one line and recorded, and the run goes on.

Both ways of running a folder isolate failures: the sequential job (:mod:`rfr_deploy.jobs.adapt_export`)
and the Ray driver (:mod:`rfr_deploy.jobs.distributed`). Inputs are checked before any long work, so
what fails here is what the checks cannot foresee: memory for one large image, an exporter that rejects
one network, a file changed during the run. In the sequential job a full or read-only output folder
stops the run instead (:func:`stops_the_run`): every later group would fail the same way.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Sequence
from typing import Any

from rfr_deploy.errors import RfrError, first_line

STOPPING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""Errors of the output file system that no later group escapes."""


def failure_message(paths: Sequence[str], error: BaseException) -> str:
    """One line naming the group's first input and what went wrong (the error's type where it is not
    one of rfr-deploy's own)."""
    message = first_line(error, typed=not isinstance(error, RfrError))
    return message if paths[0] in message else f"{paths[0]}: {message}"


def failure_site(error: BaseException) -> dict[str, str]:
    """``{"raised_at": "file:line in function"}``, the innermost frame, for an error that is not one of
    rfr-deploy's own (a bug to report: the one line names only its type and message); else empty."""
    frames = traceback.extract_tb(error.__traceback__)  # empty without a traceback
    if isinstance(error, RfrError) or not frames:
        return {}
    frame = frames[-1]
    return {"raised_at": f"{frame.filename}:{frame.lineno} in {frame.name}"}


def failure_record(paths: Sequence[str], error: BaseException, seconds: float) -> dict[str, Any]:
    """The run's record of a failed group, as the Ray summary and ``--json`` list it."""
    return {
        "inputs": list(paths),
        "status": "failed",
        "error": failure_message(paths, error),
        **failure_site(error),
        "seconds": round(seconds, 3),
    }


def stops_the_run(error: BaseException) -> bool:
    """Whether ``error`` ends the run rather than one group: the output file system is full or read-only."""
    return isinstance(error, OSError) and error.errno in STOPPING_ERRNOS
