"""The machine's own limits, measured in the bench run, and the work of one update, counted.

* :func:`conv_rate`: throughput of a 3×3, 64→64-channel convolution (the layer that makes up
  DnCNN and most of RIDNet) at the bench's image size, batch 1: fp32, and bf16 (fp16 on a GPU
  without bf16), in the faster of the two memory layouts, channels-last and the default (on an
  AVX2-only CPU the default layout's weight gradient is 4× faster, on AVX-512 CPUs channels-last
  is the faster throughout; on CUDA the mixed-precision modes run channels-last). CUDA: cuDNN
  autotuned, as the modes with CUDA graphs and mixed precision run it (TF32 allowed for fp32
  convolutions unless turned off, as in the fp32 modes).
* :func:`conv_train_rate`: the same convolution's forward and backward pass (input and weight
  gradients), the work an update does per layer: what the update could reach if it were nothing but
  such layers. Its gap to :func:`conv_rate` is the library's backward kernels, not the update's code.
* :func:`copy_bandwidth` (CUDA): a device-to-device copy of 1 GiB, bytes read plus written.
* :func:`update_flops`: floating-point operations of one update's forward and backward pass,
  counted by :class:`torch.utils.flop_counter.FlopCounterMode` on meta tensors (no arithmetic
  runs), falling back to a real pass at a small size scaled by the pixel count.

Per mode the bench then reports achieved GFLOP/s = FLOPs / time and the fraction of the
measured rate for the mode's precision.
"""

from __future__ import annotations

import copy
import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

CONV_CHANNELS = 64
MODE_PRECISION = {"bf16": "bf16", "bf16-unfused": "bf16", "amp": "bf16", "amp+graphs": "bf16"}
"""Precision of the convolutions of each bench mode (the others run fp32)."""


@dataclass
class Limits:
    conv_fp32_gflops: float
    conv_low_gflops: float | None
    """bf16 convolutions (fp16 on a GPU without bf16); None where not measured."""
    low_precision: str = "bf16"
    copy_gbps: float | None = None
    size: int = 0
    train_fp32_gflops: float | None = None
    """Forward + backward of the same convolution in fp32 (:func:`conv_train_rate`); None: not measured."""
    train_low_gflops: float | None = None
    """Forward + backward in bf16 (fp16 on a GPU without bf16); None: not measured."""
    when: str = ""
    """When in the run it was measured ('start', 'end', or 'for MODEL' at a model's own size)."""

    def rate_for(self, mode: str) -> float | None:
        """The forward convolution rate of ``mode``'s precision."""
        return self.conv_low_gflops if MODE_PRECISION.get(mode) == "bf16" else self.conv_fp32_gflops

    def train_rate_for(self, mode: str) -> float | None:
        """The convolution's forward + backward rate of ``mode``'s precision."""
        return self.train_low_gflops if MODE_PRECISION.get(mode) == "bf16" else self.train_fp32_gflops


def measure_limits(device: torch.device, size: int, low: str | None, repeats: int = 5) -> Limits:
    """Conv rates (forward, and forward + backward) in fp32 and ``low`` precision ('bf16', 'fp16' or
    None: skipped), and on CUDA the copy bandwidth."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(low or "")

    def rate(measure: Callable[..., float], precision: torch.dtype | None) -> float | None:
        return round(measure(device, precision, size, repeats), 1) if precision else None

    autotuning = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = autotuning or device.type == "cuda"  # as the fast modes run cuDNN
    try:
        return Limits(
            conv_fp32_gflops=rate(conv_rate, torch.float32),
            conv_low_gflops=rate(conv_rate, dtype),
            low_precision=low or "-",
            copy_gbps=round(copy_bandwidth(device, repeats), 1) if device.type == "cuda" else None,
            size=size,
            train_fp32_gflops=rate(conv_train_rate, torch.float32),
            train_low_gflops=rate(conv_train_rate, dtype),
        )
    finally:
        torch.backends.cudnn.benchmark = autotuning


def conv_flops(size: int, channels: int = CONV_CHANNELS, batch: int = 1) -> float:
    """Multiply-adds ×2 of a 3×3 ``channels``→``channels`` convolution on a ``size``² image."""
    return 2.0 * batch * channels * channels * 9 * size * size


def conv_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """GFLOP/s of a 3×3 64→64 convolution (forward), median of ``repeats`` timed batches; on the CPU
    the faster of the two layouts."""
    rates = []
    for conv, x in _conv_layers(device, dtype, size):
        forward = functools.partial(conv, x)
        with torch.no_grad():
            calls = _calls_per_batch(forward, device)
            seconds = median_seconds(forward, device, calls, repeats)
        rates.append(conv_flops(size) / seconds / 1e9)
    return max(rates)


def conv_train_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 5) -> float:
    """GFLOP/s of the same convolution's forward pass and its input and weight gradients (3× the
    forward's FLOPs), median of ``repeats`` timed batches; on the CPU the faster of the two layouts."""
    rates = []
    for conv, x in _conv_layers(device, dtype, size):
        step = functools.partial(
            _input_and_weight_gradients, conv, x.requires_grad_(True), torch.randn_like(x)
        )
        calls = _calls_per_batch(step, device)
        seconds = median_seconds(step, device, calls, repeats)
        rates.append(3 * conv_flops(size) / seconds / 1e9)
    return max(rates)


def _input_and_weight_gradients(conv: nn.Conv2d, x: torch.Tensor, upstream: torch.Tensor) -> object:
    return torch.autograd.grad(conv(x), (x, conv.weight), upstream)


def _conv_layers(device: torch.device, dtype: torch.dtype, size: int) -> list[tuple[nn.Conv2d, torch.Tensor]]:
    """A 3×3 64→64 convolution and a batch-1 input, once in channels-last layout and once in the default one."""
    conv = nn.Conv2d(CONV_CHANNELS, CONV_CHANNELS, 3, padding=1, bias=False).to(device, dtype)
    x = torch.randn(1, CONV_CHANNELS, size, size, device=device, dtype=dtype)
    cl = torch.channels_last
    return [(copy.deepcopy(conv).to(memory_format=cl), x.contiguous(memory_format=cl)), (conv, x)]


def copy_bandwidth(device: torch.device, repeats: int = 5, nbytes: int = 1 << 30) -> float:
    """GB/s of a device-to-device copy (bytes read plus bytes written)."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, 5, repeats)
    return 2 * nbytes / seconds / 1e9


def median_seconds(call: Callable[[], object], device: torch.device, calls: int, repeats: int) -> float:
    """Median seconds of one ``call`` over ``repeats`` batches of ``calls`` (after one warm-up batch)."""
    times = [time_calls(call, calls, device)[1] / calls for _ in range(repeats + 1)]
    return statistics.median(times[1:])


def time_calls(
    call: Callable[[], object], calls: int, device: torch.device, deadline: float = math.inf
) -> tuple[int, float]:
    """(calls made, seconds) of ``calls`` calls: CUDA events on a GPU; on the CPU ``perf_counter``,
    stopping early once ``deadline`` (a ``perf_counter`` time) has passed, after at least one call."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            call()
        end.record()
        end.synchronize()
        return calls, start.elapsed_time(end) / 1e3
    done, t0 = 0, time.perf_counter()
    while done < calls:
        call()
        done += 1
        if time.perf_counter() > deadline:
            break
    return done, time.perf_counter() - t0


def _calls_per_batch(call: Callable[[], object], device: torch.device, target: float = 0.02) -> int:
    """Calls per timed batch so that a batch lasts about ``target`` seconds (at least one)."""
    seconds = median_seconds(call, device, 1, 1)
    return max(1, min(200, int(target / max(seconds, 1e-6))))


def update_flops(model: nn.Module, channels: int, size: int) -> float | None:
    """FLOPs of one update's forward and backward pass on a ``channels``×``size``² image, batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    for device, side in ((torch.device("meta"), size), (torch.device("cpu"), min(size, 32))):
        try:
            net = copy.deepcopy(model).to(device).train()
            x = torch.rand(1, channels, side, side, device=device)
            sigma = torch.full((1,), 25 / 255, device=device)
            with FlopCounterMode(display=False) as counter:
                loss = nn.functional.mse_loss(net(x, sigma), x)
                loss.backward()
            return float(counter.get_total_flops()) * (size / side) ** 2
        except Exception:  # a network that cannot run on meta tensors: count a small real pass
            continue
    return None
