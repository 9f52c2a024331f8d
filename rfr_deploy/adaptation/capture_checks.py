"""What must hold before the update is captured into CUDA graphs, checked before any capture starts.

A capture that fails half-way is not cleanly undone by torch: the graph's memory pool can leak
(pytorch#190348) and an exception in ``capture_end`` can leave the caching allocator in capture mode
(pytorch#180395). So the known capture-breakers are looked for first, and the CUDA-graph runner is
refused with a reason before ``torch.cuda.graph`` is ever entered:

* settings that cannot be captured (:func:`capture_blockers`): RAdam has no fused kernel, so with
  fp16 ``GradScaler.step`` reads the overflow flag on the host (``.item()``) inside the capture;
  more training shapes than graphs; a torch that cannot replay a custom generator;
* host synchronisations in the update (:func:`no_host_syncs`: one warm-up update runs with
  ``torch.cuda.set_sync_debug_mode("error")``, so an ``.item()`` or a blocking copy raises there,
  outside any capture);
* host-drawn randomness in the noise model (:func:`draws_only_from`: a graph would freeze it).

Generator registration (:func:`generator_registration`): torch 2.4-2.13 replays a custom
generator only if it is registered with each graph (``CUDAGraph.register_generator_state``);
from 2.14 generators register on their first draw in a capture and the method is a deprecated
no-op, so it is not called there (its presence is not the test: a release will remove it).

Everything here except the CUDA calls themselves is host logic, tested on the CPU.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import torch
from torch.torch_version import TorchVersion

if TYPE_CHECKING:
    from rfr_deploy.adaptation.config import AdaptConfig

Registration = Literal["explicit", "automatic", "unsupported"]
AUTOMATIC_REGISTRATION = (2, 14)
"""First torch release whose graphs register a generator on its first draw in a capture."""
GRAPHSAFE_DEFAULT_RESTORE = (2, 13)
"""From this release a failed capture leaves the default generator usable: no state swap needed."""


def generator_registration(version: str | None = None, has_method: bool | None = None) -> Registration:
    """How a custom generator is made replayable in a CUDA graph under torch ``version``."""
    version = TorchVersion(version or torch.__version__)
    if version >= AUTOMATIC_REGISTRATION:
        return "automatic"
    if has_method is None:
        has_method = hasattr(torch.cuda, "CUDAGraph") and hasattr(
            torch.cuda.CUDAGraph, "register_generator_state"
        )
    return "explicit" if has_method else "unsupported"


def register_generator(graph, generator: torch.Generator, registration: Registration) -> None:
    """Register ``generator`` with ``graph`` where this torch needs it (silently: on pre-releases of
    2.14, which already deprecate the call, the warning is not the caller's business)."""
    if registration != "explicit":
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        graph.register_generator_state(generator)


def default_generator_backup_needed(version: str | None = None) -> bool:
    """Whether the default CUDA generator's state must be saved around a capture (torch < 2.13)."""
    return TorchVersion(version or torch.__version__) < GRAPHSAFE_DEFAULT_RESTORE


def capture_blockers(
    config: AdaptConfig, precision: str, shapes: int, max_graphs: int, registration: Registration
) -> list[str]:
    """Reasons why these settings cannot be captured (empty: nothing known stands in the way)."""
    reasons = []
    if registration == "unsupported":
        reasons.append(f"torch {torch.__version__} cannot replay a custom generator in a CUDA graph")
    if config.optimizer == "radam" and precision == "fp16":
        reasons.append(
            "RAdam has no fused kernel: with fp16 the gradient scaler reads its overflow flag on the "
            "host inside the capture (use --amp bf16/off or --optimizer adam)"
        )
    if shapes > max_graphs:
        reasons.append(f"{shapes} distinct training shapes (at most {max_graphs} are captured)")
    return reasons


@contextlib.contextmanager
def no_host_syncs(device: torch.device):
    """Inside: a CUDA host synchronisation (``.item()``, a blocking copy) raises instead of running.

    Used for one warm-up update before capture: what it catches would break the capture itself.
    """
    if device.type != "cuda":
        yield
        return
    before = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(before)


def rng_position(generator: torch.Generator):
    """Where ``generator`` stands: its Philox offset (CUDA), else its whole state (CPU Mersenne Twister)."""
    if generator.device.type == "cuda":
        return generator.get_offset()
    return generator.get_state()


def rng_moved(generator: torch.Generator, before) -> bool:
    after = rng_position(generator)
    return after != before if isinstance(after, int) else not torch.equal(after, before)


def draws_only_from(generator: torch.Generator, draw: Callable[[], object]) -> str | None:
    """Run ``draw`` once (eagerly) and say what is wrong with its randomness (None: nothing).

    It must advance ``generator`` (σ = 0 noise still does: zero times a fresh draw) and must leave
    torch's host (CPU) default generator alone: a graph replays device work only, so a value drawn
    on the host would be frozen at its capture-time value.
    """
    host = torch.default_generator.get_state()
    before = rng_position(generator)
    draw()
    if not torch.equal(torch.default_generator.get_state(), host):
        return "draws on the host (torch's default CPU generator); a CUDA graph would freeze that value"
    if not rng_moved(generator, before):
        return "draws nothing from the given generator; a CUDA graph would replay identical noise"
    return None
