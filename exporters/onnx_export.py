"""Export a (possibly adapted) denoiser to ONNX, verified against PyTorch with ONNX Runtime.

::

    from exporters.onnx_export import export_onnx, onnx_metadata
    report = export_onnx(model, "dncnn_rfr.onnx", example=noisy, metadata=onnx_metadata(model, noise={...}))
    report.max_abs_error        # ONNX Runtime vs PyTorch on the example and on a second, odd size

The graph has inputs ``noisy`` (``N×C×H×W`` float32 in [0, 1]) and, for noise-map
networks, ``sigma`` (``N`` float32, σ/255 per image), and one output ``denoised``
(``N×C×H×W`` float32). Batch, height and width are dynamic.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export capture, the default
since torch 2.9) with its graph optimiser off, followed by constant folding only. The
optimiser's rewrites would drop all-zero convolution biases and merge initializers
with equal values, and an initializer that disappears cannot be refitted later
(TensorRT refit finds weights by initializer name). Initializers keep the PyTorch
parameter names. Where torch.export cannot capture a network, the TorchScript
exporter (``dynamo=False``, ``dynamic_axes``) is tried; the report says which ran.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rfr_deploy.errors import first_line
from rfr_deploy.files import atomic_write, sha256_file
from rfr_deploy.optional import import_optional, installed_version
from rfr_deploy.version import __version__

from .errors import QUOTED_CHARS, ExportError, ExportVerificationError
from .exportable import PRECISIONS, ExportableDenoiser, Precision, example_inputs, input_names
from .onnx_check import OUTPUT_NAME, Check, Written, finish_graph, load_graph
from .onnx_reuse import GraphReuse
from .verification import crop_center

DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 6e-2}
"""Largest accepted |ONNX Runtime − PyTorch fp32| on [0, 1] images, per export precision."""
VERIFY_SIZE = 192
"""Dynamic exports are captured and verified on a centre crop of at most this side (speed; conv nets are local);
static exports (``dynamic=False``) at the example's own size, which their graph is fixed to."""
REUSED_VERIFY_SIZE = 64
"""A reused or cached dynamic graph is verified on a centre crop of at most this side: its sizes were verified
with the graph it was captured as, and every weight takes part in the output at any size, so a smaller crop
checks the weights as well (MIRNet, 2-core CPU, under cProfile: verification at 192² took 10.8 of a reuse's
11.9 s; ``benchmarks/results/profile_export_mirnet_reused*.md``)."""
OPSETS = range(17, 24)
"""ONNX opsets the exporter accepts (17 to 23)."""
ONNXSCRIPT_MIN = (0, 5)
"""``onnxscript.optimizer.fold_constants_ir(should_fold=...)`` appeared in 0.5; with an older onnxscript the
export would fail there and silently fall back to the deprecated TorchScript exporter."""


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote and how well it matched PyTorch."""

    path: Path
    opset: int
    precision: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    max_abs_error: float | None
    """Largest |ONNX Runtime − PyTorch (fp32)| over the verification runs; None without verification."""
    tolerance: float
    verified_shapes: tuple[tuple[int, ...], ...]
    exporter: str
    """'dynamo' (torch.export) or 'torchscript'."""
    verification: str
    """How the file was checked: ONNX Runtime and its provider, or why it was not."""
    dynamic: bool
    sha256: str
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)
    graph: str = "captured"
    """'captured' (exported from the network), 'reused' (this run's earlier graph with these weights) or
    'cached' (an earlier run's graph from the graph cache, with these weights)."""


def onnx_metadata(model, noise: dict[str, Any] | None = None, sigma: float | None = None) -> dict[str, str]:
    """``metadata_props`` describing ``model`` (a :class:`~rfr_deploy.models.denoiser.Denoiser`) for the ONNX file.

    ``noise`` describes the synthetic noise of the adaptation (the manifest's ``noise``, made by
    :func:`rfr_deploy.jobs.adapt_export.noise_desc`);
    ``sigma`` is the σ/255 that noise-map networks were run with (the runtime's default; only they have
    a ``sigma`` input, which ``sigma.units`` describes). ``noise`` records σ in grey levels, as the
    command line and the manifest do.
    """
    meta = model.meta
    level = {
        "sigma": "" if sigma is None else repr(float(sigma)),
        "sigma.units": "sigma/255, one value per batch item (input 'sigma', shape [N])",
    }
    return {
        "rfr_deploy.version": __version__,
        "model.name": meta.arch,
        "model.arch_kwargs": json.dumps(dict(meta.arch_kwargs), sort_keys=True),
        "model.channels": str(meta.channels),
        "model.output": meta.output,
        "model.noise_map": "true" if meta.noise_map else "false",
        "model.pad_multiple": str(model.entry.pad_multiple),
        "model.weights_sha256": model.weights_sha256 or "",
        "model.meta": meta.to_json(),
        "noise": json.dumps(noise or {}, sort_keys=True, default=str),
        **(level if meta.noise_map else {}),
        "input.layout": "NCHW",
        "input.dtype": "float32",
        "input.range": "[0, 1]",
        "output.layout": "NCHW",
        "output.dtype": "float32",
    }


def export_onnx(
    model,
    path: str | Path,
    *,
    example: torch.Tensor,
    sigma: float | torch.Tensor | None = None,
    opset: int = 18,
    precision: Precision = "fp32",
    metadata: dict[str, str] | None = None,
    dynamic: bool = True,
    verify: bool = True,
    tolerance: float | None = None,
    ensemble: bool = False,
    reuse: GraphReuse | None = None,
) -> OnnxExport:
    """Export ``model`` to ``path`` (atomically) and check the file with ONNX Runtime.

    ``example`` is an ``N×C×H×W`` input in [0, 1] (e.g. the image the network was
    adapted to); ``sigma`` (σ/255) is required for noise-map networks. With
    ``verify`` the file is run with ONNX Runtime on a centre crop of the example and,
    for dynamic exports, on a batch of two at a second, odd size; an
    :class:`ExportVerificationError` is raised (and nothing is written) when the
    largest difference to the float32 PyTorch model exceeds ``tolerance``
    (default per precision: :data:`DEFAULT_TOLERANCE`). With ``ensemble`` the graph computes the ×8
    flip/rotation self-ensemble (see :mod:`exporters.exportable`) and is verified against PyTorch's.
    With ``reuse`` (one per run), a network of the architecture exported before takes that graph with its
    own weights instead of a new capture (:mod:`exporters.onnx_reuse`), verified on a centre crop of the
    example of at most :data:`REUSED_VERIFY_SIZE` (the graph's sizes were verified with the first).
    """
    _check_request(model, example, sigma, opset, precision)
    tolerance = DEFAULT_TOLERANCE[precision] if tolerance is None else float(tolerance)
    started = time.perf_counter()
    # Dynamic graphs are captured and verified at a centre crop (symbolic sizes: the crop only saves time);
    # a static graph is fixed to the shape it is captured at, so it takes the example's own size.
    args = example_inputs(model, crop_center(example, VERIFY_SIZE) if dynamic else example, sigma)
    names = input_names(model)
    path = Path(path)
    check = Check(model, args, names, dynamic, precision, ensemble, tolerance if verify else None)
    with atomic_write(path) as tmp:
        written, graph = _write_graph(check, tmp, metadata, opset, reuse)
    return OnnxExport(
        path=path,
        opset=opset,
        precision=precision,
        input_names=names,
        output_names=(OUTPUT_NAME,),
        max_abs_error=written.error,
        tolerance=tolerance,
        verified_shapes=written.shapes,
        exporter=written.props["exporter"],
        verification=written.verification,
        dynamic=dynamic,
        sha256=sha256_file(path),
        seconds=time.perf_counter() - started,
        metadata=written.props,
        graph=graph,
    )


def _write_graph(
    check: Check, target: Path, metadata, opset: int, reuse: GraphReuse | None
) -> tuple[Written, str]:
    """Write ``check.model``'s graph to ``target`` and verify it: ``reuse``'s graph with the model's weights
    where one matches, else a fresh capture (kept by ``reuse`` once verified); (written, where the graph
    came from: ``captured``, ``reused`` or ``cached``)."""
    model, options = check.model, check.graph_options(opset)
    made = reuse.fill(model, options) if reuse is not None else None
    if made is not None:
        proto, exporter, source = made
        try:
            return finish_graph(proto, exporter, target, metadata, opset, _reused_check(check)), source
        except ExportVerificationError:  # not expected: capture afresh rather than fail the export
            reuse.forget()
    wrapper = ExportableDenoiser(model, check.precision, ensemble=check.ensemble).eval()
    pad = model.entry.pad_multiple
    exporter = _export_graph(wrapper, check.args, check.names, opset, check.dynamic, pad, target)
    written = finish_graph(load_graph(target), exporter, target, metadata, opset, check)
    if reuse is not None and written.error is not None:  # only a verified graph is reused
        reuse.keep(model, options, written.proto, exporter)
    return written, "captured"


def _reused_check(check: Check) -> Check:
    """How a reused graph is verified: on the example alone (its sizes were verified with the template),
    a dynamic graph on a centre crop of at most :data:`REUSED_VERIFY_SIZE`."""
    x, *rest = check.args
    args = (crop_center(x, REUSED_VERIFY_SIZE), *rest) if check.dynamic else check.args
    return replace(check, args=args, sizes_verified=True)


def _check_request(model, example: torch.Tensor, sigma, opset: int, precision: str) -> None:
    """Refuse, before anything is exported, what cannot be: one line naming the setting."""
    import_optional("onnx", "onnx", "export to ONNX")
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if opset not in OPSETS:
        raise ExportError(f"ONNX opset {opset} is not supported; use {OPSETS[0]} to {OPSETS[-1]}")
    require_onnxscript()
    if example.ndim != 4 or example.shape[1] != model.meta.channels:
        raise ExportError(
            f"example must be N×{model.meta.channels}×H×W for this network, got {tuple(example.shape)}"
        )
    if model.meta.noise_map and sigma is None:
        raise ExportError(f"{model.meta.arch} takes a noise level: pass sigma (σ/255) to export it")
    if precision == "bf16" and opset < 22:
        raise ExportError(f"bfloat16 convolutions need ONNX opset 22 or later, not {opset}")


# --------------------------------------------------------------------------- export


def _export_graph(wrapper, args, names, opset: int, dynamic: bool, pad_multiple: int, target: Path) -> str:
    """Write the raw graph to ``target``; returns the exporter that succeeded."""
    try:
        _export_dynamo(wrapper, args, names, opset, dynamic, pad_multiple, target)
        written = graph_opset(target)
        if written != opset:  # torch exports at 18 and converts down; where that fails it keeps 18
            raise ExportError(f"torch.export wrote opset {written}, not {opset}")
        return "dynamo"
    except Exception as first:  # torch.export raises many types; fall back, then report the first cause
        try:
            _export_torchscript(wrapper, args, names, opset, dynamic, target)
            written = graph_opset(target)
        except Exception:
            raise ExportError(
                f"cannot export the network to ONNX ({first_line(first, limit=QUOTED_CHARS)})"
            ) from first
        if written != opset:
            raise ExportError(
                f"cannot export the network to ONNX opset {opset}: both exporters wrote {written}"
            ) from first
        return "torchscript"


def graph_opset(path: Path) -> int | None:
    """The opset of the default ONNX domain the graph at ``path`` imports."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _export_dynamo(wrapper, args, names, opset, dynamic, pad_multiple, target: Path) -> None:
    from onnxscript import optimizer

    dynamic_shapes = None
    if dynamic:
        lowest = max(2, pad_multiple)  # reflect padding needs a side larger than the pad
        batch = torch.export.Dim("batch", min=1, max=4096)
        height = torch.export.Dim("height", min=lowest, max=1 << 16)
        width = torch.export.Dim("width", min=lowest, max=1 << 16)
        dynamic_shapes = {"noisy": {0: batch, 2: height, 3: width}}
        if "sigma" in names:
            dynamic_shapes["sigma"] = {0: batch}
    program = _torch_export(
        wrapper,
        args,
        None,
        names,
        opset,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        optimize=False,
        verbose=False,
    )
    model = program.model
    # Fold shape arithmetic, but never an operation on a parameter (e.g. PReLU's slope reshape): the folded
    # result would be a new, anonymous initializer that TensorRT cannot refit by the parameter's name.
    params = set(wrapper.state_dict())

    def should_fold(node) -> bool | None:
        return False if any(v is not None and v.name in params for v in node.inputs) else None

    optimizer.fold_constants_ir(model, should_fold=should_fold)
    optimizer.remove_unused_nodes(model)
    import onnx
    from onnxscript import ir

    onnx.save_model(ir.serde.serialize_model(model), str(target))


def _export_torchscript(wrapper, args, names, opset, dynamic, target: Path) -> None:
    axes = None
    if dynamic:
        axes = {
            "noisy": {0: "batch", 2: "height", 3: "width"},
            OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
        }
        if "sigma" in names:
            axes["sigma"] = {0: "batch"}
    _torch_export(
        wrapper, args, str(target), names, opset, dynamo=False, dynamic_axes=axes, do_constant_folding=True
    )


def _torch_export(wrapper, args, target: str | None, names, opset: int, **options):
    """``torch.onnx.export`` of the wrapper with the graph's input and output names, its logging silenced."""
    with _quiet():
        return torch.onnx.export(
            wrapper,
            args,
            target,
            input_names=list(names),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            **options,
        )


# --------------------------------------------------------------------------- helpers


def require_onnxscript() -> None:
    """onnxscript at least :data:`ONNXSCRIPT_MIN`, or a one-line error before anything is exported.

    Read from the package's metadata, not imported: the import takes about half a second, which an export
    whose graph comes from the graph cache does not otherwise spend."""
    version = installed_version("onnxscript") or getattr(  # else a source tree on the path: import it
        import_optional("onnxscript", "onnx", "export to ONNX with torch.export"), "__version__", "0"
    )
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if numbers < ONNXSCRIPT_MIN:
        floor = ".".join(map(str, ONNXSCRIPT_MIN))
        raise ExportError(
            f"onnxscript {version} is too old to export to ONNX; it needs onnxscript >= {floor} "
            f"(pip install -U 'onnxscript>={floor}')"
        )


@contextlib.contextmanager
def _quiet():
    """The exporters print progress on stdout and log warnings about unrelated operator libraries
    (torchvision); keep stdout clean for ``--json`` output and stderr for real problems."""
    # onnxscript warns, with a traceback, where it cannot convert a graph down to the opset asked for:
    # the export then checks the opset it got (:func:`_export_graph`)
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
