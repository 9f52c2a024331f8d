"""Restore-from-restored: test-time adaptation of a pre-trained denoiser (Lee et al.).

1. The pre-trained network turns the noisy input Y into a pseudo-clean X̃ = f(Y).
2. For M steps, fresh synthetic noise N from the network's own noise model is
   added to a randomly flipped/rotated X̃, and Adam fits f(X̃ + N) to X̃.
3. The adapted network denoises Y again.

Recurring structure in the image makes the adapted network average the denoised
versions of similar patches, which is where the gain comes from.

This module is the reference (eager) loop. One update is performed by a *step
runner*; :class:`EagerRunner` here is the plain PyTorch version, and the CUDA
graph runner of :mod:`rfr_deploy.adaptation.cuda_graphs` implements the same interface.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rfr_deploy.adaptation.blending import WeightAverage, WeightBlend
from rfr_deploy.adaptation.checkpoints import CheckpointKeeper
from rfr_deploy.adaptation.config import AdaptConfig, resolve_defaults
from rfr_deploy.adaptation.plan import image_order, patch_offsets
from rfr_deploy.adaptation.recorrupt import make_recorruption
from rfr_deploy.adaptation.runners import StepRunner, StepTimer, make_runner
from rfr_deploy.adaptation.sure import gaussian_level
from rfr_deploy.adaptation.tuning import finish_tuning, prepare_tuning
from rfr_deploy.inference import denoise
from rfr_deploy.memory import available_bytes, bytes_per_pixel
from rfr_deploy.transforms import DIHEDRAL


@dataclass
class AdaptResult:
    model: nn.Module
    """The adapted network (a copy; the input model is left untouched)."""
    pseudo_clean: list[torch.Tensor]
    losses: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    target_seconds: float = 0.0
    total_seconds: float = 0.0
    runner: str = "eager"
    patch: int | None = None
    """Training patch side actually used (None: whole images)."""
    interpolation: float = 1.0
    """Interpolation weight of the returned network (chosen by SURE when ``select='sure'`` applies)."""
    sure_db: dict[float, float] = field(default_factory=dict)
    """SURE estimate (dB) of every candidate weight; empty when no selection ran."""
    checkpoint_step: int | None = None
    """The update whose network was kept (``checkpoint_every``; 0: the pre-trained one); None: the last."""
    checkpoint_db: dict[int, float] = field(default_factory=dict)
    """SURE estimate (dB) of every scored checkpoint, by update; empty when none were scored."""

    @property
    def mean_step_seconds(self) -> float:
        return sum(self.step_seconds) / len(self.step_seconds) if self.step_seconds else 0.0


@dataclass
class StepInfo:
    step: int
    total: int
    loss: torch.Tensor
    network: Callable[[], nn.Module]
    """The network as the run would return it now (averaged, interpolated); built only when asked for."""
    interpolation: Callable[[], float] = lambda: 1.0
    """The interpolation weight of the network last built by ``model`` (chosen by SURE by default)."""

    @property
    def model(self) -> nn.Module:
        return self.network()


def pseudo_clean(model, noisy: torch.Tensor, sigma: float | None, ensemble: bool) -> torch.Tensor:
    """X̃ = f(Y), optionally as the ×8 dihedral self-ensemble."""
    return denoise(model, noisy, sigma=sigma, ensemble=ensemble).detach()


def adapt(
    model: nn.Module,
    noisy: torch.Tensor | Sequence[torch.Tensor],
    noise: nn.Module,
    config: AdaptConfig | None = None,
    sigma: float | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    targets: Sequence[torch.Tensor] | None = None,
) -> AdaptResult:
    """Adapt ``model`` to ``noisy`` (one ``1×C×H×W`` tensor, or a list for a set of images).

    ``noise`` draws the synthetic noise (see :mod:`rfr_deploy.noise.gaussian`); ``sigma`` is the
    noise level (σ/255) the noisy input is denoised with when the network takes a
    noise map. ``callback`` receives a :class:`StepInfo` after every update (progress bars,
    snapshots of intermediate results). ``targets`` (one per noisy image, same shapes) replaces
    the pseudo-clean X̃ = f(Y): a stronger teacher's output, or the clean image in an oracle study
    (``target_ensemble`` then does not apply; ``refresh_every`` still recomputes them from the
    adapted network).
    """
    start = time.perf_counter()
    images = [noisy] if isinstance(noisy, torch.Tensor) else list(noisy)
    if not images:
        raise ValueError("no images to adapt to")
    config = resolve_defaults(config or AdaptConfig(), noise, images)
    device = images[0].device
    model = copy.deepcopy(model).to(device)

    t0 = time.perf_counter()
    targets = _training_targets(model, images, sigma, config.target_ensemble, targets)
    _sync(device)
    target_seconds = time.perf_counter() - t0

    recorruption = make_recorruption(noise, images, config.recorrupted)
    passes = 2 if recorruption is not None else 1  # the recorrupted pair is a second forward/backward
    patch = config.patch or _patch_that_fits(model, targets, config.batch * passes)
    if patch is not None:
        patch = min(patch, *(min(t.shape[-2:]) for t in targets))
    config_used = dataclasses.replace(config, patch=patch)

    frozen = prepare_tuning(model, config.tune)
    level = gaussian_level(noise, images) if config.select == "sure" and config.steps else None
    blend = WeightBlend(model, images, sigma, level, config.interpolation, config.seed)
    keeper = None
    if level is not None and config.checkpoint_every:
        keeper = CheckpointKeeper(model, blend.scorer)
    model.train()
    runner = make_runner(
        model,
        targets,
        noise,
        config_used,
        torch.Generator(device=device).manual_seed(config.seed),
        recorruption,
    )
    loop = _Loop(model, targets, images, sigma, config, blend, keeper)
    losses, step_seconds = loop.run(runner, patch, callback)
    finish = getattr(runner, "finish", None)  # fast runners hand the network back in its plain layout
    if finish is not None:
        finish()
    model = loop.current
    if keeper is not None:
        keeper.restore(model, blend.origin)  # the weights of update best_step (0: the pre-trained ones)
        model = blend.result(model, keeper.best_step, known=keeper.known_terms())
    elif config.steps:
        model = blend.result(model, config.steps)
    finish_tuning(model, frozen)
    model.eval()
    return AdaptResult(
        model=model,
        pseudo_clean=targets,
        losses=[float(v) for v in torch.stack(losses).float().cpu()] if losses else [],
        step_seconds=step_seconds,
        target_seconds=target_seconds,
        total_seconds=time.perf_counter() - start,
        runner=runner.name,
        patch=patch,
        interpolation=blend.chosen if config.steps else 0.0,
        sure_db=blend.estimates,
        checkpoint_step=keeper.best_step if keeper is not None else None,
        checkpoint_db=keeper.scores if keeper is not None else {},
    )


def _training_targets(model, images, sigma, ensemble: bool, targets) -> list[torch.Tensor]:
    """The pseudo-clean targets X̃ = f(Y), or copies of the given ``targets`` (refresh_every overwrites
    them in place)."""
    if targets is None:
        return [pseudo_clean(model, y, sigma, ensemble) for y in images]
    if len(targets) != len(images) or any(t.shape != y.shape for t, y in zip(targets, images, strict=False)):
        raise ValueError("targets: one tensor per noisy image, of the same shape")
    return [
        t.detach().to(device=y.device, dtype=y.dtype).clone() for t, y in zip(targets, images, strict=True)
    ]


class _Loop:
    """The updates of one run: the plan (image, transform, patches), averaging, refreshing, checkpoints."""

    def __init__(self, model, targets, images, sigma, config: AdaptConfig, blend, keeper):
        self.model, self.targets, self.images, self.sigma = model, targets, images, sigma
        self.config, self.blend, self.keeper = config, blend, keeper
        self.averaged = WeightAverage(model, config.ema) if config.ema else None
        self.current = model

    def run(self, runner: StepRunner, patch: int | None, callback) -> tuple[list[torch.Tensor], list[float]]:
        config, device = self.config, self.targets[0].device
        plan = torch.Generator().manual_seed(config.seed)
        losses: list[torch.Tensor] = []
        timer = StepTimer(device)  # CUDA events: no host synchronisation per update
        for step, index in enumerate(image_order(len(self.targets), config.steps, plan)):
            k = int(torch.randint(DIHEDRAL, (1,), generator=plan))
            offsets = patch_offsets(self.targets[index], patch, config.batch, plan) if patch else None
            timer.start()
            loss = runner.step(index, k, offsets)
            timer.stop()
            losses.append(loss)
            self._after_update(step + 1)
            if callback is not None:
                # the result network costs a copy (and SURE scores): build it only for callbacks that read it
                view = functools.partial(self.blend.result, self.current, step + 1)
                callback(StepInfo(step + 1, config.steps, loss, view, lambda: self.blend.chosen))
        return losses, timer.seconds()

    def _after_update(self, done: int) -> None:
        config = self.config
        if self.averaged is not None:
            self.averaged.update(self.model)
            self.current = self.averaged.model
        if config.refresh_every and done % config.refresh_every == 0 and done < config.steps:
            for target, y in zip(self.targets, self.images, strict=True):  # in place: runners hold these
                target.copy_(pseudo_clean(self.current, y, self.sigma, config.target_ensemble))
        if self.keeper is not None and (done % config.checkpoint_every == 0 or done == config.steps):
            self.keeper.offer(self.current, done)


def _patch_that_fits(model, targets: list[torch.Tensor], batch: int) -> int | None:
    """None when whole images fit in memory for a training step, else the largest square patch that does."""
    largest = max(t.shape[-2] * t.shape[-1] for t in targets)
    per_pixel = bytes_per_pixel(model, targets[0].shape[1], training=True) * batch
    budget = 0.5 * available_bytes(targets[0].device)
    if per_pixel * largest <= budget:
        return None
    side = int(math.sqrt(budget / per_pixel))
    return max(32, side - side % 8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
