"""``--format onnx``: the adapted network as an ONNX graph, verified with ONNX Runtime (:mod:`exporters.onnx_export`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rfr_deploy.export_protocol import ExportedFile, Exporter, ExportRequest

from .onnx_export import export_onnx, onnx_metadata
from .registry import register_exporter

Precision = Literal["fp32", "fp16"]


def precision_field() -> Any:
    """The ``--precision`` option, shared by every format that exports the ONNX graph's precision."""
    return field(default="fp32", metadata={"help": "Precision of the exported model."})


@dataclass(frozen=True)
class OnnxSettings:
    """Settings of the ONNX export; every field is a CLI option."""

    precision: Precision = precision_field()
    """'fp16' computes in float16 inside the graph, with float32 inputs and outputs."""
    opset: int = 18
    """ONNX opset of the graph (17 to 23)."""


@register_exporter
class OnnxExporter(Exporter):
    """Writes ``<stem>_rfr.onnx``; its manifest record carries the measured ``max_abs_error``."""

    format = "onnx"
    settings_type = OnnxSettings

    def __init__(self, settings: OnnxSettings | None = None):
        self.settings = settings or OnnxSettings()

    def export(self, request: ExportRequest) -> list[ExportedFile]:
        model, path = request.model, request.target("onnx")
        report = export_onnx(
            model,
            path,
            example=request.example,
            sigma=request.sigma,
            opset=self.settings.opset,
            precision=self.settings.precision,
            metadata=onnx_metadata(model, noise=request.noise, sigma=request.sigma),
            ensemble=request.ensemble,  # the graph computes exactly what the written image shows
        )
        request.reporter.note(
            f"ONNX export verified with ONNX Runtime: max |error| {report.max_abs_error:.2e}"
        )
        return [ExportedFile("onnx", path, {"max_abs_error": report.max_abs_error})]
