"""The model zoo. Importing this package registers every architecture."""

from . import dncnn, ffdnet  # noqa: F401
