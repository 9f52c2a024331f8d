"""One update of the adaptation: what a step runner is given and does, the optimizer, the eager runner.

Every step runner is built from one :class:`UpdateContext` (the network, the training targets, the
noise, the settings, the generator and the optional term on the noisy input) and performs one update per
:meth:`StepRunner.step` call: cut patches, transform, add noise, forward, backward, Adam.
:class:`EagerRunner` is the plain PyTorch update; the CPU runners of
:mod:`rfr_deploy.adaptation.cpu_runners` and the CUDA-graph runner of
:mod:`rfr_deploy.adaptation.cuda_graphs` implement the same interface, and
:func:`rfr_deploy.adaptation.runners.make_runner` picks one. :class:`StepTimer` times the updates.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from rfr_deploy.adaptation.config import AdaptConfig, LossKind
from rfr_deploy.adaptation.noisy_input import NoisyInputTerm, gaussian_input_level
from rfr_deploy.adaptation.plan import clean_batch
from rfr_deploy.adaptation.recorrupt import Recorruption
from rfr_deploy.adaptation.scoring_windows import alignment
from rfr_deploy.adaptation.sure_loss import SureLoss
from rfr_deploy.adaptation.tiles import (
    PixelSum,
    backward_by_tile,
    cut,
    own_pixels,
    tile_margin,
    training_tiles,
    window,
)
from rfr_deploy.adaptation.tuning import parameter_groups
from rfr_deploy.errors import ConfigError
from rfr_deploy.inference import Tile


@dataclass(frozen=True)
class UpdateContext:
    """What a step runner is built from."""

    model: nn.Module
    """The network the updates train (in place)."""
    targets: list[torch.Tensor]
    """The clean training targets, one ``1×C×H×W`` tensor per image (refreshing overwrites them in place)."""
    noise: nn.Module
    """Draws the synthetic noise: ``noise(x, generator) -> (noisy, sigma)``."""
    config: AdaptConfig
    """The run's settings, with ``patch`` the side actually trained on (None: whole images)."""
    generator: torch.Generator
    """The run's generator, on the targets' device: every noise draw comes from it."""
    noisy_term: NoisyInputTerm | None = None
    """The loss term on the noisy input (:func:`make_noisy_term`; None: off)."""
    tile: int | None = None
    """Side of the tiles each update's batch is computed in (:mod:`~rfr_deploy.adaptation.tiles`); None: in
    one pass."""

    @property
    def device(self) -> torch.device:
        return self.targets[0].device


class StepRunner(Protocol):
    """Performs one update on target ``index`` under dihedral transform ``k``.

    ``offsets`` holds one (y, x) patch origin per batch element when training on patches.
    Returns the loss as a device tensor (not synchronised).
    A runner may also define ``finish()``, called once after the last update to hand the
    network back in its plain form (fast runners change the weights' memory layout), and
    ``scores_checkpoint(done)``, False where the network after ``done`` updates is not worth scoring
    as a checkpoint (the bf16 updates before an fp32 tail).
    """

    name: str

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor: ...


def make_noisy_term(
    noise: nn.Module, images: Sequence[torch.Tensor], config: AdaptConfig
) -> NoisyInputTerm | None:
    """The loss term on the noisy ``images`` that ``config`` asks for (``recorrupted`` or ``sure_loss``),
    or None where it is off (:func:`check_noisy_term`: only for Gaussian noise of one level)."""
    level = check_noisy_term(noise, config)
    if config.recorrupted > 0:
        return Recorruption(list(images), level, config.recorrupted)
    if config.sure_loss > 0:
        return SureLoss(list(images), level, config.sure_loss)
    return None


def check_noisy_term(noise: nn.Module, config: AdaptConfig) -> float | None:
    """The level of the noise a term on the noisy input sees (:func:`gaussian_input_level`); a
    :class:`~rfr_deploy.errors.ConfigError` where ``config`` asks for a term and the noise is not Gaussian
    of one level (camera noise, random σ), whose input no such term describes."""
    level = gaussian_input_level(noise)
    if level is None and (config.recorrupted > 0 or config.sure_loss > 0):
        option = "recorrupted" if config.recorrupted > 0 else "sure_loss"
        raise ConfigError(
            f"{option} needs Gaussian noise of one level (a given or estimated σ), not {type(noise).__name__}"
        )
    return level


def loss_function(kind: LossKind) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return nn.functional.mse_loss if kind == "mse" else nn.functional.l1_loss


def make_optimizer(
    model: nn.Module, config: AdaptConfig, **adam_kwargs
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam (or RAdam) over the trainable parameters (:func:`~rfr_deploy.adaptation.tuning.parameter_groups`),
    with the warm-up and schedule of ``config``."""
    groups = parameter_groups(model, config.lr, config.affine_lr, config.layer_lr)
    if config.optimizer == "radam":
        adam_kwargs.pop("fused", None)  # RAdam has no fused kernel
        optimizer: torch.optim.Optimizer = torch.optim.RAdam(groups, **adam_kwargs)
    else:
        optimizer = torch.optim.Adam(groups, **adam_kwargs)

    warmup = min(config.warmup, (config.steps or 0) // 4)  # a short run reaches its learning rate

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine" and config.steps > warmup:
            t = (step - warmup) / (config.steps - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class EagerRunner:
    """The plain PyTorch update: cut patches, transform, add noise, forward, backward (in tiles where
    ``context.tile`` is set), Adam."""

    name = "eager"

    def __init__(self, context: UpdateContext):
        config = context.config
        self.model, self.targets, self.noise = context.model, context.targets, context.noise
        self.batch, self.patch, self.generator = config.batch, config.patch, context.generator
        self.noisy_term = context.noisy_term
        self.tile, self._tiles = context.tile, {}
        self.loss_fn = loss_function(config.loss)
        self.optimizer, self.scheduler = make_optimizer(self.model, config, **self.adam_options())

    def adam_options(self) -> dict[str, bool]:
        """Implementation options for Adam (none: PyTorch's default, the plain update's baseline)."""
        return {}

    def forward_context(self) -> contextlib.AbstractContextManager:
        """Context of the network's forward passes (autocast in :class:`~rfr_deploy.adaptation.cpu_runners.Bf16Runner`)."""
        return contextlib.nullcontext()

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor:
        x = clean_batch(self.targets[index], k, offsets, self.batch, self.patch)
        noisy, sigma = self.noise(x, self.generator)
        parts = [self._restored_part(noisy, sigma, x)]
        term = self.noisy_term
        if term is not None:
            drawn = term.draw(term.batch(index, k, offsets, self.batch, self.patch), self.generator)
            parts.append(self._noisy_part(drawn))
        self.optimizer.zero_grad(set_to_none=True)
        tiles = self._grid(x) if self.tile is not None else [None]
        loss = backward_by_tile(parts, tiles, x.numel())
        self.optimizer.step()
        self.scheduler.step()
        return loss if term is None else loss + term.constant

    def _restored_part(self, noisy: torch.Tensor, sigma: torch.Tensor, x: torch.Tensor) -> PixelSum:
        """The restore-from-restored loss on (``noisy``, ``x``), summed over a tile's pixels."""

        def summed(tile: Tile | None) -> torch.Tensor:
            with self.forward_context():
                out = self.model(window(noisy, tile), sigma)
            return self.loss_fn(own_pixels(out, tile).float(), cut(x, tile), reduction="sum")

        return summed

    def _noisy_part(self, drawn: dict[str, torch.Tensor]) -> PixelSum:
        """The term on the noisy input, with its draws ``drawn``, summed over a tile's pixels."""

        def summed(tile: Tile | None) -> torch.Tensor:
            with self.forward_context():
                return self.noisy_term.summed(self.model, drawn, tile)

        return summed

    def _grid(self, x: torch.Tensor) -> list[Tile]:
        """The tiles of a batch of ``x``'s height and width (one grid per shape: a transform may transpose)."""
        shape = tuple(x.shape[-2:])
        if shape not in self._tiles:
            self._tiles[shape] = training_tiles(
                *shape, self.tile, alignment(self.model), tile_margin(self.model)
            )
        return self._tiles[shape]


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
