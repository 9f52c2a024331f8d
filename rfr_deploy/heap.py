"""Keeping the memory an update frees inside the process (Linux with glibc), so the next one reuses it.

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults, a block above the mmap threshold
(128 KiB, raised as such blocks are freed, at most 32 MiB) is mapped fresh for each allocation and
unmapped when freed, and the free space at the top of the heap is given back to the system once it
exceeds the trim threshold. A training update allocates every activation and gradient anew and frees
them all at its end, so each update page-faults all of them back in: one 4 KiB zero-filled page at a
time. DnCNN's bf16 update at 256² took 49,000 minor page faults and 226 ms, and 1 fault and 172 ms
with the memory kept; at 512² 469,000 faults and 1,260 ms against 343 and 662 ms (2-core Intel Xeon
with AMX, ``benchmarks/results/freed_memory_cpu_amx.md``).

:func:`keep_freed_memory` turns both off with ``mallopt``: no per-allocation mappings
(``M_MMAP_MAX = 0``) and no trimming (``M_TRIM_THRESHOLD = -1``). The process then keeps the size of
its largest update until it exits, as PyTorch's CUDA caching allocator does on a GPU. The setting is
process-wide and stays on; elsewhere (macOS, Windows, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_kept = False


def glibc_version() -> str | None:
    """'glibc 2.x' where the process runs on glibc, else None."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or no such name (macOS, musl)
        return None
    return version if version and version.startswith("glibc") else None


def keep_freed_memory() -> bool:
    """Makes glibc keep freed blocks in the process (once per process); whether they are now kept."""
    global _kept
    if _kept or glibc_version() is None:
        return _kept
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no symbols of the process to look in (a static interpreter)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
    return _kept


def keep_freed_memory_on(device: torch.device, wanted: bool = True) -> bool:
    """:func:`keep_freed_memory` where ``device`` is the CPU and ``wanted`` (a job's or an adaptation's
    ``keep_memory``); whether freed memory is kept."""
    if device.type == "cpu" and wanted:
        return keep_freed_memory()
    return _kept


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has taken effect in this process."""
    return _kept
