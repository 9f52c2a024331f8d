"""The model zoo. Importing this package registers every architecture."""

from . import cbdnet, dncnn, dncnn_n2s, ffdnet, mirnet, rdn, ridnet  # noqa: F401
