"""Step runners: one update of the adaptation (cut patches, transform, add noise, forward, backward, Adam).

:class:`EagerRunner` is the plain PyTorch update; the fast runners of :mod:`rfr_deploy.adaptation.cuda_graphs`
(channels-last on CPU, CUDA graphs with mixed precision) implement the same :class:`StepRunner`
interface, and :func:`make_runner` picks one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

import torch
from torch import nn

from rfr_deploy.adaptation.plan import clean_batch
from rfr_deploy.adaptation.recorrupt import Recorruption
from rfr_deploy.adaptation.tuning import parameter_groups

if TYPE_CHECKING:
    from rfr_deploy.adaptation.config import AdaptConfig

LossKind = Literal["mse", "l1"]


class StepRunner(Protocol):
    """Performs one update on target ``index`` under dihedral transform ``k``.

    ``offsets`` holds one (y, x) patch origin per batch element when training on patches.
    Returns the loss as a device tensor (not synchronised).
    A runner may also define ``finish()``, called once after the last update to hand the
    network back in its plain form (fast runners change the weights' memory layout).
    """

    name: str

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor: ...


def loss_function(kind: LossKind) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return nn.functional.mse_loss if kind == "mse" else nn.functional.l1_loss


def make_optimizer(
    model: nn.Module, config: AdaptConfig, **adam_kwargs
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam (or RAdam) over the trainable parameters (:func:`~rfr_deploy.adaptation.tuning.parameter_groups`),
    with the warm-up and schedule of ``config``."""
    groups = parameter_groups(model, config.lr, config.affine_lr)
    if config.optimizer == "radam":
        adam_kwargs.pop("fused", None)  # RAdam has no fused kernel
        optimizer: torch.optim.Optimizer = torch.optim.RAdam(groups, **adam_kwargs)
    else:
        optimizer = torch.optim.Adam(groups, **adam_kwargs)

    def factor(step: int) -> float:
        if config.warmup and step < config.warmup:
            return (step + 1) / config.warmup
        if config.schedule == "cosine" and config.steps > config.warmup:
            t = (step - config.warmup) / (config.steps - config.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EagerRunner:
    """The plain PyTorch update: cut patches, transform, add noise, forward, backward, Adam."""

    name = "eager"

    def __init__(
        self,
        model,
        targets,
        noise,
        config: AdaptConfig,
        generator: torch.Generator,
        recorruption: Recorruption | None = None,
    ):
        self.model, self.targets, self.noise = model, targets, noise
        self.batch, self.patch, self.generator = config.batch, config.patch, generator
        self.recorruption = recorruption
        self.loss_fn = loss_function(config.loss)
        self.optimizer, self.scheduler = make_optimizer(model, config)

    def forward_context(self) -> contextlib.AbstractContextManager:
        """Context of the network's forward passes (autocast in :class:`~rfr_deploy.adaptation.cpu_runners.Bf16Runner`)."""
        return contextlib.nullcontext()

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor:
        x = clean_batch(self.targets[index], k, offsets, self.batch, self.patch)
        noisy, sigma = self.noise(x, self.generator)
        with self.forward_context():
            out = self.model(noisy, sigma)
        loss = self.loss_fn(out.float(), x)
        if self.recorruption is not None:
            y = self.recorruption.batch(index, k, offsets, self.batch, self.patch)
            with self.forward_context():
                loss = loss + self.recorruption.loss(self.model, y, self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


def make_runner(
    model,
    targets,
    noise,
    config: AdaptConfig,
    generator: torch.Generator,
    recorruption: Recorruption | None = None,
) -> StepRunner:
    """The fast runner where it applies (see :mod:`rfr_deploy.adaptation.cuda_graphs`), else the eager one.

    CUDA: CUDA graphs with mixed precision ('auto' falls back to eager when capture fails, 'on'
    makes that an error). CPU: the eager update with channels-last weights ('auto'), with bf16
    convolutions where ``amp`` asks for them (:func:`~rfr_deploy.adaptation.cpu_runners.cpu_precision`).
    """
    device = targets[0].device
    if config.fast == "off":
        return EagerRunner(model, targets, noise, config, generator, recorruption)
    if device.type == "cuda":
        from rfr_deploy.adaptation.cuda_graphs import try_graph_runner

        runner = try_graph_runner(model, targets, noise, config, generator, recorruption)
        if runner is not None:
            return runner
        if config.fast == "on":
            raise RuntimeError("fast path requested (fast='on') but CUDA graph capture failed")
    elif config.fast == "on":
        raise RuntimeError("fast path requested (fast='on') but it needs a CUDA device")
    else:
        from rfr_deploy.adaptation.cpu_runners import cpu_fast_runner

        runner = cpu_fast_runner(model, targets, noise, config, generator, recorruption)
        if runner is not None:
            return runner
    return EagerRunner(model, targets, noise, config, generator, recorruption)


class StepTimer:
    """Seconds of each update without a host synchronisation per update.

    CUDA: a pair of events on the current stream around each update, read once after the last
    (:meth:`seconds` synchronises on the last event); the intervals are the device's, which is what
    the bench's CUDA-event timing measures. CPU: ``perf_counter`` around each update.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._seconds: list[float] = []
        self._started: torch.cuda.Event | float = 0.0

    def start(self) -> None:
        self._started = self._mark() if self.cuda else time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._events.append((self._started, self._mark()))
        else:
            self._seconds.append(time.perf_counter() - self._started)

    def seconds(self) -> list[float]:
        if not self._events:
            return list(self._seconds)
        self._events[-1][1].synchronize()
        return [start.elapsed_time(end) / 1e3 for start, end in self._events]

    def _mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event
