"""Choosing the compute device, what it can do (native bfloat16), and a record of the environment; the
settings every command shares about them (threads, random seeds)."""

from __future__ import annotations

import dataclasses
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


MAX_THREADS = 1024
"""The most threads ``--threads`` takes: far more than any machine has cores; thousands of threads fail
to start or crash the OpenMP runtime."""


def threads_field() -> Any:
    """The ``threads`` field of a settings dataclass, and so the ``--threads`` option generated from it
    (:func:`use_threads` applies it)."""
    return dataclasses.field(
        default=None,
        metadata={
            "min": 1,
            "max": MAX_THREADS,
            "help": "CPU threads for PyTorch [default: one per core]. Fewer leave cores to other work; more "
            "threads than free cores can make the work many times slower.",
        },
    )


SEED_MAX = 2**62
"""The largest seed (torch's generators take signed 64-bit seeds; runs add small offsets to theirs)."""


def seed_field() -> Any:
    """The ``seed`` field of a settings dataclass (default 0; 0 to :data:`SEED_MAX`)."""
    return dataclasses.field(default=0, metadata={"min": 0, "max": SEED_MAX})


def use_threads(threads: int | None) -> None:
    """Run PyTorch's CPU work on ``threads`` threads; None keeps its default (one per core). Fewer leave
    cores to other work: more threads than free cores can make an update many times slower."""
    if threads is not None:
        if not 1 <= threads <= MAX_THREADS:
            raise ConfigError(f"--threads must be within [1, {MAX_THREADS}], got {threads}")
        torch.set_num_threads(threads)


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
    dot products: twice fp32's rate on AMD, below it on Intel) or None (bf16 emulated): what the CPU
    has, as far as oneDNN's ISA cap (:func:`onednn_bf16_units`) lets its convolutions use it."""
    for probe, units in _BF16_UNIT_PROBES:
        if getattr(torch.cpu, probe, lambda: False)() and units in onednn_bf16_units():
            return units
    return None


_BF16_UNIT_PROBES = (("_is_amx_tile_supported", "AMX"), ("_is_avx512_bf16_supported", "AVX512-BF16"))
"""torch.cpu's probe for each kind of bf16 unit, the fastest first."""
_ALL_BF16_UNITS = tuple(units for _, units in _BF16_UNIT_PROBES)

_ONEDNN_BELOW_AVX512 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2")
"""The values of oneDNN's ``*_MAX_CPU_ISA`` that rule out its AVX-512 kernels."""

_ONEDNN_CAPPED_UNITS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys((*_ONEDNN_BELOW_AVX512, "AVX512_CORE", "AVX512_CORE_VNNI"), ()),
    **dict.fromkeys(("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_2_512"), ("AVX512-BF16",)),
}
"""The bf16 units left by the values of oneDNN's ``*_MAX_CPU_ISA`` (its dispatcher-control guide) that
rule out AMX; every other value (DEFAULT, the AMX ones, a later release's name) leaves them all."""


def onednn_bf16_units() -> tuple[str, ...]:
    """The bf16 units oneDNN may use by the ``ONEDNN_MAX_CPU_ISA`` (else ``DNNL_MAX_CPU_ISA``)
    environment variable, which oneDNN reads once, at its first use."""
    setting = onednn_isa_setting()
    return _ONEDNN_CAPPED_UNITS.get(setting[1].upper(), _ALL_BF16_UNITS) if setting else _ALL_BF16_UNITS


def cpu_avx512() -> bool:
    """Whether oneDNN may run AVX-512 kernels here: the CPU has AVX-512 (AMD's Zen 4 and later, Intel's
    Xeons since Skylake) and ``ONEDNN_MAX_CPU_ISA`` does not cap oneDNN below it."""
    probe = getattr(torch.cpu, "_is_avx512_supported", None)
    has = probe() if probe else torch.backends.cpu.get_cpu_capability() == "AVX512"
    setting = onednn_isa_setting()
    return bool(has) and not (setting and setting[1].upper() in _ONEDNN_BELOW_AVX512)


def onednn_isa_setting() -> tuple[str, str] | None:
    """The environment variable that caps oneDNN's ISA and its value, None where neither is set."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if os.environ.get(name, "").strip():
            return name, os.environ[name].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module says."""
    return read_cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU's vendor as the processor reports it ('GenuineIntel', 'AuthenticAMD'): Linux's
    /proc/cpuinfo, else the platform module's processor string (Windows names it), '' where unknown."""
    vendor = read_cpuinfo("vendor_id")
    if not vendor:
        processor = platform.processor()
        vendor = next((name for name in ("AuthenticAMD", "GenuineIntel") if name in processor), "")
    return vendor


def read_cpuinfo(field: str, path: str = "/proc/cpuinfo") -> str:
    """The first value of ``field`` in /proc/cpuinfo, '' where there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return ""


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA; nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    units = cpu_bf16_units() or "no native bf16"
    cap = onednn_isa_setting()
    capped = f" under {cap[0]}={cap[1]}" if cap else ""
    return f"CPU ({cpu_model()}, {units}{capped}, {torch.get_num_threads()} threads)"


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
