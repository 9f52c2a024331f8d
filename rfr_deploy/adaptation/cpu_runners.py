"""CPU step runners: the eager update with channels-last weights, in fp32 or with bf16 convolutions.

:class:`ChannelsLastRunner` is the eager update with the network in channels-last layout, which
oneDNN's convolutions prefer: 1.1-1.4× faster for every zoo network in
``benchmarks/results/speed_cpu.md``. ``torch.compile`` on top of it is not used: no steady-state
gain (``benchmarks/results/speed_cpu_compile.md``) for seconds to tens of seconds of compilation.

:class:`Bf16Runner` adds bf16 autocast: the convolutions (forward and backward) run in bfloat16
on oneDNN's AVX512-BF16 / AMX kernels, while the master weights, their gradients, Adam's moments
and the loss stay fp32. It is chosen by ``amp='bf16'`` on a CPU with native bf16, and would be
by ``amp='auto'`` there if :data:`CPU_BF16_AUTO` said the quality check had passed (faster, and the
adaptation gain within 0.01 dB of fp32's): it has not, see there. Whether the CPU has native bf16:
:func:`rfr_deploy.devices.cpu_native_bf16`.
"""

from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn

from rfr_deploy.adaptation.update import EagerRunner, UpdateContext
from rfr_deploy.devices import cpu_native_bf16
from rfr_deploy.errors import ConfigError, first_line

CPU_BF16_AUTO = False
"""Whether ``amp='auto'`` picks bf16 convolutions on CPUs with native bf16 (see the module notes).

False: the quality check fails on the colour network. At the CPU's default Gaussian budget (640
updates on 64² patches, ``ema`` 0.95, continued to 1280;
``benchmarks/results/budget_*_s25_crop256_p64_bf16.md``: 4 central 256² crops each, official
weights, σ = 25, raw networks) bf16 is 1.8× faster per update and adapts the gray DnCNN-B like fp32
(within 0.007 dB at every m), but leaves the colour CDnCNN-B 0.05-0.10 dB below fp32 at every m, over
the 0.01 dB allowed. The earlier check at M = 40 (``bf16_cpu_quality_cbsd68_raw.md``) had found
0.0138 dB. ``amp='bf16'`` still asks for the bf16 update explicitly."""


def cpu_precision(amp: str) -> str:
    """'bf16' or 'fp32' for ``config.amp`` on this CPU (fp16 has no fast CPU kernels: fp32)."""
    if amp == "bf16":
        if not cpu_native_bf16():
            raise ConfigError("amp='bf16' but this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
        return "bf16"
    return "bf16" if amp == "auto" and CPU_BF16_AUTO and cpu_native_bf16() else "fp32"


def cpu_fast_runner(context: UpdateContext) -> ChannelsLastRunner | None:
    """The channels-last runner (bf16 where :func:`cpu_precision` says so) for CPU tensors and
    convolutional networks, else None."""
    if context.device.type != "cpu" or not has_convolutions(context.model):
        return None
    runner = Bf16Runner if cpu_precision(context.config.amp) == "bf16" else ChannelsLastRunner
    return runner(context)


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


class ChannelsLastRunner(EagerRunner):
    """The eager update with the network's weights in channels-last (NHWC) layout.

    oneDNN then runs every convolution, forward and backward, in NHWC without per-layer
    reorders; the arithmetic is the same up to summation order. :meth:`finish` hands the
    network back in the default layout.
    """

    name = "eager+channels-last"

    def __init__(self, context: UpdateContext):
        context.model.to(memory_format=torch.channels_last)
        super().__init__(context)
        self._checked = False

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor:
        if self._checked:
            return super().step(index, k, offsets)
        # A network whose code assumes contiguous activations (``view``) fails on the first update,
        # before the optimizer step: redo that update in the default layout.
        state = self.generator.get_state()
        try:
            loss = super().step(index, k, offsets)
        except RuntimeError as exc:
            warnings.warn(f"channels-last layout not used: {first_line(exc)}", stacklevel=2)
            self.finish()
            self.optimizer.zero_grad(set_to_none=True)
            self.generator.set_state(state)
            self.name = self.name.replace("+channels-last", "")
            loss = super().step(index, k, offsets)
        self._checked = True
        return loss

    def finish(self) -> None:
        self.model.to(memory_format=torch.contiguous_format)


class Bf16Runner(ChannelsLastRunner):
    """The channels-last update with the convolutions under bf16 autocast (fp32 weights, Adam, loss)."""

    name = "eager+channels-last+bf16"

    def forward_context(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cpu", dtype=torch.bfloat16)
