"""Export a denoiser as TorchScript for C++ applications that link libtorch (``exporters/cpp``).

ONNX Runtime's C/C++ headers are not shipped by any package registry this project
can rely on (the ``onnxruntime`` wheel carries the shared library only), whereas the
``torch`` wheel ships libtorch complete: headers, libraries and CMake config. The
CPU C++ sample therefore runs a TorchScript module traced from the same
:class:`~exporters.exportable.ExportableDenoiser` graph the ONNX export uses
(dynamic height, width and batch; padding computed from the traced size).

The module stores two extra files that a C++ loader can read with
``torch::jit::load(path, device, extra_files)``: ``rfr_deploy.json`` (the same
metadata as the ONNX export) and ``rfr_deploy.txt`` (``key=value`` lines: channels,
noise_map, sigma, pad_multiple) for programs without a JSON parser. The graph always reflects its
padding: a program edge-pads an image too small for that to ``pad_multiple`` first
(:func:`rfr_deploy.models.denoiser.graph_size`), as the C++ samples do.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rfr_deploy.errors import first_line
from rfr_deploy.files import atomic_write, sha256_file

from .errors import QUOTED_CHARS, ExportError, ExportVerificationError
from .exportable import ExportableDenoiser, example_inputs, input_names
from .onnx_export import onnx_metadata
from .verification import crop_center, reference_output, second_inputs

TOLERANCE = 1e-4


@dataclass(frozen=True)
class TorchScriptExport:
    path: Path
    input_names: tuple[str, ...]
    max_abs_error: float | None
    verified_shapes: tuple[tuple[int, ...], ...]
    sha256: str
    seconds: float
    graph: str = "captured"
    """Traced from the network for every file (the ONNX export may reuse a graph: ``OnnxExport.graph``)."""


def export_torchscript(
    model,
    path: str | Path,
    *,
    example: torch.Tensor,
    sigma: float | None = None,
    metadata: dict[str, str] | None = None,
    verify: bool = True,
    tolerance: float = TOLERANCE,
    ensemble: bool = False,
) -> TorchScriptExport:
    """Trace ``model`` (float32) to ``path`` atomically; verify at the example's size and at a second, odd size.
    With ``ensemble`` the module computes the ×8 flip/rotation self-ensemble (:mod:`exporters.exportable`)."""
    if model.meta.noise_map and sigma is None:
        raise ExportError(f"{model.meta.arch} takes a noise level: pass sigma (σ/255) to export it")
    started = time.perf_counter()
    wrapper = ExportableDenoiser(model, "fp32", ensemble=ensemble).eval()
    args = example_inputs(model, crop_center(example, 128), sigma)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter(
                "ignore"
            )  # tracer warnings about shape arithmetic, which is what we want traced
            traced = torch.jit.trace(wrapper, args, check_trace=False)
    except Exception as exc:
        raise ExportError(
            f"cannot trace the network to TorchScript ({first_line(exc, limit=QUOTED_CHARS)})"
        ) from exc
    props = {
        **(metadata or onnx_metadata(model, sigma=sigma)),
        "precision": "fp32",
        "format": "torchscript",
        "ensemble": "x8" if ensemble else "none",
    }
    extra = _extra_files(model, props)
    error, shapes = None, ()
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files=extra)
        if verify:
            loaded = torch.jit.load(str(tmp))
            error, shapes = 0.0, []
            for inputs in (args, second_inputs(args)):
                with torch.no_grad():
                    got = loaded(*inputs).double().numpy()
                error = max(error, float(abs(got - reference_output(model, inputs, ensemble=ensemble)).max()))
                shapes.append(tuple(inputs[0].shape))
            if not error <= tolerance:
                raise ExportVerificationError(
                    f"TorchScript export differs from PyTorch by {error:.3g} (tolerance {tolerance:.3g}); not written"
                )
    return TorchScriptExport(
        path, input_names(model), error, tuple(shapes), sha256_file(path), time.perf_counter() - started
    )


def _extra_files(model, props: dict[str, str]) -> dict[str, str]:
    """The files stored in the module: the metadata as JSON, and ``key=value`` lines for C++ without JSON."""
    lines = {
        "channels": model.meta.channels,
        "noise_map": int(model.meta.noise_map),
        "sigma": props.get("sigma", "") or "",
        "pad_multiple": model.entry.pad_multiple,
    }
    return {
        "rfr_deploy.json": json.dumps(props, sort_keys=True),
        "rfr_deploy.txt": "".join(f"{k}={v}\n" for k, v in lines.items()),
    }
