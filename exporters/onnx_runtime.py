"""Run an exported denoiser with ONNX Runtime: any image size, tiled when it exceeds a memory budget.

::

    from exporters.onnx_runtime import OnnxDenoiser
    runner = OnnxDenoiser("photo_rfr.onnx")            # TensorRT / CUDA providers when installed
    clean = runner.denoise(noisy_pixels)                # H×W×C float32 in [0, 1] -> same shape
    runner.metadata["model.name"], runner.providers

Inference runs only through ONNX Runtime (no PyTorch model code). The execution
providers are chosen from those installed, best first: TensorRT, CUDA, CPU
(``pip install onnxruntime-gpu`` for the GPU ones). Images larger than the memory
budget are processed in overlapping tiles; the overlap defaults to half the
receptive field read off the graph, which makes tiles exact for local networks
(the DnCNN family, FFDNet).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rfr_deploy.errors import ConfigError, ImageError, ModelError, first_line
from rfr_deploy.inference import run_tiled
from rfr_deploy.memory import available_bytes, side_that_fits
from rfr_deploy.models.denoiser import padding
from rfr_deploy.optional import import_optional
from rfr_deploy.units import grey_levels

PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDERS = {
    "tensorrt": PREFERRED_PROVIDERS[0],
    "cuda": PREFERRED_PROVIDERS[1],
    "cpu": PREFERRED_PROVIDERS[2],
}
"""The providers by the short names ``rfr-deploy infer --provider`` takes."""
NONLOCAL_OPS = {
    "GlobalAveragePool",
    "GlobalMaxPool",
    "ReduceMean",
    "ReduceMax",
    "MatMul",
    "Resize",
    "Softmax",
}
"""Operators whose output depends on the whole image: tiles of such graphs are close, not exact."""
UNSHUFFLE_PERM = [0, 1, 3, 5, 2, 4]
"""The Transpose of a pixel unshuffle lowered to Reshape (N, C, H/b, b, W/b, b) + Transpose + Reshape."""
DEFAULT_CPU_BUDGET = 4 << 30
DEFAULT_GPU_BUDGET = 2 << 30


class OnnxDenoiser:
    """An exported rfr-deploy denoiser loaded in ONNX Runtime.

    ``providers``: ONNX Runtime execution providers in order of preference (default:
    the best installed of :data:`PREFERRED_PROVIDERS`, falling back to the CPU where a GPU provider
    cannot start; given ones must start, the first of them running the graph). ``memory_budget``: bytes one
    forward pass may use before the image is tiled (default: a quarter of the free
    RAM, at most 4 GiB, on CPU; 2 GiB on GPU providers). ``threads``: intra-op
    threads of the CPU provider (default: ONNX Runtime's choice).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        providers: Sequence[str] | None = None,
        memory_budget: int | None = None,
        threads: int | None = None,
    ):
        ort = import_optional("onnxruntime", "onnx", "run ONNX models")
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: no such ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        wanted = list(providers) if providers else choose_providers(ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted)
        except Exception as exc:
            if providers or wanted == ["CPUExecutionProvider"]:
                raise ModelError(
                    f"{self.path}: ONNX Runtime cannot load this model with {', '.join(wanted)} "
                    f"({first_line(exc)})"
                ) from exc
            # A GPU provider listed as available may still lack its libraries (CUDA, TensorRT): use the CPU.
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.providers: list[str] = self.session.get_providers()
        if providers and self.providers[0] != wanted[0]:  # ONNX Runtime dropped it (its libraries missing)
            raise ModelError(f"{self.path}: {wanted[0]} did not start; ONNX Runtime runs {self.providers[0]}")
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.input_names = [i.name for i in self.session.get_inputs()]
        if "noisy" not in self.input_names or self.session.get_outputs()[0].name != "denoised":
            raise ModelError(
                f"{self.path}: not a denoiser exported by rfr-deploy (inputs {self.input_names})"
            )
        self.channels = _static_dim(self.session.get_inputs()[0].shape, 1) or int(
            self.metadata.get("model.channels", 0)
        )
        self.noise_map = "sigma" in self.input_names
        self.pad_multiple = int(self.metadata.get("model.pad_multiple", "1") or 1)
        self.receptive_field, self.exact_tiles = _graph_locality(self.path)
        on_gpu = self.providers[0] != "CPUExecutionProvider"
        self.memory_budget = int(memory_budget or (DEFAULT_GPU_BUDGET if on_gpu else _cpu_budget()))
        self.bytes_per_pixel = _bytes_per_pixel(self.path)

    @property
    def default_sigma(self) -> float | None:
        """Noise level ([0, 1] units) stored at export for noise-map networks, or None."""
        value = self.metadata.get("sigma", "")
        return float(value) if value else None

    @property
    def per_channel(self) -> bool:
        """Whether the graph runs a gray network on each channel of its images alone (the model's metadata)."""
        try:
            return bool(json.loads(self.metadata.get("model.meta", "{}")).get("per_channel", False))
        except (ValueError, AttributeError):
            return False

    @property
    def default_overlap(self) -> int:
        return int(math.ceil(self.receptive_field / 2))

    def tile_for(self, height: int, width: int) -> int | None:
        """Tile side that keeps one pass within the memory budget, or None when the whole image fits."""
        smallest = 2 * self.default_overlap + 64
        return side_that_fits(self.bytes_per_pixel, height * width, self.memory_budget, 32, smallest)

    def denoise(
        self,
        pixels: np.ndarray,
        sigma: float | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Denoise ``pixels`` (``H×W×C`` or ``H×W`` float in [0, 1]); returns ``H×W×C`` float32.

        ``sigma``: noise level in [0, 1] units (σ/255) for noise-map networks (default:
        the level stored at export). ``tile``: force tiles of this side (default: only
        when the image exceeds the memory budget); ``overlap`` defaults to half the
        receptive field. ``on_tile(done, total)`` hears of each tile done.
        """
        array = np.asarray(pixels, dtype=np.float32)
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim != 3:
            raise ImageError(f"expected an H×W×C image, got an array of shape {array.shape}")
        self.check_channels(array.shape[2])
        batch = np.ascontiguousarray(array.transpose(2, 0, 1)[None])
        sigma_vector = self._sigma_vector(sigma)
        h, w = array.shape[:2]
        tile = tile or self.tile_for(h, w)
        if tile is None or (h <= tile and w <= tile):
            out = self.run(_edge_padded(batch, self.pad_multiple), sigma_vector)[..., :h, :w]
        else:
            out = run_tiled(
                lambda x: self.run(x, sigma_vector),
                batch,
                tile,
                self.default_overlap if overlap is None else overlap,
                self.pad_multiple,
                on_tile,
            )
        return np.ascontiguousarray(out[0].transpose(1, 2, 0))

    def check_channels(self, channels: int, where: str = "") -> None:
        """An :class:`ImageError` (prefixed with ``where``, e.g. the image's path) for an image of
        ``channels`` channels that this model does not take."""
        if self.channels and channels != self.channels:
            raise ImageError(
                f"{where}{': ' if where else ''}this model takes {self.channels}-channel images, "
                f"got {channels} channel(s)"
            )

    def run(self, batch: np.ndarray, sigma: np.ndarray | None = None) -> np.ndarray:
        """One forward pass: ``N×C×H×W`` float32 → ``N×C×H×W`` float32 (``sigma``: N values of σ/255)."""
        feeds = {"noisy": np.ascontiguousarray(batch, dtype=np.float32)}
        if self.noise_map:
            if sigma is None:
                raise ConfigError("this model takes a noise level: pass sigma (σ/255)")
            feeds["sigma"] = np.broadcast_to(
                np.asarray(sigma, np.float32).reshape(-1), (batch.shape[0],)
            ).copy()
        return self.session.run(["denoised"], feeds)[0]

    def _sigma_vector(self, sigma: float | None) -> np.ndarray | None:
        if not self.noise_map:
            return None
        level = sigma if sigma is not None else self.default_sigma
        if level is None:
            raise ConfigError("this model takes a noise level and none was stored at export: pass --sigma")
        if not 0 <= level <= 1:
            raise ConfigError(f"sigma must be within [0, 255] grey levels, got {grey_levels(level)}")
        return np.array([level], dtype=np.float32)

    def describe(self) -> dict:
        return {
            "model": str(self.path),
            "providers": self.providers,
            "name": self.metadata.get("model.name"),
            "arch_kwargs": json.loads(self.metadata.get("model.arch_kwargs", "{}") or "{}"),
            "precision": self.metadata.get("precision"),
            "noise_map": self.noise_map,
            "receptive_field": self.receptive_field,
            "exact_tiles": self.exact_tiles,
        }


def providers_for(name: str, available: Sequence[str] | None = None) -> list[str] | None:
    """The providers of ``--provider name`` ('auto': None, the best installed), the CPU behind a GPU one
    for the operators it lacks; :class:`ModelError` where ONNX Runtime (``available``: its providers)
    does not offer it."""
    if name == "auto":
        return None
    if available is None:
        available = import_optional("onnxruntime", "onnx", "run ONNX models").get_available_providers()
    provider = PROVIDERS[name]
    if provider not in available:
        raise ModelError(
            f"--provider {name}: this ONNX Runtime offers {', '.join(available)} "
            "(CUDA and TensorRT come with onnxruntime-gpu: pip install 'rfr-deploy[gpu]')"
        )
    return list(dict.fromkeys([provider, "CPUExecutionProvider"]))


def choose_providers(available: Sequence[str]) -> list[str]:
    """The installed providers of :data:`PREFERRED_PROVIDERS`, best first (CPU always last)."""
    chosen = [p for p in PREFERRED_PROVIDERS if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def _graph_locality(path: Path) -> tuple[int, bool]:
    """(receptive field read off the graph, whether tiling is exact).

    Each tensor carries how far its pixels reach into the input beyond one pixel (its span, in input
    pixels) and how many input pixels one of its pixels steps over (its stride): a convolution or pool
    widens the span by its kernel's extent times the stride it runs at, a strided one multiplies the
    stride; branches that meet take the widest span. A resize divides the stride by its constant scale
    and is counted as reaching one more of its input's pixels (a bound, not the exact reach)."""
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    kernels = {i.name: max(i.dims[2:]) for i in graph.initializer if len(i.dims) >= 3}
    scales = _small_constants(graph)
    nodes = [
        (node, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}) for node in graph.node
    ]
    # The exporter lowers a pixel unshuffle to Reshape + Transpose + Reshape: its block is that of the
    # DepthToSpace shuffle that undoes it (FFDNet), unknown without one.
    shuffle = max(
        (int(attrs["blocksize"]) for node, attrs in nodes if node.op_type == "DepthToSpace"), default=0
    )
    reach = {i.name: (0, 1) for i in graph.input}
    exact = True
    for node, attrs in nodes:
        known = [reach[name] for name in node.input if name in reach]
        if not known:  # constants
            continue
        op = node.op_type
        if op == "Transpose" and list(attrs.get("perm", ())) == UNSHUFFLE_PERM:
            op, attrs = "SpaceToDepth", {"blocksize": max(shuffle, 1)}
            exact = exact and shuffle > 0
        exact = exact and op not in NONLOCAL_OPS
        if op in ("Resize", "Upsample"):  # scales: Resize's third input, Upsample's second
            factors = scales.get(node.input[2 if op == "Resize" else 1]) if len(node.input) > 1 else None
            attrs = {"factor": float(max(factors[-2:]))} if factors is not None and factors.size >= 2 else {}
        weight = kernels.get(node.input[1]) if len(node.input) > 1 else None
        span, stride = max(s for s, _ in known), max(t for _, t in known)
        for name in node.output:
            reach[name] = _node_reach(op, attrs, weight, span, stride)
    span = max((reach[o.name][0] for o in graph.output if o.name in reach), default=0)
    return 1 + span, exact


def _node_reach(op: str, attrs: dict, weight_kernel: int | None, span: int, stride: int) -> tuple[int, int]:
    """(span, stride) of one node's output, from those of its widest input (see :func:`_graph_locality`)."""
    kernel = max(attrs.get("kernel_shape") or [weight_kernel or 1])
    extent = (kernel - 1) * max(attrs.get("dilations") or [1])
    step = max(attrs.get("strides") or [1])
    block = int(attrs.get("blocksize", 1))
    if op in ("Conv", "MaxPool", "AveragePool", "LpPool"):
        return span + extent * stride, stride * step
    if op == "ConvTranspose":
        return span + -(-extent // step) * stride, max(1, stride // step)
    if op == "SpaceToDepth":
        return span + (block - 1) * stride, stride * block
    if op == "DepthToSpace":
        return span, max(1, stride // block)
    if op in ("Resize", "Upsample"):
        factor = attrs.get("factor")
        return span + stride, stride if not factor else max(1, round(stride / factor))
    return span, stride


def _small_constants(graph) -> dict[str, np.ndarray]:
    """The graph's constants of at most 8 values (a resize's scales), by name, as arrays."""
    from onnx import numpy_helper

    found = {
        i.name: numpy_helper.to_array(i)
        for i in graph.initializer
        if int(np.prod(i.dims)) <= 8 and i.data_type in (1, 11)  # float, double
    }
    for node in graph.node:
        value = node.attribute[0] if node.op_type == "Constant" and node.attribute else None
        if value is not None and value.name == "value_floats" and len(value.floats) <= 8:
            found[node.output[0]] = np.asarray(value.floats, dtype=np.float32)
        elif value is not None and value.name == "value" and value.t.data_type in (1, 11):
            array = numpy_helper.to_array(value.t)
            if array.size <= 8:
                found[node.output[0]] = array
    return found


def _bytes_per_pixel(path: Path) -> float:
    """Rough activation memory per input pixel: widest layer in and out plus a 3×3 im2col buffer."""
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph
    widest = max((int(i.dims[0]) for i in graph.initializer if len(i.dims) == 4), default=64)
    return 4.0 * widest * (2 + 9)


def _cpu_budget() -> int:
    """A quarter of the host's available memory, at most :data:`DEFAULT_CPU_BUDGET`."""
    return min(DEFAULT_CPU_BUDGET, available_bytes("cpu") // 4)


def _static_dim(shape: Sequence, index: int) -> int | None:
    value = shape[index] if len(shape) > index else None
    return value if isinstance(value, int) else None


def _edge_padded(batch: np.ndarray, multiple: int) -> np.ndarray:
    """``batch`` padded to a multiple of ``multiple`` by repeating its edge where it is too small for the
    graph's reflect padding (a side of 1 with a multiple of 2), as the PyTorch model pads it; else as is."""
    pad_h, pad_w, mode = padding(*batch.shape[-2:], multiple)
    if mode == "reflect":
        return batch
    return np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
