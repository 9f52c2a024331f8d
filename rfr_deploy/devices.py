"""Choosing the compute device, what it can do (native bfloat16), and a record of the environment."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import Any

import torch

from rfr_deploy.errors import ConfigError
from rfr_deploy.heap import freed_memory_kept
from rfr_deploy.version import __version__


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' fails clearly without a GPU."""
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but PyTorch sees no CUDA device")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{name}' (use auto, cpu or cuda)") from exc


def bf16_supported(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes bfloat16 natively (not emulated)."""
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3 has no including_emulation
            return bool(torch.cuda.is_bf16_supported())


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512-BF16 or AMX), not emulated."""
    return cpu_bf16_units() is not None


def cpu_bf16_units() -> str | None:
    """'AMX' (matrix tiles: bf16 convolutions several times faster than fp32), 'AVX512-BF16' (vector
    dot products: about twice), or None (bf16 emulated, slower than fp32)."""
    for name, units in (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16")):
        if getattr(torch.cpu, name, lambda: False)():
            return units
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA; nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    units = cpu_bf16_units() or "no native bf16"
    return f"CPU ({cpu_model()}, {units}, {torch.get_num_threads()} threads)"


def describe_environment(device: torch.device) -> dict[str, Any]:
    """The machine and versions behind a run's figures (bench reports, evaluations, benchmark results)."""
    env: dict[str, Any] = {
        "device": describe_device(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "freed_memory": "kept in the process" if freed_memory_kept() else "the C library's defaults",
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "rfr_deploy": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        env["gpu_capability"] = ".".join(str(v) for v in torch.cuda.get_device_capability(device))
        env["bf16"] = bf16_supported(device)
    return env
