"""Restore-from-restored: test-time adaptation of a pre-trained denoiser (Lee et al.).

1. The pre-trained network turns the noisy input Y into a pseudo-clean X̃ = f(Y).
2. For M steps, fresh synthetic noise N from the network's own noise model is
   added to a randomly flipped/rotated X̃, and Adam fits f(X̃ + N) to X̃.
3. The adapted network denoises Y again.

Recurring structure in the image makes the adapted network average the denoised
versions of similar patches, which is where the gain comes from.

This module runs the loop: the plan of updates, weight averaging, refreshed targets, checkpoints, the
final interpolation. A *step runner* (:mod:`rfr_deploy.adaptation.update`, chosen by
:func:`rfr_deploy.adaptation.runners.make_runner`) performs each update on :mod:`~rfr_deploy.adaptation.targets`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from rfr_deploy.adaptation.blending import WeightAverage, WeightBlend
from rfr_deploy.adaptation.checkpoints import CheckpointKeeper
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.defaults import resolve_defaults
from rfr_deploy.adaptation.plan import image_order, patch_offsets
from rfr_deploy.adaptation.runners import check_update_settings, make_runner
from rfr_deploy.adaptation.scoring import denoised_per_channel, make_scorer
from rfr_deploy.adaptation.targets import pseudo_clean, training_layout, training_targets
from rfr_deploy.adaptation.tuning import finish_tuning, prepare_tuning
from rfr_deploy.adaptation.update import StepTimer, UpdateContext, check_noisy_term, make_noisy_term
from rfr_deploy.devices import synchronize
from rfr_deploy.heap import keep_freed_memory_on
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
    tile: int | None = None
    """Side of the tiles each update was computed in where it did not fit in memory in one pass
    (:mod:`~rfr_deploy.adaptation.tiles`); None: one pass."""
    interpolation: float = 1.0
    """Interpolation weight of the returned network (chosen by :attr:`selected_by` where ``select='sure'``
    applies)."""
    selected_by: str | None = None
    """What chose the checkpoint and the interpolation: 'sure', 'gcv', 'coloured-sure' (the interpolation
    only; :mod:`rfr_deploy.adaptation.scoring`) or None (the fixed interpolation)."""
    sure_db: dict[float, float] = field(default_factory=dict)
    """The selection's estimate (dB) of every candidate weight (SURE: of the error, a PSNR; GCV: of
    error + σ², see :class:`~rfr_deploy.adaptation.scoring.GcvScorer`); empty when no selection ran."""
    checkpoint_step: int | None = None
    """The update whose weights the returned network interpolates: the best trained checkpoint
    (``checkpoint_every``) or the last update, whichever the scorer prefers at its own interpolation
    (where no trained checkpoint beat the pre-trained network, the last update: its α may be 0);
    None where no checkpoints were scored (the last)."""
    checkpoint_db: dict[int, float] = field(default_factory=dict)
    """The selection's estimate (dB) of every scored checkpoint, by update; empty when none were scored."""

    @property
    def mean_step_seconds(self) -> float:
        return sum(self.step_seconds) / len(self.step_seconds) if self.step_seconds else 0.0


@dataclass
class StepInfo:
    step: int
    total: int
    loss: torch.Tensor
    network: Callable[[], nn.Module]
    """The network as the run would return it now (averaged, interpolated); built only when asked for.
    After the last update it is the network ``adapt`` returns (:attr:`AdaptResult.checkpoint_step`).
    It may be the run's own network: read it within the callback, copy it to keep it."""
    interpolation: Callable[[], float] = lambda: 1.0
    """The interpolation weight of the network last built by ``model`` (chosen by SURE by default)."""

    @property
    def model(self) -> nn.Module:
        return self.network()


def adapt(
    model: nn.Module,
    noisy: torch.Tensor | Sequence[torch.Tensor],
    noise: nn.Module,
    config: AdaptConfig | None = None,
    sigma: float | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    targets: Sequence[torch.Tensor] | None = None,
    stage: Callable[[str, int | None], None] | None = None,
    pseudo_clean: Sequence[torch.Tensor] | None = None,
) -> AdaptResult:
    """Adapt ``model`` to ``noisy`` (one ``1×C×H×W`` tensor, or a list for a set of images).

    ``noise`` draws the synthetic noise (a :class:`~rfr_deploy.noise.base.NoiseModel`); ``sigma`` is the
    noise level (σ/255) the noisy input is denoised with when the network takes a
    noise map. ``callback`` receives a :class:`StepInfo` after every update (progress bars,
    snapshots of intermediate results). ``targets`` (one per noisy image, same shapes) replaces
    the pseudo-clean X̃ = f(Y): a stronger teacher's output, or the clean image in an oracle study
    (``target_ensemble`` then does not apply; ``refresh_every`` still recomputes them from the
    adapted network). With ``rounds`` > 1 the M updates are split over the rounds, the callback counts
    them 1 … M across rounds, the result describes the last round (its interpolation, checkpoint and
    scores, relative to the network the round started from), ``pseudo_clean`` holds the first round's
    targets and ``losses`` / ``step_seconds`` every update of every round. ``stage(text, total)`` hears
    what starts: the target pass, the updates (``total`` = M), choosing the network to keep.
    ``pseudo_clean``: the first round's X̃ = f(Y), already computed by the caller as that round would
    (e.g. to read the noise level off the residual); later rounds compute their own.
    """
    start = time.perf_counter()
    images, config = _checked_start(noisy, noise, config, denoised_per_channel(model))
    model = copy.deepcopy(model).to(images[0].device)
    first_targets, losses, step_seconds, target_seconds = None, [], [], 0.0
    for index, steps in enumerate(round_steps(config.steps, config.rounds)):
        # each round starts from the network the previous one returned
        round_config = dataclasses.replace(config, steps=steps, seed=config.seed + index)
        given = targets if targets is not None or index > 0 else pseudo_clean
        done = _adapt_round(
            model, images, noise, sigma, round_config, given, (len(losses), config.steps), callback, stage
        )
        first_targets = done.targets if first_targets is None else first_targets
        losses += done.losses
        step_seconds += done.step_seconds
        target_seconds += done.target_seconds
        model = done.model
    last = done.run  # only the last round's run is kept alive
    return AdaptResult(
        model=model,
        pseudo_clean=first_targets,
        losses=[float(v) for v in torch.stack(losses).float().cpu()] if losses else [],
        step_seconds=step_seconds,
        target_seconds=target_seconds,
        total_seconds=time.perf_counter() - start,
        runner=last.runner.name,
        patch=last.layout.patch,
        tile=last.layout.tile,
        interpolation=last.blend.chosen if last.config.steps else 0.0,
        selected_by=last.blend.scorer.criterion if last.blend.scorer is not None else None,
        sure_db=last.blend.estimates,
        checkpoint_step=last.kept_step,
        checkpoint_db=last.keeper.scores if last.keeper is not None else {},
    )


def _checked_start(
    noisy, noise: nn.Module, config: AdaptConfig | None, per_channel: bool
) -> tuple[list[torch.Tensor], AdaptConfig]:
    """The images and the resolved settings (jobs' configs come resolved), checked before any work."""
    images = [noisy] if isinstance(noisy, torch.Tensor) else list(noisy)
    if not images:
        raise ValueError("no images to adapt to")
    config = resolve_defaults(config or AdaptConfig(), noise, images, per_channel)
    check_update_settings(config, images[0].device)
    check_noisy_term(noise, config)
    keep_freed_memory_on(images[0].device, config.keep_memory)
    return images, config


@dataclass
class _Round:
    """One restore-from-restored round: its targets, its run, and the network it returned (eval mode)."""

    targets: list[torch.Tensor]
    target_seconds: float
    run: _Run
    losses: list[torch.Tensor]
    step_seconds: list[float]
    model: nn.Module


def round_steps(steps: int, rounds: int) -> list[int]:
    """How many of the ``steps`` updates each of the ``rounds`` rounds makes (the first ones one more
    where they do not divide)."""
    return [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]


def _adapt_round(
    model, images, noise, sigma, config: AdaptConfig, given, counted: tuple[int, int], callback, stage
) -> _Round:
    """One round of ``config.steps`` updates: the pseudo-clean targets from ``model`` (or the ``given``
    ones), the updates, and the network the run keeps (checkpoint and interpolation chosen as usual).
    ``counted`` = (updates of earlier rounds, all updates): the steps the callback sees."""
    stage = stage or (lambda text, total=None: None)
    if given is None:
        stage("pseudo-clean target", None)
    t0 = time.perf_counter()
    targets = training_targets(model, images, sigma, config.target_ensemble, given)
    synchronize(images[0].device)
    target_seconds = time.perf_counter() - t0
    run = _Run(model, targets, images, noise, sigma, config)
    # refreshing overwrites the targets in place (the runner holds them): keep the round's own
    first = [t.clone() for t in targets] if config.refresh_every else targets
    tile = run.layout.tile
    stage("updating" if tile is None else f"updating in {tile}² tiles", counted[1])
    losses, step_seconds = run.updates(callback, *counted)
    stage("choosing the network to keep", None)
    return _Round(first, target_seconds, run, losses, step_seconds, run.finish())


class _Run:
    """One run's updates: the runner, the plan (image, transform, patches), averaging, refreshing,
    checkpoints, and the network kept at the end."""

    def __init__(self, model: nn.Module, targets, images, noise: nn.Module, sigma, config: AdaptConfig):
        self.model, self.targets, self.images, self.sigma, self.config = model, targets, images, sigma, config
        noisy_term = make_noisy_term(noise, images, config)
        passes = 1 + (noisy_term.passes if noisy_term is not None else 0)
        self.layout = training_layout(model, targets, config, passes)
        self.frozen = prepare_tuning(model, config.tune)
        select = config.select == "sure" and config.steps
        scorer = (
            make_scorer(noise, images, targets, sigma, config.seed, model, config.score_pixels)
            if select
            else None
        )
        self.blend = WeightBlend(model, scorer, config.interpolation)
        checkpoints = scorer is not None and scorer.scores_checkpoints and config.checkpoint_every
        self.keeper = CheckpointKeeper(model, scorer) if checkpoints else None
        model.train()
        # copied before a fast runner moves the network to its layout: the average, which the run may
        # return, stays in the plain one
        self.averaged = WeightAverage(model, config.ema) if config.ema else None
        generator = torch.Generator(device=targets[0].device).manual_seed(config.seed)
        used = dataclasses.replace(config, patch=self.layout.patch)
        context = UpdateContext(model, targets, noise, used, generator, noisy_term, self.layout.tile)
        self.runner = make_runner(context)
        self._worth_scoring: Callable[[int], bool] = getattr(
            self.runner, "scores_checkpoint", lambda done: True
        )
        self.current = model
        self._finished: nn.Module | None = None
        self.kept_step: int | None = None
        """The update whose weights the run returned (interpolated); None where no checkpoints were scored."""

    def updates(self, callback, before: int, total: int) -> tuple[list[torch.Tensor], list[float]]:
        """Run every update; the losses (device tensors) and the seconds of each update. ``before``
        updates of earlier rounds, of ``total``, count in the steps the callback sees."""
        config, patch = self.config, self.layout.patch
        plan = torch.Generator().manual_seed(config.seed)
        losses: list[torch.Tensor] = []
        timer = StepTimer(self.targets[0].device)  # CUDA events: no host synchronisation per update
        for step, index in enumerate(image_order(len(self.targets), config.steps, plan)):
            k = int(torch.randint(DIHEDRAL, (1,), generator=plan))
            offsets = patch_offsets(self.targets[index], patch, config.batch, plan) if patch else None
            timer.start()
            loss = self.runner.step(index, k, offsets)
            timer.stop()
            losses.append(loss)
            self._after_update(step + 1)
            if callback is not None:
                view = self._view(step + 1)
                callback(StepInfo(before + step + 1, total, loss, view, lambda: self.blend.chosen))
        return losses, timer.seconds()

    def _view(self, done: int) -> Callable[[], nn.Module]:
        """How to build the network the run would return after ``done`` updates; callbacks that read it pay
        for the copy (and SURE scores). After the last update it is the network :meth:`finish` returns, so
        what a callback scores then is what the run returns."""
        if done == self.config.steps:
            return self.finish
        return functools.partial(self.blend.result, self.current, done)

    def _after_update(self, done: int) -> None:
        config = self.config
        if self.averaged is not None:
            self.averaged.update(self.model)
            self.current = self.averaged.model
        if config.refresh_every and done % config.refresh_every == 0 and done < config.steps:
            for target, y in zip(self.targets, self.images, strict=True):  # in place: runners hold these
                target.copy_(pseudo_clean(self.current, y, self.sigma, config.target_ensemble))
        if self.keeper is not None and self._checkpoint_due(done):
            self.keeper.offer(self.current, done)

    def _checkpoint_due(self, done: int) -> bool:
        """Every ``checkpoint_every`` updates and after the last, but for those the runner says are not
        worth scoring (:meth:`~rfr_deploy.adaptation.cpu_runners.Bf16Runner.scores_checkpoint`)."""
        config = self.config
        return done == config.steps or (done % config.checkpoint_every == 0 and self._worth_scoring(done))

    def finish(self) -> nn.Module:
        """The network the run returns (in eval mode): the last weights, or where checkpoints were scored
        the better of the best one and the last (:meth:`_kept_or_last`), interpolated with the pre-trained
        weights (no updates: the pre-trained network).
        Built once, after the last update; later calls return the same network."""
        if self._finished is None:
            self._finished = self._build_result()
        return self._finished

    def _build_result(self) -> nn.Module:
        finish = getattr(self.runner, "finish", None)  # fast runners: the network back in its plain layout
        if finish is not None:
            finish()
        model = self.current
        if self.keeper is not None:
            model = self._kept_or_last(model)
        elif self.config.steps:
            model = self.blend.result(model, self.config.steps)
        finish_tuning(model, self.frozen)
        return model.eval()

    def _kept_or_last(self, model: nn.Module) -> nn.Module:
        """The best checkpoint and the last weights, each at the interpolation the scorer picks for it,
        whichever the scorer prefers. Checkpoints are compared at α = 1, where a small gain can hide
        behind a loss; the last weights at α < 1 may still beat the pre-trained network (α = 0 is one of
        their candidates). Sets :attr:`kept_step`."""
        blend, keeper, steps = self.blend, self.keeper, self.config.steps
        last = blend.result(model, steps, known=keeper.known_terms(last=True))
        self.kept_step = steps
        if keeper.best_step in (0, steps):
            return last
        on_last = blend.selection
        keeper.restore(model, blend.origin)  # the weights of update best_step
        kept = blend.result(model, keeper.best_step, known=keeper.known_terms())
        if blend.selection.gain >= on_last.gain:
            self.kept_step = keeper.best_step
            return kept
        blend.keep(on_last, steps)
        return last
