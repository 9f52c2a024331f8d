"""Speed of one restore-from-restored update, per model and runner (``rfr-deploy bench``).

For each model (default full-size configuration, random weights: the weights do not change the
work) the same update the adaptation loop runs is timed on a ``size×size`` RGB image, batch 1:

* CPU: the eager loop, the CPU fast path (channels-last weights) and, on CPUs with native bf16,
  bf16 convolutions ("bf16", :class:`~rfr_deploy.adaptation.cpu_runners.Bf16Runner`), with their ratios;
  optionally ``torch.compile`` (``compile=True``).
* GPU: the eager loop (fp32), CUDA graphs in fp32, mixed precision without graphs ("amp") and
  mixed precision with CUDA graphs ("amp+graphs", what ``adapt`` uses by default).

Each mode starts from the same weights and runs ``warmup`` updates; then ``repeats`` rounds of
``steps`` timed updates per mode follow, interleaved (round r of every mode before round r + 1 of
any, so a changing machine load affects all modes alike), timed with CUDA events on GPU and
``perf_counter`` on CPU. The per-update time of a round is its time over its updates; median, min
and max are over rounds. On CPU a heavy network can take seconds per update: each model has a
time ``budget`` (approximate) shared by its modes and the adapt-and-export job; timing stops when
the modes' share is spent (each mode gets at least one timed update; the report gives the number
actually timed), and ``fit_budget`` shrinks the image beforehand when even that would not fit. The
wall time of a whole job on a generated image is measured too, through the job runner the caller
passes (``rfr-deploy bench``: adapt-and-export; :mod:`rfr_deploy.bench.job`). cuDNN autotuning is set
to each mode's own choice before its warm-up and rounds. Every mode's runner comes from
:func:`rfr_deploy.adaptation.runners.make_runner`, asked for by name.

In the same run (``limits``) the device's 3×3 64-channel convolution rates (fp32, bf16) and, on
CUDA, copy bandwidth are measured at the start and the end, and each model's FLOPs per update are
counted, so that every mode is also shown as GFLOP/s and a fraction of the measured rate
(:mod:`rfr_deploy.bench.limits`).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
import warnings

import numpy as np
import torch

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.cpu_runners import channels_last_updates_pay
from rfr_deploy.adaptation.runners import make_runner
from rfr_deploy.adaptation.update import UpdateContext
from rfr_deploy.bench.job import JobRunner, time_job
from rfr_deploy.bench.limits import Limits, measure_limits, time_calls, update_flops
from rfr_deploy.bench.report import BenchReport, ModelResult, ModeTiming, default_mode
from rfr_deploy.bench.settings import SIGMA, BenchSettings
from rfr_deploy.devices import (
    bf16_supported,
    cpu_native_bf16,
    describe_environment,
    resolve_device,
    synchronize,
    use_threads,
)
from rfr_deploy.errors import ConfigError, first_line
from rfr_deploy.heap import keep_freed_memory_on
from rfr_deploy.inference import to_tensor
from rfr_deploy.models.factory import create_model, get_entry
from rfr_deploy.noise.gaussian import GaussianNoise
from rfr_deploy.progress import QUIET, Reporter
from rfr_deploy.transforms import DIHEDRAL

CPU_MODES = ("eager", "channels-last", "bf16")
GPU_MODES = ("eager", "graphs-fp32", "amp", "amp+graphs")
"""The runner modes timed on each device (:data:`rfr_deploy.adaptation.runners.MODES`)."""


def run_bench(
    settings: BenchSettings, reporter: Reporter = QUIET, run_job: JobRunner | None = None
) -> BenchReport:
    """Time every model of ``settings``; ``run_job`` runs the whole job that ``settings.job`` times
    (``rfr-deploy bench`` passes :func:`rfr_deploy.cli.bench.run_adapt_and_export`)."""
    if settings.job and run_job is None:
        raise ConfigError("timing the whole job (job=True) needs a job runner: run_bench(..., run_job=...)")
    for name in settings.models:
        get_entry(name)  # an unknown name fails here, before any timing
    device = resolve_device(settings.device)
    use_threads(settings.threads)
    keep_freed_memory_on(device, settings.keep_memory)
    for message in ignored_options(settings, device):  # said before any timing
        warnings.warn(message, stacklevel=2)
    environment = describe_environment(device)
    reporter.note(
        f"bench on {environment['device']} (torch {environment['torch']}, "
        f"CUDA {environment['cuda']}, cuDNN {environment['cudnn']}, {environment['cpu_threads']} CPU threads)"
    )
    limits = [bench_limits(device, settings.size, reporter, "start")] if settings.limits else []
    results = []
    for name in settings.models:
        results.append(bench_model(name, settings, device, reporter, run_job))
        size = results[-1].size
        if settings.limits and all(lim.size != size for lim in limits):  # its fractions need its own size's
            limits.append(bench_limits(device, size, reporter, f"for {name}"))
    if settings.limits:
        limits.append(bench_limits(device, settings.size, reporter, "end"))
    return BenchReport(settings, environment, results, limits)


def ignored_options(settings: BenchSettings, device: torch.device) -> list[str]:
    """Warnings for the modes ``settings`` asks for that cannot run on ``device``: each is left out, as
    the bf16 mode is on a CPU without native bf16, and the other modes are timed."""
    ignored = []
    if settings.unfused and device.type != "cpu":
        ignored.append(
            f"--unfused is ignored: the unfused bf16 update is a CPU mode, not a {device.type} one"
        )
    elif settings.unfused and not cpu_native_bf16():
        ignored.append(
            "--unfused is ignored: this CPU has no native bf16, so no bf16 update is timed to compare with"
        )
    if settings.compile and device.type != "cpu":
        ignored.append("--compile is ignored: torch.compile is timed on the CPU only")
    return ignored


def bench_limits(device: torch.device, size: int, reporter: Reporter, when: str) -> Limits:
    """The device's 3×3 64-channel convolution rates (forward, and forward + backward) in fp32 and bf16
    (fp16 on a GPU without bf16), and on CUDA its copy bandwidth, at ``size``² (``when``: a label)."""
    if device.type == "cuda":
        low = "bf16" if bf16_supported(device) else "fp16"
    else:
        low = "bf16" if cpu_native_bf16() else None
    limits = dataclasses.replace(measure_limits(device, size, low), when=when)
    copy = f", copy {limits.copy_gbps:g} GB/s" if limits.copy_gbps else ""
    reporter.note(
        f"limits ({when}): 3x3 64-ch conv at {size}² fp32 {limits.conv_fp32_gflops:g} GFLOP/s, "
        f"{low or 'no bf16'} {limits.conv_low_gflops or '-'} GFLOP/s (forward + backward: "
        f"{limits.train_fp32_gflops:g}, {limits.train_low_gflops or '-'}){copy}"
    )
    return limits


def bench_model(
    name: str, settings: BenchSettings, device: torch.device, reporter: Reporter, run_job: JobRunner | None
) -> ModelResult:
    torch.manual_seed(settings.seed)
    model = create_model(name, weights=None, channels=3, device=device)
    modes = list(GPU_MODES if device.type == "cuda" else CPU_MODES)
    if device.type == "cpu" and not cpu_native_bf16():
        modes.remove("bf16")  # emulated bf16 is slower than fp32: not a mode worth timing
    if device.type == "cpu" and not channels_last_updates_pay():
        modes.insert(1, "fused-adam")  # what adapt runs where channels-last updates are slower
    if settings.unfused and "bf16" in modes:
        modes.append("bf16-unfused")
    if settings.compile and device.type == "cpu":
        modes.append("channels-last+compile")
    share = settings.budget / (len(modes) + int(settings.job))
    size, note = settings.size_of(name), ""
    if settings.fit_budget and device.type == "cpu":
        size = fitted_size(model, size, settings, share)
        if size != settings.size_of(name):
            note = f"size reduced from {settings.size_of(name)} to fit the budget"
            reporter.note(f"{name}: {note}: {size}x{size}")
    result = ModelResult(name, size=size, params=model.parameter_count(), note=note)
    if settings.limits:
        result.flops_per_update = update_flops(model, 3, size)
    clean, noisy = synthetic_image(size, settings.seed)
    target = to_tensor(clean, device)
    result.modes = time_modes(modes, model, target, settings, share * len(modes))
    for timing in result.modes:
        shown = f"{timing.median_ms:.2f} ms/update" if timing.median_ms is not None else timing.error
        reporter.note(f"{name} {size}x{size} {timing.mode}: {shown} ({timing.updates} timed updates)")
    if settings.job:
        fast = result.timing(default_mode(device.type)) or result.fastest
        estimate = fast.median_ms / 1e3 if fast else None
        result.job_s, result.job_note = time_job(name, model, noisy, settings, run_job, share, estimate)
        reporter.note(f"{name}: adapt-and-export {result.job_note}")
    return result


def fitted_size(model, size: int, settings: BenchSettings, share: float, probe: int = 32) -> int:
    """The largest side (multiple of 16, at most ``size``) whose warm-up and one timed update per mode
    fit ``share`` seconds, extrapolated from updates at ``probe``² (time ∝ pixels; overestimates
    small networks, whose fixed per-update cost dominates at ``probe``²)."""
    if size <= probe:
        return size
    probe_settings = dataclasses.replace(settings, steps=1, repeats=2, warmup=1)
    device = next(model.parameters()).device
    (timing,) = time_modes(
        ["eager"], model, torch.rand(1, 3, probe, probe, device=device), probe_settings, 1e9
    )
    if timing.median_ms is None:
        return size
    per_pixel = timing.min_ms / 1e3 / probe**2  # the least disturbed of two updates
    side = int((share / ((settings.warmup + 1) * per_pixel)) ** 0.5)
    return max(probe, min(size, side - side % 16))


class _Live:
    """A mode being timed: its record, runner, step function and per-update times."""

    def __init__(self, timing: ModeTiming):
        self.timing, self.runner, self.update, self.per_update = timing, None, None, []
        self.cudnn_benchmark = torch.backends.cudnn.benchmark
        """cuDNN autotuning as this mode's runner set it up: set again before each of its rounds (the
        runners stay alive side by side and each would otherwise leave it to the next)."""

    def activate(self) -> None:
        torch.backends.cudnn.benchmark = self.cudnn_benchmark

    def summary(self) -> ModeTiming:
        """The record, with the median, min, max and rounds of the per-update times filled in."""
        t, v = self.timing, self.per_update
        if v:
            t.repeats, t.median_ms, t.rounds_ms = (
                len(v),
                round(statistics.median(v), 4),
                [round(x, 4) for x in v],
            )
            t.min_ms, t.max_ms = round(min(v), 4), round(max(v), 4)
        return t

    def fail(self, exc: Exception) -> None:
        self.timing.error = f"failed: {first_line(exc)}"
        self.close()

    def close(self) -> None:
        finish = getattr(self.runner, "finish", None)
        self.runner, self.update = None, None
        if finish is not None:
            finish()


def time_modes(
    modes, model, target: torch.Tensor, settings: BenchSettings, budget: float
) -> list[ModeTiming]:
    """Per-update time of each runner kind, interleaved: repeat r of every mode runs before repeat
    r + 1 of any, so a change of machine load affects all modes alike. Errors are reported, not raised."""
    device, deadline = target.device, time.perf_counter() + budget
    plan = torch.Generator().manual_seed(settings.seed)
    ks = torch.randint(DIHEDRAL, (64,), generator=plan).tolist()
    steps = settings.warmup + settings.steps * settings.repeats
    # fp32_tail=0: the bf16 modes run in bf16 throughout
    config = AdaptConfig(steps=steps, seed=settings.seed, fp32_tail=0, keep_memory=settings.keep_memory)
    lives = [_Live(ModeTiming(mode)) for mode in modes]
    benchmark_before = torch.backends.cudnn.benchmark
    for live in lives:
        try:
            torch.backends.cudnn.benchmark = benchmark_before  # what the mode's runner starts from
            t0 = time.perf_counter()
            net = copy.deepcopy(model).train()
            generator = torch.Generator(device=device).manual_seed(settings.seed)
            noise = GaussianNoise(SIGMA).to(device)
            context = UpdateContext(net, [target], noise, config, generator)
            live.runner = runner = make_runner(context, live.timing.mode)
            synchronize(device)
            live.timing.setup_s, live.timing.runner = round(time.perf_counter() - t0, 4), runner.name
            live.cudnn_benchmark = torch.backends.cudnn.benchmark
            counter = iter(range(1 << 30))
            live.update = lambda r=runner, c=counter: r.step(0, ks[next(c) % len(ks)], None)
            for i in range(settings.warmup):
                t0 = time.perf_counter()
                live.update()
                synchronize(device)
                if i == 0:
                    live.timing.first_update_ms = round(1e3 * (time.perf_counter() - t0), 3)
        except Exception as exc:  # a mode that cannot run here is reported as such
            live.fail(exc)
    for _ in range(settings.repeats):
        for live in lives:
            if live.update is None:
                continue
            live.activate()
            try:
                done, seconds = time_calls(live.update, settings.steps, device, deadline)
            except Exception as exc:
                live.fail(exc)
                continue
            live.per_update.append(1e3 * seconds / done)
            live.timing.updates += done
        if time.perf_counter() > deadline:
            break
    for live in lives:
        live.close()
    torch.backends.cudnn.benchmark = benchmark_before
    return [live.summary() for live in lives]


def synthetic_image(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A clean ``size×size`` RGB image with repeated structure, and its noisy version (σ = 25)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 0.5 + 0.3 * np.sin(2 * np.pi * 8 * x) * np.cos(2 * np.pi * 6 * y)
    clean = np.stack([base, 0.7 * base + 0.15, 1.0 - base], axis=2).astype(np.float32)
    noise = np.random.default_rng(seed).standard_normal(clean.shape).astype(np.float32) * SIGMA
    return clean, np.clip(clean + noise, 0.0, 1.0)
