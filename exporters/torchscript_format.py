"""``--format torchscript``: the adapted network as a TorchScript module for libtorch (:mod:`exporters.torchscript_export`).

Written as ``<stem>_rfr.pt``, float32, verified against PyTorch; the C++ sample ``exporters/cpp``
(``rfr_denoise_cpu``) runs it.
"""

from __future__ import annotations

from rfr_deploy.export_protocol import ExportedFile, Exporter, ExportRequest

from .onnx_format import export_verified
from .registry import register_exporter
from .torchscript_export import export_torchscript


@register_exporter
class TorchScriptExporter(Exporter):
    """Writes ``<stem>_rfr.pt``; its manifest record carries the measured ``max_abs_error``."""

    format = "torchscript"
    summary = "libtorch"

    def __init__(self, settings: None = None):
        self.settings = settings

    def export(self, request: ExportRequest) -> list[ExportedFile]:
        return export_verified(
            request,
            export_torchscript,
            role="torchscript",
            extension="pt",
            verified="TorchScript export verified with PyTorch",
        )
