"""The package version (one place: the manifests, the ONNX metadata, ``--version``)."""

__version__ = "0.1.0"
