"""Pre-training a denoiser from clean images, with checkpoints and resume.

The paper's recipe: random patches with random flips/rotations, synthetic noise
from the network's noise model (Gaussian σ ∈ [0, 50/255] by default), L1 loss, Adam
with a decaying learning rate. Self-supervised Noise2Self training (masked
pixels predicted from their neighbours, noisy images only) is the ``noise2self``
objective.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from rfr_deploy.adaptation.cpu_runners import channels_last_updates_pay
from rfr_deploy.datasets import load_folder
from rfr_deploy.devices import resolve_device, seed_field, threads_field, use_threads
from rfr_deploy.errors import ConfigError, WeightsError, first_line
from rfr_deploy.files import atomic_write, check_output_dir
from rfr_deploy.heap import keep_freed_memory_on
from rfr_deploy.jobs.pretrain_resume import (
    check_same_training,
    not_resumable,
    read_checkpoint,
    resolved_folders,
    run_architecture,
)
from rfr_deploy.models.factory import create_model, get_entry
from rfr_deploy.models.registry import WeightsMeta
from rfr_deploy.models.weights import save_weights
from rfr_deploy.noise.build import SELF_SUPERVISED, build_noise, list_noise_choices
from rfr_deploy.transforms import DIHEDRAL, dihedral
from rfr_deploy.units import check_levels, grey_levels

Objective = Literal["supervised", "noise2self"]


@dataclass
class PretrainConfig:
    """Settings of ``rfr-deploy pretrain``; each field but ``data`` and ``arch_kwargs`` is a CLI option of the
    same name, generated from the field (:func:`rfr_deploy.cli.options.field_option`)."""

    model: str = "dncnn"
    channels: Literal[1, 3] = 1
    data: tuple[str, ...] = ()
    out: str = field(
        default="runs/pretrain",
        metadata={
            "cli": ("-o", "--out"),
            "help": "Run folder: checkpoint.pt (resumed automatically) and final.safetensors.",
        },
    )
    steps: int = field(default=20_000, metadata={"min": 1})
    batch: int = field(default=64, metadata={"min": 1})
    patch: int = field(default=48, metadata={"min": 8})
    lr: float = 1e-4
    lr_min: float = 1e-6
    loss: Literal["l1", "mse"] = "l1"
    noise: str = field(
        default="gaussian", metadata={"choices": functools.partial(list_noise_choices, auto=False)}
    )
    """A registered noise model (:func:`rfr_deploy.noise.build.list_noise_choices`), drawn at random levels."""
    sigma_low: float = field(default=0.0, metadata={"unit": "grey"})
    """Gaussian noise: the range of σ, [0, 1] units (the weights record it in grey levels)."""
    sigma_high: float = field(default=50 / 255, metadata={"unit": "grey"})
    objective: Objective = "supervised"
    seed: int = seed_field()
    checkpoint_every: int = field(default=500, metadata={"min": 1})
    threads: int | None = threads_field()
    device: str = "auto"
    """auto (CUDA when available), cpu or cuda."""
    init: str | None = field(
        default=None,
        metadata={
            "file": "existing",
            "help": "Start from these weights instead of a random initialisation, and train their network (e.g. the "
            "17 layers of official DnCNN-S); ignored when resuming.",
        },
    )
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.data:
            raise ConfigError("pretrain needs at least one folder of clean training images")
        if self.steps < 1 or self.batch < 1 or self.patch < 8:
            raise ConfigError("steps and batch must be >= 1 and patch >= 8")
        check_levels({"sigma-low": self.sigma_low, "sigma-high": self.sigma_high})
        if not (self.lr > 0 and 0 <= self.lr_min <= self.lr):
            raise ConfigError(
                f"--lr must be a positive number and --lr-min within [0, --lr]; got {self.lr:g} and {self.lr_min:g}"
            )


class PatchSampler:
    """Random training patches, each with its own random dihedral transform, drawn from images held as
    uint8."""

    def __init__(self, folders: tuple[str, ...], channels: int, patch: int, seed: int):
        self.images: list[np.ndarray] = []
        for folder in folders:
            for item in load_folder(folder, channels=channels):
                if min(item.pixels.shape[:2]) >= patch:
                    self.images.append(np.round(item.pixels * 255).astype(np.uint8))
        if not self.images:
            raise ConfigError(f"no training image of at least {patch}×{patch} pixels in {', '.join(folders)}")
        weights = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.p = weights / weights.sum()  # sample images in proportion to their area
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def sample(self, batch: int) -> torch.Tensor:
        p = self.patch
        out = np.empty((batch, p, p, self.images[0].shape[2]), dtype=np.uint8)
        for i, j in enumerate(self.rng.choice(len(self.images), size=batch, p=self.p)):
            im = self.images[j]
            y = self.rng.integers(0, im.shape[0] - p + 1)
            x = self.rng.integers(0, im.shape[1] - p + 1)
            out[i] = im[y : y + p, x : x + p]
        t = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
        transforms = self.rng.integers(DIHEDRAL, size=batch)
        return torch.cat([dihedral(t[i : i + 1], int(k)) for i, k in enumerate(transforms)])


def build_pretraining_noise(config: PretrainConfig) -> nn.Module:
    """The noise model ``config.noise`` at random levels: σ uniform in [sigma_low, sigma_high] for
    Gaussian noise, CBDNet's random camera levels for the camera model."""
    return build_noise(config.noise, None, "uniform", (), (config.sigma_low, config.sigma_high))


def noisy_with_sigma_map(
    noise: nn.Module, clean: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy batch and the true per-pixel noise std (``N×C×H×W``), for losses on estimated noise maps."""
    if hasattr(noise, "sample"):  # the camera model knows its per-pixel level
        noisy, _sigma, sigma_map = noise.sample(clean, generator)
        return noisy, sigma_map
    noisy, sigma = noise(clean, generator)
    return noisy, sigma.reshape(-1, 1, 1, 1).expand_as(clean)


@dataclass
class Training:
    """What a pretraining run updates and draws from, and how it scores a batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    """The cosine schedule over ``config.steps`` (:func:`cosine_schedule`)."""
    sampler: PatchSampler
    noise: nn.Module
    generator: torch.Generator
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    device: torch.device
    noise2self: Callable | None = None
    """The Noise2Self objective (``objective='noise2self'``), else None."""

    def loss(self, clean: torch.Tensor) -> torch.Tensor:
        """The training loss on one clean batch (noise drawn from the run's generator)."""
        model, noise, generator = self.model, self.noise, self.generator
        if self.noise2self is not None:
            noisy, sigma = noise(clean, generator)  # the objective sees only the noisy batch
            return self.noise2self(model, noisy, sigma, generator)
        if model.entry.train_loss is not None:
            noisy, sigma_map = noisy_with_sigma_map(noise, clean, generator)
            return model.entry.train_loss(model, noisy, clean, sigma_map, self.loss_fn)
        noisy, sigma = noise(clean, generator)
        return self.loss_fn(model(noisy, sigma), clean)


def pretrain(config: PretrainConfig, progress: Callable[[int, int, float], None] | None = None) -> Path:
    """Train (or resume training) and write ``<out>/final.safetensors``; returns its path. On the CPU the
    process keeps the memory it frees (:func:`rfr_deploy.heap.keep_freed_memory`)."""
    _check_objective(config)
    out = check_output_dir(config.out)
    use_threads(config.threads)
    device = resolve_device(config.device)
    keep_freed_memory_on(device)  # each step's batch of activations reuses the last one's memory
    state = read_checkpoint(out / "checkpoint.pt")  # a checkpoint replaces --init
    arch_kwargs, init = run_architecture(
        config.init, config.model, config.channels, config.arch_kwargs, state
    )
    config = dataclasses.replace(config, arch_kwargs=arch_kwargs)
    run = _start(config, device)  # reads the training images: none usable is an error, before OUT is made
    if init is not None:
        _warm_start(run.model, init, config)
    with _removed_if_left_empty(out):
        step, history, config = _resume(out / "checkpoint.pt", state, run, config)
        started = time.perf_counter()
        step = _train(run, config, out, step, history, progress)
    final = out / "final.safetensors"
    train_info = {
        "config": _recorded(config),
        "steps_done": step,
        "seconds_this_run": time.perf_counter() - started,
    }
    save_weights(final, run.model.net, _weights_meta(config, run, step), extra={"training": train_info})
    return final


def _check_objective(config: PretrainConfig) -> None:
    if config.objective == "noise2self" and get_entry(config.model).output == "residual":
        raise ConfigError(
            f"Noise2Self needs a network that predicts the clean image, not the noise like "
            f"'{config.model}' (it would learn the identity outside the masked pixels); use dncnn_n2s"
        )


def _start(config: PretrainConfig, device: torch.device) -> Training:
    """A fresh run: the seeded network, Adam with a cosine schedule, the patches and the noise."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, weights=None, channels=config.channels, **config.arch_kwargs).to(
        device
    )
    model.train()
    if device.type == "cpu" and channels_last_updates_pay():  # not on AVX2-only CPUs: slow weight gradient
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = cosine_schedule(optimizer, config)
    sampler = PatchSampler(config.data, config.channels, config.patch, config.seed)
    noise = build_pretraining_noise(config).to(device)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    loss_fn = nn.functional.l1_loss if config.loss == "l1" else nn.functional.mse_loss
    run = Training(model, optimizer, scheduler, sampler, noise, generator, loss_fn, device)
    if config.objective == "noise2self":
        from rfr_deploy.jobs.noise2self import Noise2SelfObjective

        run.noise2self = Noise2SelfObjective(loss_fn)
    return run


def _train(
    run: Training, config: PretrainConfig, out: Path, step: int, history: list[float], progress
) -> int:
    """Updates from ``step`` to ``config.steps``, checkpointed; returns the last step."""
    while step < config.steps:
        loss = run.loss(run.sampler.sample(config.batch).to(run.device))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        run.scheduler.step()
        step += 1
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ConfigError(f"training diverged at step {step} (loss {value}); lower the learning rate")
        history.append(value)
        if progress is not None:
            progress(step, config.steps, value)
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save_checkpoint(out / "checkpoint.pt", run, config, step, history)
    return step


def _weights_meta(config: PretrainConfig, run: Training, step: int) -> WeightsMeta:
    model, noise = run.model, run.noise
    levels = noise.std_range() if hasattr(noise, "std_range") else (config.sigma_low, config.sigma_high)
    return WeightsMeta(
        arch=config.model,
        channels=config.channels,
        arch_kwargs={**model.meta.arch_kwargs},
        sigma_range=levels,  # camera noise: its raw std's range, not a Gaussian σ's
        output=model.meta.output,
        noise_map=model.meta.noise_map,
        noise=SELF_SUPERVISED if config.objective == "noise2self" else config.noise,
        source="rfr-deploy pretrain",
        notes=f"{step} steps of batch {config.batch}×{config.patch}², {config.loss}, Adam {config.lr:g}→{config.lr_min:g}"
        + (f", {run.noise2self!r}" if run.noise2self is not None else "")
        + _init_note(config),
    )


def _recorded(config: PretrainConfig) -> dict[str, Any]:
    """The settings as the weights and checkpoints record them: σ in grey levels, as given on the command line."""
    recorded = dataclasses.asdict(config)
    recorded["sigma_low"], recorded["sigma_high"] = (
        grey_levels(config.sigma_low),
        grey_levels(config.sigma_high),
    )
    return recorded


def _init_note(config: PretrainConfig) -> str:
    """Where a warm-started run began, for the weights' notes (a resumed run still names it)."""
    if not config.init:
        return ""
    from rfr_deploy.models.weights import read_weights_meta

    try:
        before = read_weights_meta(config.init)[0].notes
    except Exception:  # weights without rfr-deploy metadata (e.g. an official .pth)
        before = ""
    return f"; started from {Path(config.init).name}" + (f" ({before})" if before else "")


def _warm_start(model, init: nn.Module, config: PretrainConfig) -> None:
    """Start from the parameters of ``init``, the network of ``config.init`` (a fresh optimizer)."""
    try:
        model.net.load_state_dict(init.state_dict())
    except RuntimeError as exc:
        raise WeightsError(
            f"{config.init}: weights do not fit the '{config.model}' network ({first_line(exc)})"
        ) from exc


def cosine_lr(config: PretrainConfig, step: int) -> float:
    """The learning rate after ``step`` updates: a cosine from ``lr`` down to ``lr_min`` over
    ``config.steps`` updates, held at ``lr_min`` beyond."""
    done = min(step, config.steps) / config.steps
    return config.lr_min + (config.lr - config.lr_min) * (1 + math.cos(math.pi * done)) / 2


def cosine_schedule(
    optimizer: torch.optim.Optimizer, config: PretrainConfig, step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's learning rate schedule in closed form, set at ``step``: a resumed run goes on along the
    cosine over its whole length, also where ``--steps`` extends it beyond the checkpointed run's."""
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_lr(config, s) / config.lr, last_epoch=step - 1
    )


@contextlib.contextmanager
def _removed_if_left_empty(out: Path) -> Iterator[None]:
    """Make the run folder ``out`` and its missing parents; where the run fails, remove those it made
    and left empty (a run that diverges before its first checkpoint leaves no folder behind)."""
    made = [folder for folder in (out, *out.parents) if not folder.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty: a checkpoint was written
                break
        raise


def _save_checkpoint(
    path: Path, run: Training, config: PretrainConfig, step: int, history: list[float]
) -> None:
    state = {
        "model": run.model.net.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "generator": run.generator.get_state(),
        "sampler": json.dumps(run.sampler.rng.bit_generator.state),
        "config": json.dumps(_recorded(config), sort_keys=True),
        "data_folders": json.dumps(resolved_folders(config.data)),
        "step": step,
        "history": torch.tensor(history, dtype=torch.float32),
    }
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def _resume(
    path: Path, state: dict[str, Any] | None, run: Training, config: PretrainConfig
) -> tuple[int, list[float], PretrainConfig]:
    """The step, loss history and settings to go on from: a fresh start where there is no checkpoint
    (``state``, read from ``path``), else its own, trained with this run's settings but for ``--steps`` and
    how the process runs (:func:`~rfr_deploy.jobs.pretrain_resume.check_same_training`), and started from
    its own ``--init``."""
    if state is None:
        return 0, [], config
    check_same_training(path, state, _recorded(config))
    step = state["step"]
    try:
        run.model.net.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.generator.set_state(state["generator"])
        run.sampler.rng.bit_generator.state = json.loads(state["sampler"])
        history = [float(v) for v in state["history"]]
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise not_resumable(path, first_line(exc, typed=True, limit=120)) from exc
    run.scheduler = cosine_schedule(run.optimizer, config, step)
    return step, history, dataclasses.replace(config, init=state["config"].get("init"))


def checkpoint_step(out: str | os.PathLike) -> int:
    """The step of the checkpoint in the run folder ``out``; 0 where there is none."""
    state = read_checkpoint(Path(out) / "checkpoint.pt")
    return 0 if state is None else state["step"]
