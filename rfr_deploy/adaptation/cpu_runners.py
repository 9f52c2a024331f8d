"""CPU step runners: the eager update with fused Adam, with channels-last weights, in fp32 or with bf16
convolutions.

:class:`ChannelsLastRunner` is the eager update with the network in channels-last layout, which
oneDNN's AVX-512 convolutions prefer: 1.1-1.4× faster for every zoo network in
``benchmarks/results/speed_cpu.md``; on CPUs without AVX-512 the update keeps the default layout
(:class:`FusedAdamRunner`, :func:`channels_last_updates_pay`). ``torch.compile`` on top of it is not
used: no steady-state gain (``benchmarks/results/speed_cpu_compile.md``) for seconds to tens of seconds
of compilation.

:class:`Bf16Runner` adds bf16 autocast: the convolutions (forward and backward) run in bfloat16
on oneDNN's AVX512-BF16 / AMX kernels, while the master weights, their gradients, Adam's moments
and the loss stay fp32; each convolution and the ReLU after it run as one oneDNN call
(:mod:`rfr_deploy.adaptation.fused_conv_relu`: 1.15× on DnCNN, AMX CPU,
``benchmarks/results/speed_cpu_amx.md``); the last updates of a round
(:attr:`~rfr_deploy.adaptation.config.AdaptConfig.fp32_tail`, 160) run their forward pass in fp32, so
that the fp32 network returned is fitted to fp32 arithmetic (a round no longer than that gets the fp32
runner); their convolution + ReLU pairs still run the backward convolutions in bf16
(:attr:`~rfr_deploy.adaptation.config.AdaptConfig.tail_backward`). It is chosen by ``amp='bf16'`` on a CPU with native bf16, and
by ``amp='auto'`` on the CPUs :data:`CPU_BF16_AUTO` names (faster there, and the adaptation gain
measured within 0.01 dB of fp32's).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable

import torch
from torch.torch_version import TorchVersion

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.fused_conv_relu import find_pairs, fused_conv_relu, fusion_available
from rfr_deploy.adaptation.update import EagerRunner, UpdateContext
from rfr_deploy.devices import cpu_avx512, cpu_bf16_units, cpu_native_bf16, cpu_vendor
from rfr_deploy.errors import ConfigError, first_line
from rfr_deploy.layout import has_convolutions

CPU_BF16_AUTO: tuple[tuple[str, str | None], ...] = (("AMX", None), ("AVX512-BF16", "AuthenticAMD"))
"""The CPUs on which ``amp='auto'`` picks the bf16 update: (bf16 units as
:func:`rfr_deploy.devices.cpu_bf16_units` names them, vendor as :func:`rfr_deploy.devices.cpu_vendor`
reports it, None for any). Each is a CPU where bf16 was measured faster and its adaptation gain within
0.01 dB of fp32's, through the CLI defaults (640 updates on 64² patches, ``ema`` 0.95, SURE, the last
160 updates in fp32: :attr:`~rfr_deploy.adaptation.config.AdaptConfig.fp32_tail`), first 4 central 256²
crops, σ = 25, official weights (``benchmarks/results/table{2,3}_s25_crop256_*``).

AMX (Intel Xeon, 2 cores): bf16 / fp32 gain Set12 +0.1212 / +0.1214 dB, CBSD68 +0.0246 / +0.0250,
McMaster +0.2433 / +0.2417, Kodak24 +0.0536 / +0.0546; σ estimated: Set12 +0.0670 / +0.0676, CBSD68
+0.0184 / +0.0249 (``*_bf16tail.md`` against ``*_amx.md``); the whole adaptation 1.58-1.89× faster.
What bf16 gives up: checkpoints from its bf16 part score poorly in fp32, so the keeper chooses among
the last weights only (CBSD68 101085, σ estimated: −0.022 against fp32's +0.002 from update 320).

AVX512-BF16 without AMX: the gain with oneDNN's AVX512-BF16 kernels (the same machine under
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``, ``*_bf16tail_avx512bf16.md``): Set12 +0.1236, CBSD68 +0.0200,
McMaster +0.2435, Kodak24 +0.0522; σ estimated Set12 +0.0671, CBSD68 +0.0182, each within 0.01 dB of
fp32's above. Speed is the vendor's: on the AMD EPYC of the earlier tables those kernels run a 3×3
64→64 convolution at 2× the fp32 rate (398 against 199 GFLOP/s) and the 64² update in 0.096 s against
0.176 s on one thread (``budget_*_s25_crop256_p64_bf16.md``); on the Intel Xeon under the cap at 0.64× (230 against
360, ``conv_passes_cpu_cap_avx512bf16.md``), the 64² update 89 ms against 61 ms in fp32
(``speed_cpu_cap_avx512bf16_64.md``). So AMD's AVX512-BF16 gets bf16, Intel's (Cooper Lake, or an
AMX CPU capped below AMX) keeps fp32. The camera default (10 updates) runs in fp32 throughout;
``amp='bf16'`` asks for bf16 on any CPU with native bf16."""


CPU_FUSED_ADAM = (2, 4)
"""First torch release with Adam's fused CPU kernel (``torch.optim.Adam(fused=True)`` on CPU tensors)."""


def cpu_fused_adam(version: str | None = None) -> bool:
    """Whether torch ``version`` (this one by default) has Adam's fused CPU kernel."""
    return TorchVersion(version or torch.__version__) >= CPU_FUSED_ADAM


def cpu_precision(amp: str) -> str:
    """'bf16' or 'fp32' for ``config.amp`` on this CPU (fp16 has no fast CPU kernels: fp32)."""
    if amp == "bf16":
        if not cpu_native_bf16():
            raise ConfigError("amp='bf16' but this CPU has no native bfloat16 (AVX512-BF16 or AMX)")
        return "bf16"
    return "bf16" if amp == "auto" and bf16_picked_by_auto() else "fp32"


def bf16_picked_by_auto() -> bool:
    """Whether this CPU (its bf16 units and vendor) is one :data:`CPU_BF16_AUTO` names."""
    units = cpu_bf16_units()
    return any(units == u and vendor in (None, cpu_vendor()) for u, vendor in CPU_BF16_AUTO)


def cpu_fast_runner(context: UpdateContext) -> FusedAdamRunner | None:
    """For CPU tensors and convolutional networks, the bf16 runner where :func:`cpu_precision` says so,
    else the channels-last one where :func:`channels_last_updates_pay`, else the default layout with
    fused Adam; None for other tensors and networks."""
    if context.device.type != "cpu" or not has_convolutions(context.model):
        return None
    if cpu_precision(context.config.amp) == "bf16" and bf16_updates(context.config) > 0:
        return Bf16Runner(context)
    return ChannelsLastRunner(context) if channels_last_updates_pay() else FusedAdamRunner(context)


def bf16_updates(config: AdaptConfig) -> float:
    """How many of a round's updates a bf16 runner runs in bf16: all but the last ``fp32_tail``
    (all of them where ``steps`` is not set)."""
    return math.inf if config.steps is None else max(0, config.steps - config.fp32_tail)


def channels_last_updates_pay() -> bool:
    """Whether the update runs faster with channels-last weights on this CPU: where oneDNN may use
    AVX-512 (:func:`~rfr_deploy.devices.cpu_avx512`; 1.1-1.4× on the AMD EPYC with AVX512-BF16 and the
    Intel Xeon with AMX of ``benchmarks/results/speed_cpu*.md``). Below AVX-512 oneDNN has no fast NHWC
    weight-gradient kernel: on an AVX2-only AMD EPYC (Zen 2) a 3×3 64→64 convolution's weight gradient at
    256² ran at 29.8 GFLOP/s in channels-last against 121.4 in the default layout
    (``conv_passes_cpu_zen2.md``), and DnCNN's update at 0.46× the default layout's speed at 256², 0.93×
    at 64², RIDNet's at 0.51× and MIRNet's at 0.62× at 256² (``speed_cpu_zen2*.md``). Whole-image passes
    keep channels-last there (:mod:`rfr_deploy.layout`): forward convolutions have no such gap
    (``inference_layout_cpu_zen2.md``)."""
    return cpu_avx512()


class FusedAdamRunner(EagerRunner):
    """The eager update with Adam's fused CPU kernel where this torch has it: one pass over each
    parameter instead of a dozen ``_foreach`` passes (0.82 against 1.88 ms per DnCNN step on 2 cores,
    ``benchmarks/results/cpu_job_parts_amx.md``); same update up to rounding. In the default layout, it is
    what ``fast='auto'`` runs on CPUs where channels-last updates do not pay
    (:func:`channels_last_updates_pay`)."""

    name = "eager+fused-adam" if cpu_fused_adam() else "eager"

    def adam_options(self) -> dict[str, bool]:
        return {"fused": True} if cpu_fused_adam() else {}


class ChannelsLastRunner(FusedAdamRunner):
    """The eager update (fused Adam) with the network's weights in channels-last (NHWC) layout.

    oneDNN then runs every convolution, forward and backward, in NHWC without per-layer
    reorders; the arithmetic is the same up to summation order. :meth:`finish` hands the
    network back in the default layout.
    """

    name = "eager+channels-last"

    def __init__(self, context: UpdateContext):
        context.model.to(memory_format=torch.channels_last)
        super().__init__(context)
        self._checked = False

    def fallbacks(self) -> list[tuple[str, Callable[[], None]]]:
        """What the first update may undo, in order, if it fails: (what, how)."""
        return [("channels-last layout", self._drop_channels_last)]

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor:
        if self._checked:
            return super().step(index, k, offsets)
        # A network whose code assumes contiguous activations (``view``), or a oneDNN call this CPU
        # lacks, fails on the first update, before the optimizer step: undo the speed-ups one by
        # one and redo that update.
        state, fallbacks = self.generator.get_state(), self.fallbacks()
        while True:
            try:
                loss = super().step(index, k, offsets)
                break
            except RuntimeError as exc:
                if not fallbacks:
                    raise
                what, undo = fallbacks.pop(0)
                warnings.warn(f"{what} not used: {first_line(exc)}", stacklevel=2)
                undo()
                self.optimizer.zero_grad(set_to_none=True)
                self.generator.set_state(state)
        self._checked = True
        return loss

    def _drop_channels_last(self) -> None:
        self.finish()
        self.name = self.name.replace(ChannelsLastRunner.name, FusedAdamRunner.name)

    def finish(self) -> None:
        self.model.to(memory_format=torch.contiguous_format)


class Bf16Runner(ChannelsLastRunner):
    """The channels-last update with the convolutions under bf16 autocast (fp32 weights, Adam, loss),
    each convolution + ReLU pair in one oneDNN call (:mod:`~rfr_deploy.adaptation.fused_conv_relu`)."""

    name = "eager+channels-last+bf16"

    def __init__(self, context: UpdateContext, fuse: bool = True):
        super().__init__(context)
        self._pairs = find_pairs(self.model) if fusion_available(torch.bfloat16) else []
        if not fuse:
            self._unfuse()
        self._bf16_updates = bf16_updates(context.config)
        self._tail_grads = torch.bfloat16 if context.config.tail_backward == "bf16" else None
        """The dtype of the fp32 tail's pair gradients; None: the whole tail in fp32, unfused."""
        tail_follows = self._bf16_updates < (context.config.steps or 0)
        self._first_scored = self._bf16_updates + 1 if tail_follows else 0
        """The first update whose network is worth scoring (:meth:`scores_checkpoint`)."""
        self._done = 0

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor:
        loss = super().step(index, k, offsets)
        self._done += 1
        return loss

    def scores_checkpoint(self, done: int) -> bool:
        """Whether the network after ``done`` updates is worth scoring as a checkpoint: not one of the bf16
        updates an fp32 tail follows. Those weights are fitted to bf16 arithmetic and score poorly in
        fp32 (none was kept in the 24 crops of ``benchmarks/results/table{2,3}_*_bf16tail.md``), and
        each score is 1 + probes whole-image passes."""
        return done >= self._first_scored

    def fallbacks(self) -> list[tuple[str, Callable[[], None]]]:
        fused = [("fused convolution + ReLU", self._unfuse)] if self._pairs else []
        return [*fused, *super().fallbacks()]

    def _unfuse(self) -> None:
        self._pairs.clear()
        self.name += "-unfused"

    def forward_context(self) -> contextlib.AbstractContextManager:
        if self._done >= self._bf16_updates:  # the fp32 tail (AdaptConfig.fp32_tail, tail_backward)
            grads = self._tail_grads
            return contextlib.nullcontext() if grads is None else fused_conv_relu(self._pairs, grads)
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast("cpu", dtype=torch.bfloat16))
        stack.enter_context(fused_conv_relu(self._pairs))
        return stack
