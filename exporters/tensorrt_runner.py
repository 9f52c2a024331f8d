"""Load a TensorRT engine written by rfr-deploy and run it on PyTorch CUDA tensors.

::

    from exporters.tensorrt_runner import TensorRTDenoiser
    engine = TensorRTDenoiser("photo_rfr.engine")     # checks the sidecar: TensorRT version, GPU, sha256
    clean = engine(noisy_cuda)                         # 1×C×H×W float32 CUDA tensor in, same out

I/O buffers are torch CUDA tensors: their ``data_ptr()`` goes to
``IExecutionContext.set_tensor_address`` and the engine is enqueued with
``execute_async_v3`` on PyTorch's current CUDA stream. The result is therefore
ordered with every PyTorch operation before and after it, without host
synchronisation, and memory comes from PyTorch's caching allocator (no pycuda,
no second CUDA context; see exporters/README.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rfr_deploy.errors import ConfigError, MissingDependencyError

from .engine_sidecar import EngineProfile, EngineSidecar, RuntimeInfo, sidecar_path
from .errors import EngineMismatchError


def import_tensorrt():
    """The ``tensorrt`` module, or a one-line :class:`MissingDependencyError`."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError("tensorrt", "trt", "build and run TensorRT engines") from exc
    return trt


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


def deserialize(trt, plan: bytes, logger):
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    if engine is None:
        raise EngineMismatchError("TensorRT could not deserialize the engine (see the TensorRT log above)")
    return engine


class TensorRTDenoiser:
    """A deserialized engine with one execution context; call it like the PyTorch denoiser."""

    def __init__(self, engine_path: str | os.PathLike, *, device: int | None = None):
        trt = import_tensorrt()
        path = Path(engine_path)
        sidecar = EngineSidecar.read(sidecar_path(path))
        sidecar.check_runtime(current_runtime(device))
        sidecar.check_engine_file(path)
        if sidecar.strip_plan:
            raise EngineMismatchError(
                f"{path}: weight-stripped engine; refit it (build_or_refit_engine) first"
            )
        logger = trt.Logger(trt.Logger.WARNING)
        engine = deserialize(trt, path.read_bytes(), logger)
        self._setup(engine, sidecar.profile, any(t.name == "sigma" for t in sidecar.io))
        self.sidecar = sidecar
        self._logger = logger

    @classmethod
    def from_engine(cls, engine, profile: EngineProfile, noise_map: bool) -> TensorRTDenoiser:
        """Wrap an engine object already in memory (used to verify fresh builds and refits)."""
        runner = cls.__new__(cls)
        runner._setup(engine, profile, noise_map)
        runner.sidecar = None
        return runner

    def _setup(self, engine, profile: EngineProfile, noise_map: bool) -> None:
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineMismatchError("TensorRT could not create an execution context (out of GPU memory?)")
        self.profile = profile
        self.noise_map = noise_map
        self.tensor_names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]

    def __call__(self, noisy, sigma=None):
        """``noisy``: ``N×C×H×W`` float32 CUDA tensor in [0, 1]; ``sigma``: σ/255 (float or N values)."""
        import torch

        if not (noisy.is_cuda and noisy.dtype == torch.float32 and noisy.ndim == 4):
            raise ConfigError("the engine takes an N×C×H×W float32 CUDA tensor")
        n, _, h, w = noisy.shape
        self.profile.check(n, h, w)
        x = noisy.contiguous()
        self.context.set_input_shape("noisy", tuple(x.shape))
        self.context.set_tensor_address("noisy", x.data_ptr())
        keep = [x]
        if self.noise_map:
            if sigma is None:
                raise ConfigError("this engine takes a noise level: pass sigma (σ/255)")
            s = (
                torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
                .reshape(-1)
                .expand(n)
                .contiguous()
            )
            self.context.set_input_shape("sigma", (n,))
            self.context.set_tensor_address("sigma", s.data_ptr())
            keep.append(s)
        out = torch.empty(
            tuple(self.context.get_tensor_shape("denoised")), dtype=torch.float32, device=x.device
        )
        self.context.set_tensor_address("denoised", out.data_ptr())
        stream = torch.cuda.current_stream(x.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT failed to enqueue the engine (see the TensorRT log)")
        # The inputs are freed into PyTorch's cache for this same stream: later work is ordered after ours.
        del keep
        return out

    def denoise(self, pixels: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """``H×W×C`` float array in [0, 1] → ``H×W×C`` float32 (``sigma`` in grey levels)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32)).permute(2, 0, 1)[None].cuda()
        out = self(x, None if sigma is None else sigma / 255.0)
        return out[0].permute(1, 2, 0).cpu().numpy()
