"""``--format onnx``: the adapted network as an ONNX graph, verified with ONNX Runtime (:mod:`exporters.onnx_export`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from rfr_deploy.caches import cache_limit
from rfr_deploy.export_protocol import ExportedFile, Exporter, ExportRequest

from .errors import ExportError
from .onnx_export import OPSETS, export_onnx, onnx_metadata
from .onnx_graph_cache import GraphCache, default_graph_cache
from .onnx_reuse import GraphReuse
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
    graph_cache: bool = field(
        default=True,
        metadata={"help": "Keep verified graphs in the cache folder for later runs (rfr-deploy cache list)."},
    )
    """Reuse a graph an earlier run captured and verified (:mod:`exporters.onnx_graph_cache`), with the
    adapted weights; a run whose architecture and settings are new captures it and keeps it there."""

    def __post_init__(self) -> None:  # before any adaptation, not when the first graph is exported
        if self.opset not in OPSETS:
            raise ExportError(f"ONNX opset {self.opset} is not supported; use {OPSETS[0]} to {OPSETS[-1]}")


@register_exporter
class OnnxExporter(Exporter):
    """Writes ``<stem>_rfr.onnx``; its manifest record carries the measured ``max_abs_error`` and whether
    the graph was ``captured`` from the network, ``reused`` from the run's first export or ``cached`` by an
    earlier run."""

    format = "onnx"
    settings_type = OnnxSettings

    def __init__(self, settings: OnnxSettings | None = None):
        self.settings = settings or OnnxSettings()
        cache = GraphCache(default_graph_cache(), cache_limit()) if self.settings.graph_cache else None
        self.graphs = GraphReuse(cache)
        """The run's graph, reused for every network after the first (:mod:`exporters.onnx_reuse`), and
        with ``graph_cache`` taken from and kept for other runs."""

    def export(self, request: ExportRequest) -> list[ExportedFile]:
        return export_verified(
            request,
            export_onnx,
            role="onnx",
            extension="onnx",
            verified="ONNX export verified with ONNX Runtime",
            opset=self.settings.opset,
            precision=self.settings.precision,
            reuse=self.graphs,
        )


def export_verified(
    request: ExportRequest,
    export: Callable[..., Any],
    *,
    role: str,
    extension: str,
    verified: str,
    **options: Any,
) -> list[ExportedFile]:
    """Write ``request``'s network to ``<stem>_rfr.<extension>`` with ``export`` (:func:`export_onnx` or
    :func:`~exporters.torchscript_export.export_torchscript`, given ``options`` too), note the error it
    measured after ``verified``, and return the file as ``role`` (its manifest record carries the
    ``max_abs_error``)."""
    model, path = request.model, request.target(extension)
    report = export(
        model,
        path,
        example=request.example,
        sigma=request.sigma,
        metadata=onnx_metadata(model, noise=request.noise, sigma=request.sigma),
        ensemble=request.ensemble,  # the file computes exactly what the written image shows
        **options,
    )
    source = {
        "reused": " (the graph of the run's first export, with these weights)",
        "cached": " (a graph an earlier run captured, from the graph cache, with these weights)",
    }.get(report.graph, "")
    request.reporter.note(f"{verified}: max |error| {report.max_abs_error:.2e}{source}")
    return [ExportedFile(role, path, {"max_abs_error": report.max_abs_error, "graph": report.graph})]
