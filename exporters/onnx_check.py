"""The exported graph's last steps: its metadata, ONNX's validity check, and ONNX Runtime's
verification against PyTorch (:func:`finish_graph`), for a freshly captured graph and a reused one
(:mod:`exporters.onnx_reuse`) alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfr_deploy.errors import first_line
from rfr_deploy.optional import import_optional
from rfr_deploy.version import __version__

from .errors import QUOTED_CHARS, ExportError, ExportVerificationError
from .verification import reference_output, second_inputs

OUTPUT_NAME = "denoised"


@dataclass(frozen=True)
class Check:
    """What the written graph is verified against: the network, its example inputs and the settings."""

    model: Any
    args: tuple
    names: tuple[str, ...]
    dynamic: bool
    """Sizes are dynamic: also run a batch of two at a second, odd size (they must not be frozen)."""
    precision: str
    ensemble: bool
    tolerance: float | None
    """None: not verified."""
    sizes_verified: bool = False
    """The graph's sizes were verified before (a reused graph): the example alone checks the weights."""

    def graph_options(self, opset: int) -> tuple:
        """What the graph depends on besides the network: precision, opset, dynamic sizes (else the
        example's shape, which a static graph is fixed to), ensemble and input names."""
        shape = None if self.dynamic else tuple(self.args[0].shape)
        return (self.precision, opset, self.dynamic, shape, self.ensemble, self.names)


@dataclass(frozen=True)
class Written:
    """A graph written to its file, and how its verification went."""

    proto: Any
    """The ``onnx.ModelProto`` as written."""
    props: dict[str, str]
    error: float | None
    shapes: tuple
    verification: str


def _graph_props(metadata, opset: int, exporter: str, check: Check) -> dict[str, str]:
    """The file's ``metadata_props``: the caller's metadata and how the graph was made."""
    return {
        **(metadata or {}),
        "precision": check.precision,
        "opset": str(opset),
        "exporter": exporter,
        "ensemble": "x8" if check.ensemble else "none",
        "inputs": ",".join(check.names),
        "outputs": OUTPUT_NAME,
    }


def _check_error(model, precision: str, error: float | None, tolerance: float) -> None:
    if error is not None and not error <= tolerance:  # also catches NaN
        raise ExportVerificationError(
            f"ONNX export of {model.meta.arch} ({precision}) differs from PyTorch by {error:.3g} "
            f"(tolerance {tolerance:.3g}); the exported file was not written"
        )


def finish_graph(proto, exporter: str, path: Path, metadata, opset: int, check: Check) -> Written:
    """Write ``proto`` (made by ``exporter``) to ``path`` with its metadata, then verify it."""
    props = _graph_props(metadata, opset, exporter, check)
    _write_model(proto, path, props)
    if check.tolerance is None:
        return Written(proto, props, None, (), "not requested")
    error, shapes, verification = _verify_with_onnxruntime(check, path)
    _check_error(check.model, check.precision, error, check.tolerance)
    return Written(proto, props, error, shapes, verification)


def load_graph(path: Path):
    """The ``onnx.ModelProto`` at ``path``."""
    import onnx

    return onnx.load_model(str(path))


def _write_model(proto, path: Path, props: dict[str, str]) -> None:
    """Give ``proto`` its metadata, check it (ONNX's full check) and save it to ``path``."""
    import onnx

    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    proto.producer_name = "rfr-deploy"
    proto.producer_version = __version__
    proto.doc_string = (
        "Image denoiser exported by rfr-deploy. Input 'noisy': N x C x H x W float32 in [0, 1]"
        + ("; input 'sigma': N float32, noise level / 255" if "sigma" in props.get("inputs", "") else "")
        + ". Output 'denoised': N x C x H x W float32."
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(
            f"the exported ONNX graph is invalid ({first_line(exc, limit=QUOTED_CHARS)})"
        ) from exc
    onnx.save_model(proto, str(path))


def _verify_with_onnxruntime(check: Check, path: Path):
    """(max abs error, verified input shapes, description) of the graph at ``path`` against
    ``check.model``; error None when ONNX Runtime cannot run it."""
    model, args, names, precision = check.model, check.args, check.names, check.precision
    ort = import_optional("onnxruntime", "onnx", "verify the ONNX export")

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if precision == "bf16" and "NOT_IMPLEMENTED" in str(exc):
            # ONNX Runtime's CPU provider has no bfloat16 Conv; the TensorRT build verifies these.
            return None, (), "skipped: ONNX Runtime (CPU) cannot run bfloat16 convolutions"
        raise ExportError(
            f"ONNX Runtime cannot load the exported model ({first_line(exc, limit=QUOTED_CHARS)})"
        ) from exc
    runs = [args]
    if check.dynamic and not check.sizes_verified:
        runs.append(second_inputs(args))
    worst, shapes = 0.0, []
    for inputs in runs:
        got = session.run([OUTPUT_NAME], {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0]
        want = reference_output(model, inputs, ensemble=check.ensemble)
        if got.shape != want.shape:
            raise ExportVerificationError(
                f"exported model returns shape {got.shape} for input {tuple(inputs[0].shape)}, expected {want.shape}"
            )
        worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - want))))
        shapes.append(tuple(inputs[0].shape))
    return worst, tuple(shapes), f"onnxruntime {ort.__version__} CPUExecutionProvider"
