"""How much memory a model needs per pixel, how much the device has, and the square side that fits.

Networks differ too much (plain stacks, U-Nets, attention) for a formula, so a
small probe measures them: a forward pass on a 64×64 input records the largest
activation (inference) or the memory of the tensors autograd saves for the backward pass, each
storage once (training), and scales linearly with the pixel count. The result depends only on the network's
structure, so it is measured once per structure in a process (an adaptation asks before each of its
whole-image passes). :func:`side_that_fits` turns bytes per pixel and a budget into a tile or patch side.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

_PROBE = 64
SAVED_TO_PEAK = 1.25
"""A training step's peak over the activations autograd saves for it: they, plus the gradients in flight
at the peak of backward. With it the probe is 1.22× (DnCNN), 2.35× (CBDNet) and 1.31× (RIDNet) the
growth of a fresh process's peak memory over one step on a 512² image
(``benchmarks/results/training_step_memory.md``); until stop 53 it counted a tensor saved by two layers
twice and doubled the sum, 3.2-5.1× that growth."""
_MEASURED: dict[tuple, float] = {}
"""Bytes per pixel by :func:`_structure`."""


def bytes_per_pixel(model: nn.Module, channels: int, training: bool) -> float:
    """Approximate bytes of activations per input pixel, for inference or for a training step."""
    key = _structure(model, channels, training)
    if key not in _MEASURED:
        _MEASURED[key] = _measure(model, channels, training)
    return _MEASURED[key]


def _structure(model: nn.Module, channels: int, training: bool) -> tuple:
    """What the probe's result depends on: the network's class, its modules' classes and mode, the
    shape, dtype, device and trainability of each parameter, the input channels, and the pass."""
    modules = tuple((type(m).__module__, type(m).__qualname__, m.training) for m in model.modules())
    params = tuple((tuple(p.shape), p.dtype, str(p.device), p.requires_grad) for p in model.parameters())
    return modules, params, channels, training


def _measure(model: nn.Module, channels: int, training: bool, sigma: float = 0.1) -> float:
    device = next(model.parameters()).device
    x = torch.rand(1, channels, _PROBE, _PROBE, device=device)
    pixels = _PROBE * _PROBE
    if training:
        saved: dict[int, int] = {}  # bytes by storage: a tensor saved by two layers (a ReLU's output is
        # the next convolution's input) or a view of another is held once

        def pack(t: torch.Tensor):
            storage = t.untyped_storage()
            saved[storage.data_ptr()] = storage.nbytes()
            return t

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x.requires_grad_(False), sigma)
            out.float().mean().backward()
        model.zero_grad(set_to_none=True)
        return SAVED_TO_PEAK * sum(saved.values()) / pixels
    largest = 0

    def hook(_m, _i, out):
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(x, sigma)
    finally:
        for h in handles:
            h.remove()
    return 4.0 * largest / pixels  # input + output of the widest layer, plus skips held by the network


def available_bytes(device: torch.device | str) -> int:
    """Free memory on ``device``: CUDA's free memory, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def side_that_fits(per_pixel: float, pixels: int, budget: float, multiple: int, smallest: int) -> int | None:
    """None when ``pixels`` pixels of ``per_pixel`` bytes each fit in ``budget`` bytes, else the side of
    the largest square that does, rounded down to a multiple of ``multiple`` and at least ``smallest``."""
    if per_pixel * pixels <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel))
    return max(smallest, side - side % multiple)
