"""The fast step runner: the whole update replayed from CUDA graphs with mixed precision (or run eagerly).

One restore-from-restored update of a small network is a few hundred tiny kernels: on a GPU
its time is launch overhead, not arithmetic. :class:`FastRunner` removes it.

Design of the CUDA-graph runner
    * One graph per training-batch shape ``(B, C, h, w)``: patch training and square images need
      one, a non-square whole image two (the odd dihedral transforms swap h and w), a set of images
      one or two per size (at most :data:`MAX_GRAPHS`). The graphs share one memory pool and the
      state that persists between updates, which is allocated outside every graph: parameters,
      gradients (allocated before capture, zeroed in place inside the graph), Adam's moments and
      step count (``capturable=True``, on the device), the learning rate (a device tensor) and the
      fp16 loss scale.
    * The step's clean batch (patches cut, dihedral transform ``k`` applied: the same batch as
      :class:`~rfr_deploy.adaptation.update.EagerRunner`) is copied into the graph's static input before each
      replay; one to four small copy kernels, and a single graph covers every ``k`` and patch origin.
    * Inside the graph: noise from the run's own generator (registered with every graph where torch
      needs it, see :mod:`rfr_deploy.adaptation.capture_checks`, so each replay advances its Philox offset
      exactly as an eager draw would; the same seed draws the same
      noise as the eager loop; the runner draws from a private copy of that generator, so that a
      failed capture cannot spoil the caller's), forward under autocast (bf16, or fp16 with a
      :class:`torch.amp.GradScaler` on GPUs without bf16), loss, backward, fused Adam step.
    * Before any capture, :data:`WARMUP_UPDATES` updates of every shape run on a side stream (cuDNN
      autotuning, lazily created optimizer state, library workspaces), as the CUDA-graph docs
      require. Parameters, buffers, optimizer state, generator and loss scale are snapshot before
      and restored after, so the first replay is exactly the eager loop's first update.
    * The learning-rate schedule of :func:`~rfr_deploy.adaptation.update.make_optimizer` runs on host floats as
      in the eager loop; the device learning rate is refilled (one fill kernel) only when it changes.
    * Known capture-breakers are looked for before anything is captured (settings, host syncs in a
      warm-up update, host-drawn noise: :mod:`rfr_deploy.adaptation.capture_checks`), since torch does not
      fully clean up after a failed capture. Any failure restores the snapshot, the parameter
      layout and the current stream, and :func:`try_graph_runner` returns None with a one-line warning (the eager loop then runs).

The host-side pieces (batch shapes, the warm-up snapshot, device learning rates) live in
:mod:`rfr_deploy.adaptation.plan` and are tested on the CPU. None of the CUDA code paths can run in CPU-only
CI; ``tests/test_cuda_graphs.py`` holds the GPU comparison against the eager loop, skipped there, and
``benchmarks/gpu_check.sh`` runs it on a GPU.

CPU: the channels-last and bf16 runners live in :mod:`rfr_deploy.adaptation.cpu_runners`.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Literal

import torch

from rfr_deploy.adaptation import capture_checks
from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.adaptation.plan import DeviceLearningRates, UpdateSnapshot, clean_batch, training_shapes
from rfr_deploy.adaptation.update import UpdateContext, loss_function, make_optimizer
from rfr_deploy.devices import bf16_supported
from rfr_deploy.errors import first_line
from rfr_deploy.layout import has_convolutions

Precision = Literal["bf16", "fp16", "fp32"]
WARMUP_UPDATES = 3
MAX_GRAPHS = 8
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class CaptureError(RuntimeError):
    """The update cannot run as CUDA graphs here; the message says why."""


def try_graph_runner(context: UpdateContext) -> FastRunner | None:
    """The CUDA-graph :class:`FastRunner`, or None (with a one-line warning) where it cannot be used.
    Updates in tiles (``context.tile``, where one would not fit in device memory) run eagerly."""
    if context.tile is not None:
        warnings.warn(f"CUDA graphs not used: the updates run in {context.tile}² tiles", stacklevel=2)
        return None
    try:
        return FastRunner(context, graphs=True)
    except Exception as exc:  # any failure means: use the eager loop
        warnings.warn(f"CUDA graphs not used, running the eager loop: {first_line(exc)}", stacklevel=2)
        return None


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """Autocast precision for ``config.amp`` on ``device``: bf16 where the GPU has it, else fp16."""
    if device.type != "cuda" or amp == "off":
        return "fp32"
    if amp == "fp16":
        return "fp16"
    native = bf16_supported(device)
    if amp == "bf16" and not native:
        raise CaptureError(f"amp='bf16' but {torch.cuda.get_device_name(device)} has no native bfloat16")
    return "bf16" if native else "fp16"


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    input: torch.Tensor
    loss: torch.Tensor
    noisy: torch.Tensor | None = None
    """Static noisy batch of the term on the noisy input (None when it is off)."""


class FastRunner:
    """The update with autocast, channels-last and fused Adam, replayed from CUDA graphs.

    ``graphs=False`` runs the same update eagerly (the "amp" mode of ``rfr-deploy bench``; it
    also runs on CPU, in fp32). ``channels_last`` defaults to True for convolutional networks.
    Call :meth:`finish` after the last update: it frees the graphs and hands the network back
    in the default layout.
    """

    def __init__(self, context: UpdateContext, graphs: bool = True, channels_last: bool | None = None):
        self.device = context.device
        if graphs and (self.device.type != "cuda" or not torch.cuda.is_available()):
            raise CaptureError("CUDA graphs need CUDA tensors")
        config = context.config
        self.model, self.targets, self.noise = context.model, context.targets, context.noise
        self.generator, self.noisy_term = context.generator, context.noisy_term
        self.batch, self.patch, self.use_graphs = config.batch, config.patch, graphs
        self.loss_fn = loss_function(config.loss)
        self.precision = resolve_precision(config.amp, self.device)
        self.channels_last = has_convolutions(self.model) if channels_last is None else channels_last
        self.layout = torch.channels_last if self.channels_last else torch.contiguous_format
        kind = "cuda-graph" if graphs else ("cuda-eager" if self.device.type == "cuda" else "fused-eager")
        self.name = "+".join([kind, self.precision] + (["channels-last"] if self.channels_last else []))
        shapes = training_shapes(self.targets, config.batch, config.patch)
        self.registration = capture_checks.generator_registration()
        blockers = capture_checks.capture_blockers(
            config, self.precision, len(shapes), MAX_GRAPHS, self.registration
        )
        if graphs and blockers:
            raise CaptureError("; ".join(blockers))
        self._benchmark_before = torch.backends.cudnn.benchmark
        self.graphs: dict[tuple[int, ...], _Graph] = {}
        self.lrs: DeviceLearningRates | None = None
        self._set_up(config, shapes)

    def _set_up(self, config: AdaptConfig, shapes) -> None:
        """Layout, optimizer, gradient scaler and (with graphs) the captures; a failure undoes them all."""
        entry = snapshot = None
        if self.use_graphs:
            entry = _EntryState(self.device)
            # A capture that fails half-way leaves the generators it registered unusable outside graphs:
            # draw from a private copy of the run's generator.
            private = torch.Generator(device=self.device)
            private.set_state(self.generator.get_state())
            self.generator = private
        try:
            torch.backends.cudnn.benchmark = self.device.type == "cuda" or self._benchmark_before
            self.model.to(memory_format=self.layout)
            graphs = self.use_graphs
            self.optimizer, self.scheduler = make_optimizer(self.model, config, fused=True, capturable=graphs)
            self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
            if graphs:
                snapshot = UpdateSnapshot(self.model, self.optimizer, self.generator, self.scaler)
                with torch.cuda.device(self.device):
                    self._capture(shapes, snapshot)
        except BaseException:
            if entry is not None:
                entry.restore(snapshot)
            with contextlib.suppress(Exception):
                self.finish()
            raise

    def step(self, index: int, k: int, offsets: list[tuple[int, int]] | None) -> torch.Tensor:
        x = clean_batch(self.targets[index], k, offsets, self.batch, self.patch)
        y = self._noisy_batch(index, k, offsets)
        if self.use_graphs:
            captured = self.graphs.get(tuple(x.shape))
            if captured is None:
                raise RuntimeError(
                    f"no CUDA graph was captured for a training batch of shape {tuple(x.shape)}"
                )
            captured.input.copy_(x)
            if captured.noisy is not None:
                captured.noisy.copy_(y)
            captured.graph.replay()
            loss = captured.loss.clone()  # the static loss is overwritten by the next replay
        else:
            if y is not None:
                y = y.contiguous(memory_format=self.layout)
            loss = self._update(x.contiguous(memory_format=self.layout), y)
        self.scheduler.step()
        if self.lrs is not None:
            self.lrs.sync()
        return loss

    def finish(self) -> None:
        """Free the graphs and hand the network back with plain (contiguous) parameters."""
        if self.graphs:
            torch.cuda.synchronize(self.device)
            self.graphs.clear()
        for p in self.model.parameters():
            p.grad = None
        self.model.to(memory_format=torch.contiguous_format)
        torch.backends.cudnn.benchmark = self._benchmark_before

    def _noisy_batch(self, index: int, k: int, offsets) -> torch.Tensor | None:
        """The noisy batch of the term on the noisy input, cut like the clean one (None: off)."""
        if self.noisy_term is None:
            return None
        return self.noisy_term.batch(index, k, offsets, self.batch, self.patch)

    def _update(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """One update on the clean batch ``x`` (and the noisy batch ``y`` of the term on the noisy input):
        noise, forward, loss, backward, optimizer step."""
        self.optimizer.zero_grad(set_to_none=not self.use_graphs)
        noisy, sigma = self.noise(x, self.generator)
        dtype = _AUTOCAST.get(self.precision)
        autocast = (
            torch.autocast("cuda", dtype=dtype, cache_enabled=False)
            if dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            out = self.model(noisy, sigma)
        loss = self.loss_fn(out.float(), x)
        if y is not None:
            with autocast:
                loss = loss + self.noisy_term.loss(self.model, y, self.generator)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # fused Adam unscales and skips inf steps on the device
            self.scaler.update()
        return loss.detach()

    def _capture(self, shapes, snapshot: UpdateSnapshot) -> None:
        """Warm up every shape first (no activation set is allocated while the pool holds a graph),
        check the update for known capture-breakers, then capture one graph per shape."""
        self.lrs = DeviceLearningRates(self.optimizer, self.device)
        for p in self.model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)  # outside the pool; every graph zeroes it in place
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        with self.lrs.installed(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            statics = [self._static_batches(index, k, offsets) for index, k, offsets in shapes.values()]
            for static, static_noisy in statics:
                self._warm_up(static, static_noisy, stream)
            snapshot.restore()
            self._check_fresh_noise(statics[0][0], stream)
            for shape, (static, static_noisy) in zip(shapes, statics, strict=True):
                graph = torch.cuda.CUDAGraph()
                capture_checks.register_generator(graph, self.generator, self.registration)
                with torch.cuda.graph(graph, pool=pool, stream=stream):
                    loss = self._update(static, static_noisy)
                snapshot.restore()
                self.graphs[shape] = _Graph(graph, static, loss, static_noisy)

    def _static_batches(self, index: int, k: int, offsets) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The static clean input of one shape's graph (and its noisy batch, if any)."""
        x = clean_batch(self.targets[index], k, offsets, self.batch, self.patch)
        static = torch.empty(x.shape, device=self.device, memory_format=self.layout)
        static.copy_(x)
        noisy = self._noisy_batch(index, k, offsets)
        return static, (None if noisy is None else noisy.clone(memory_format=self.layout))

    def _warm_up(
        self, static: torch.Tensor, static_noisy: torch.Tensor | None, stream: torch.cuda.Stream
    ) -> None:
        """:data:`WARMUP_UPDATES` updates on the side stream, the last with host synchronisations
        turned into errors (a capture-breaker found before anything is captured)."""
        current = torch.cuda.current_stream(self.device)
        stream.wait_stream(current)
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_UPDATES - 1):
                self._update(static, static_noisy)
            try:
                with capture_checks.no_host_syncs(self.device):
                    self._update(static, static_noisy)
            except RuntimeError as exc:
                if "synchroniz" not in str(exc).lower():
                    raise
                raise CaptureError(f"the update synchronises with the host: {first_line(exc)}") from exc
        current.wait_stream(stream)
        torch.cuda.synchronize(self.device)

    def _check_fresh_noise(self, static: torch.Tensor, stream: torch.cuda.Stream) -> None:
        """The noise must draw from the run's generator alone: eagerly (it advances the generator and
        leaves torch's host generator alone), then across the replay of a captured draw (the
        generator's Philox offset advances). Zero-level noise passes: it still draws."""
        state = self.generator.get_state()
        problem = capture_checks.draws_only_from(self.generator, lambda: self.noise(static, self.generator))
        if problem is None:
            graph = torch.cuda.CUDAGraph()
            capture_checks.register_generator(graph, self.generator, self.registration)
            with torch.cuda.graph(graph, stream=stream):
                self.noise(static, self.generator)
            before = capture_checks.rng_position(self.generator)
            graph.replay()
            if not capture_checks.rng_moved(self.generator, before):
                problem = "does not advance the generator across a CUDA graph replay"
            del graph
        self.generator.set_state(state)
        if problem is not None:
            raise CaptureError(
                f"{type(self.noise).__name__} {problem} (it must draw all randomness from the given generator)"
            )


class _EntryState:
    """What a failed capture must give back: the current stream and, before torch 2.13, the state of
    the default CUDA generator (see :func:`~rfr_deploy.adaptation.capture_checks.default_generator_backup_needed`)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.current_stream(device)
        self.default_rng = self.default_backup = None
        if capture_checks.default_generator_backup_needed():
            index = device.index if device.index is not None else torch.cuda.current_device()
            self.default_rng = torch.cuda.default_generators[index]
            clone = getattr(self.default_rng, "clone_state", None)
            self.default_backup = clone() if clone is not None else None

    def restore(self, snapshot: UpdateSnapshot | None) -> None:
        """Best effort, each on its own: the error that brought us here is the one raised."""
        with contextlib.suppress(Exception):
            torch.cuda.set_stream(self.stream)  # a raising capture_end skips torch's own restore
        with contextlib.suppress(Exception):
            if self.default_backup is not None:
                self.default_rng.graphsafe_set_state(self.default_backup)
        with contextlib.suppress(Exception):
            torch.cuda.synchronize(self.device)
            if snapshot is not None:
                snapshot.restore()
