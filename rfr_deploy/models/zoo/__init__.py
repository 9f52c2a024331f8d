"""The model zoo. Importing this package registers every architecture."""

from rfr_deploy.models.zoo import cbdnet, dncnn, dncnn_n2s, ffdnet, mirnet, rdn, ridnet  # noqa: F401
