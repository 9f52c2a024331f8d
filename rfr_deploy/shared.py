"""Where the reference data lives: one configurable path for tests and benchmarks.

``RFR_SHARED`` (environment) or ``../shared`` beside the repository root. The
installed package never depends on it; tests and benchmarks that need it skip
with a reason where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RFR_SHARED"


def shared_root() -> Path:
    """The shared data folder (may not exist; see :func:`shared_available`)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return (Path(__file__).resolve().parent.parent.parent / "shared").resolve()


def shared_available() -> bool:
    return (shared_root() / "README.md").is_file()


def shared_path(*parts: str) -> Path:
    return shared_root().joinpath(*parts)
