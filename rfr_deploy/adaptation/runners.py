"""Choosing the step runner: the one :func:`make_runner` that ``adapt`` and ``rfr-deploy bench`` ask.

Without a mode it picks what ``config.fast`` asks for on the targets' device (what ``adapt`` runs);
with one of :data:`MODES` it builds exactly that runner (the modes the bench times side by side).
The runners themselves: :class:`~rfr_deploy.adaptation.update.EagerRunner`,
:mod:`rfr_deploy.adaptation.cpu_runners` (fused Adam, channels-last, bf16) and
:mod:`rfr_deploy.adaptation.cuda_graphs` (fused mixed precision, CUDA graphs).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from rfr_deploy.adaptation.config import CUDA_GAUSSIAN_STEPS, GAUSSIAN_PATCH, GAUSSIAN_STEPS, AdaptConfig
from rfr_deploy.adaptation.cpu_runners import (
    Bf16Runner,
    ChannelsLastRunner,
    FusedAdamRunner,
    channels_last_updates_pay,
    cpu_fast_runner,
    cpu_precision,
)
from rfr_deploy.adaptation.cuda_graphs import FastRunner, resolve_precision, try_graph_runner
from rfr_deploy.adaptation.update import EagerRunner, StepRunner, UpdateContext
from rfr_deploy.errors import ConfigError
from rfr_deploy.heap import keep_freed_memory_on

MODES = (
    "eager",
    "fused-adam",
    "channels-last",
    "bf16",
    "bf16-unfused",
    "channels-last+compile",
    "graphs-fp32",
    "amp",
    "amp+graphs",
)
"""Runners by name: the eager update; on CPU with fused Adam in the default layout, channels-last weights,
with bf16 convolutions, or under
``torch.compile``, or with bf16 convolutions but each convolution and its ReLU in two oneDNN calls
(what the fusion gains); the fused update in fp32 with CUDA graphs, in mixed precision without and with them."""


def make_runner(context: UpdateContext, mode: str | None = None) -> StepRunner:
    """The step runner of ``mode`` (one of :data:`MODES`), or with None the one ``config.fast`` picks.

    ``fast``: CUDA: CUDA graphs with mixed precision ('auto' falls back to eager when capture fails,
    'on' makes that an error). CPU ('auto'): the eager update with fused Adam, with channels-last weights where
    that pays (:func:`~rfr_deploy.adaptation.cpu_runners.channels_last_updates_pay`), with bf16
    convolutions where ``amp`` asks for them (:func:`~rfr_deploy.adaptation.cpu_runners.cpu_precision`).
    'off': the eager update. On the CPU, ``config.keep_memory`` first keeps the memory updates free
    in the process (:func:`~rfr_deploy.heap.keep_freed_memory_on`).
    """
    keep_freed_memory_on(context.device, context.config.keep_memory)
    if mode is None:
        return _configured_runner(context)
    if mode == "eager":
        return EagerRunner(context)
    if mode == "fused-adam":
        return FusedAdamRunner(context)
    if mode == "channels-last":
        return ChannelsLastRunner(context)
    if mode in ("bf16", "bf16-unfused"):
        return Bf16Runner(context, fuse=mode == "bf16")
    if mode == "channels-last+compile":
        runner = ChannelsLastRunner(dataclasses.replace(context, model=torch.compile(context.model)))
        runner.name = "eager+channels-last+compile"
        return runner
    if mode not in MODES:
        raise ValueError(f"unknown runner mode {mode!r} (one of {', '.join(MODES)})")
    config = dataclasses.replace(context.config, amp="off" if mode == "graphs-fp32" else "auto")
    graphs = mode in ("graphs-fp32", "amp+graphs")
    return FastRunner(dataclasses.replace(context, config=config), graphs=graphs)


def _configured_runner(context: UpdateContext) -> StepRunner:
    fast = context.config.fast
    if fast == "off":
        return EagerRunner(context)
    if context.device.type == "cuda":
        runner = try_graph_runner(context)
        if runner is not None:
            return runner
        if fast == "on":
            raise RuntimeError("fast path requested (fast='on') but CUDA graph capture failed")
    elif fast == "on":
        check_update_settings(context.config, context.device)
    else:
        runner = cpu_fast_runner(context)
        if runner is not None:
            return runner
    return EagerRunner(context)


def check_update_settings(config: AdaptConfig, device: torch.device) -> None:
    """Refuse what the updates cannot run on ``device``, before any work: ``fast='on'`` (CUDA graphs)
    without CUDA, ``amp='fp16'`` on the CPU (no fast fp16 kernels: the updates would run in fp32),
    ``amp='bf16'`` on a CPU without native bf16."""
    if config.fast == "on" and device.type != "cuda":
        raise ConfigError(
            f"fast='on' (--fast on) needs a CUDA device, and this run is on the {device.type}: use auto"
        )
    if config.amp == "fp16" and device.type == "cpu":
        raise ConfigError(
            "amp='fp16' (--amp fp16) needs a GPU (no fast fp16 kernels on a CPU: the updates would run in "
            "fp32), and this run is on the cpu: use auto, bf16 or off, or --device cuda"
        )
    if device.type == "cpu":
        cpu_precision(config.amp)


def default_update(device: torch.device) -> dict[str, Any]:
    """What ``adapt`` runs on ``device`` with the defaults (``fast='auto'``, ``amp='auto'``) for a
    convolutional network and Gaussian noise: the runner's name, its precision and the default budget
    (``rfr-deploy env``)."""
    defaults = AdaptConfig()
    if device.type == "cuda":
        precision = resolve_precision(defaults.amp, device)
        runner = f"cuda-graph+{precision}+channels-last (the eager update where capture fails)"
        return {"runner": runner, "precision": precision, "steps": CUDA_GAUSSIAN_STEPS, "patch": None}
    precision = cpu_precision(defaults.amp)
    if precision == "bf16":
        runner = f"{Bf16Runner.name} (the last {defaults.fp32_tail} updates in fp32)"
    else:
        runner = (ChannelsLastRunner if channels_last_updates_pay() else FusedAdamRunner).name
    return {"runner": runner, "precision": precision, "steps": GAUSSIAN_STEPS, "patch": GAUSSIAN_PATCH}
