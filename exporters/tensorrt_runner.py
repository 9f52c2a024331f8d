"""Load a TensorRT engine written by rfr-deploy and run it on PyTorch CUDA tensors.

::

    from exporters.tensorrt_runner import TensorRTDenoiser
    engine = TensorRTDenoiser("photo_rfr.engine")     # checks the sidecar: TensorRT version, GPU, sha256
    clean = engine(noisy_cuda)                         # 1×C×H×W float32 CUDA tensor in, same out

I/O buffers are torch CUDA tensors (256-byte aligned, copied when a view is not):
their ``data_ptr()`` goes to ``IExecutionContext.set_tensor_address`` and the engine
is enqueued with ``execute_async_v3`` on a CUDA stream the runner owns (never the
legacy default stream, where TensorRT would add device synchronisations). The
owned stream waits for PyTorch's current stream before the engine runs, and the
current stream waits for the owned one after it, so the result is ordered with
the PyTorch work before and after it without host synchronisation; the buffers
are marked as used on the owned stream (``record_stream``) so PyTorch's caching
allocator does not hand them out early. Everything runs on the runner's device
(``device=``), whatever the current device is. No pycuda, no second CUDA context
(see exporters/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rfr_deploy.errors import ConfigError
from rfr_deploy.models.denoiser import graph_size
from rfr_deploy.optional import import_optional

from .engine_sidecar import EngineProfile, EngineSidecar, RuntimeInfo, sidecar_path
from .errors import EngineMismatchError


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line :class:`~rfr_deploy.errors.MissingDependencyError`."""
    return import_optional("tensorrt", "trt", "build and run TensorRT engines")


def require_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("TensorRT engines need an NVIDIA GPU, and PyTorch sees no CUDA device here")


def current_runtime(device: int | None = None) -> RuntimeInfo:
    """TensorRT version, GPU name and compute capability of this process's CUDA device."""
    import torch

    trt = import_tensorrt()
    require_cuda()
    index = torch.cuda.current_device() if device is None else int(device)
    major, minor = torch.cuda.get_device_capability(index)
    return RuntimeInfo(trt.__version__, torch.cuda.get_device_name(index), f"{major}.{minor}")


ALIGNMENT = 256
"""Byte alignment TensorRT requires of I/O tensor addresses."""

_LOGGER = None


def tensorrt_logger(trt):
    """The process's one TensorRT logger: Polygraphy's where it is installed (its loaders log through it),
    else one created on first use. TensorRT keeps a single logger per process, so none is made per call."""
    global _LOGGER
    if _LOGGER is None:
        try:
            from polygraphy.backend.trt.util import get_trt_logger
        except ImportError:
            _LOGGER = trt.Logger(trt.Logger.WARNING)
        else:
            _LOGGER = get_trt_logger()
    return _LOGGER


def deserialize(trt, plan: bytes):
    engine = trt.Runtime(tensorrt_logger(trt)).deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineMismatchError("TensorRT could not deserialize the engine (see the TensorRT log above)")
    return engine


class TensorRTDenoiser:
    """A deserialized engine with one execution context and its own CUDA stream; call it like the PyTorch denoiser."""

    def __init__(self, engine_path: str | os.PathLike, *, device: int | None = None):
        import torch

        trt = import_tensorrt()
        path = Path(engine_path)
        sidecar = EngineSidecar.read(sidecar_path(path))
        require_cuda()
        index = torch.cuda.current_device() if device is None else int(device)
        sidecar.check_runtime(current_runtime(index))
        sidecar.check_engine_file(path)
        if sidecar.strip_plan:
            raise EngineMismatchError(
                f"{path}: weight-stripped engine; refit it (build_or_refit_engine) first"
            )
        with torch.cuda.device(index):
            engine = deserialize(trt, path.read_bytes())
        noise_map = any(t.name == "sigma" for t in sidecar.io)
        multiple = int(sidecar.metadata.get("model.pad_multiple") or 1)
        self._setup(engine, sidecar.profile, noise_map, multiple, index)
        self.sidecar = sidecar

    @classmethod
    def from_engine(cls, engine, profile: EngineProfile, model, device: int) -> TensorRTDenoiser:
        """Wrap an engine object already in memory on ``device``, built for ``model`` (used to verify fresh
        builds and refits)."""
        runner = cls.__new__(cls)
        runner._setup(engine, profile, model.meta.noise_map, model.entry.pad_multiple, device)
        runner.sidecar = None
        return runner

    def _setup(self, engine, profile: EngineProfile, noise_map: bool, pad_multiple: int, device: int) -> None:
        import torch

        self.device = torch.device("cuda", device)
        with torch.cuda.device(self.device):
            self.engine = engine
            self.context = engine.create_execution_context()
            if self.context is None:
                raise EngineMismatchError(
                    "TensorRT could not create an execution context (out of GPU memory?)"
                )
            self.stream = torch.cuda.Stream(self.device)
        self.profile = profile
        self.noise_map = noise_map
        self.pad_multiple = pad_multiple
        """The network's size multiple: an image too small for the graph's reflect padding is edge-padded to
        it first and cropped back (:func:`rfr_deploy.models.denoiser.graph_size`), as PyTorch pads it."""
        self.tensor_names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    @property
    def default_sigma(self) -> float | None:
        """The noise level (σ/255) stored at export for noise-map engines (the sidecar's ``sigma``), or None."""
        value = self.sidecar.metadata.get("sigma", "") if self.sidecar is not None else ""
        return float(value) if value else None

    def __call__(self, noisy, sigma=None):
        """``noisy``: ``N×C×H×W`` float32 CUDA tensor on the runner's device, in [0, 1]; ``sigma``: σ/255
        (default: :attr:`default_sigma`, as ONNX Runtime's runner and the C++ sample take it)."""
        import torch
        import torch.nn.functional as F

        if not (noisy.is_cuda and noisy.dtype == torch.float32 and noisy.ndim == 4):
            raise ConfigError("the engine takes an N×C×H×W float32 CUDA tensor")
        if noisy.device != self.device:
            raise ConfigError(f"the engine runs on {self.device}, the input is on {noisy.device}")
        n, _, h, w = noisy.shape
        run_h, run_w = graph_size(h, w, self.pad_multiple)
        self.profile.check(n, run_h, run_w)
        sigma = self.default_sigma if sigma is None else sigma
        if self.noise_map and sigma is None:
            raise ConfigError("this engine takes a noise level: pass sigma (σ/255)")
        if (run_h, run_w) == (h, w):
            return self._enqueue(noisy, sigma)
        padded = F.pad(noisy, (0, run_w - w, 0, run_h - h), mode="replicate")
        return self._enqueue(padded, sigma)[..., :h, :w].contiguous()

    def _enqueue(self, noisy, sigma):
        """Run the engine on ``noisy`` (a size its graph takes) on the runner's stream, ordered with
        PyTorch's current stream; returns the output tensor."""
        import torch

        n = noisy.shape[0]
        with torch.cuda.device(self.device):
            current = torch.cuda.current_stream(self.device)
            buffers = [bind_tensor(self.context, "noisy", noisy.contiguous(), tuple(noisy.shape))]
            if self.noise_map:
                s = torch.as_tensor(sigma, dtype=torch.float32, device=self.device).reshape(-1).expand(n)
                buffers.append(bind_tensor(self.context, "sigma", s.contiguous(), (n,)))
            shape = tuple(self.context.get_tensor_shape("denoised"))
            out = bind_tensor(
                self.context, "denoised", torch.empty(shape, dtype=torch.float32, device=self.device)
            )
            self.stream.wait_stream(current)  # the inputs are ready on PyTorch's stream
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT failed to enqueue the engine (see the TensorRT log)")
            for buffer in (*buffers, out):
                buffer.record_stream(self.stream)  # not reused by the allocator before the engine is done
            current.wait_stream(self.stream)  # later PyTorch work sees the output
        return out

    def denoise(self, pixels: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """``H×W×C`` float array in [0, 1] → ``H×W×C`` float32 (``sigma`` in grey levels)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32)).permute(2, 0, 1)[None].to(self.device)
        out = self(x, None if sigma is None else sigma / 255.0)
        return out[0].permute(1, 2, 0).cpu().numpy()


def aligned(tensor):
    """``tensor`` itself when its address is :data:`ALIGNMENT`-byte aligned, else an aligned contiguous copy
    (``.contiguous()`` keeps a view's offset into its storage)."""
    import torch

    if tensor.data_ptr() % ALIGNMENT == 0:
        return tensor
    size = tensor.element_size()
    spare = torch.empty(tensor.numel() + ALIGNMENT // size, dtype=tensor.dtype, device=tensor.device)
    start = (-spare.data_ptr() % ALIGNMENT) // size
    copy = spare[start : start + tensor.numel()].view(tensor.shape)
    copy.copy_(tensor)
    return copy


def bind_tensor(context, name: str, tensor, input_shape: tuple[int, ...] | None = None):
    """Set ``name``'s input shape (inputs only) and address on ``context``; returns the tensor bound
    (an aligned copy where needed), which must stay alive until the engine has run."""
    tensor = aligned(tensor)
    if input_shape is not None and not context.set_input_shape(name, input_shape):
        raise EngineMismatchError(
            f"TensorRT refused the shape {input_shape} for '{name}' (outside the profile?)"
        )
    if not context.set_tensor_address(name, tensor.data_ptr()):
        raise EngineMismatchError(f"TensorRT refused the address of '{name}'")
    return tensor
