"""The plan of a run's updates, and the state a CUDA-graph capture of the update needs outside the graph.

Which image and which patches each update uses, the batch shapes a run produces (one graph each),
the clean batch every runner cuts, a snapshot that undoes the warm-up updates
made before capture, and the optimizer's learning rates held as device tensors that follow the
host-side schedule. None of it needs a GPU,
so all of it is tested on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from rfr_deploy.transforms import dihedral

SMALLEST_PATCH = 8
"""The smallest side of training patches (an image smaller than the patches trains whole)."""


def clean_batch(
    target: torch.Tensor, k: int, offsets: list[tuple[int, int]] | None, batch: int, patch: int | None
) -> torch.Tensor:
    """The clean training batch of one update (patches or ``batch`` copies, then the dihedral transform ``k``)."""
    if offsets is not None:
        x = torch.cat([target[..., oy : oy + patch, ox : ox + patch] for oy, ox in offsets])
    else:
        x = target.expand(batch, -1, -1, -1)
    return dihedral(x, k)


def image_order(n: int, steps: int, generator: torch.Generator) -> list[int]:
    """Which image each update uses: every image once per round, in a fresh random order per round."""
    order: list[int] = []
    while len(order) < steps:
        order.extend(torch.randperm(n, generator=generator).tolist() if n > 1 else [0])
    return order[:steps]


def patch_offsets(
    target: torch.Tensor, patch: int, batch: int, generator: torch.Generator
) -> list[tuple[int, int]]:
    """``batch`` random origins of square ``patch``-sided patches inside ``target``."""
    h, w = target.shape[-2:]
    ys = torch.randint(h - patch + 1, (batch,), generator=generator).tolist()
    xs = torch.randint(w - patch + 1, (batch,), generator=generator).tolist()
    return list(zip(ys, xs, strict=True))


def training_shapes(
    targets: list[torch.Tensor], batch: int, patch: int | None
) -> dict[tuple[int, ...], tuple[int, int, list[tuple[int, int]] | None]]:
    """Every batch shape the run can produce, each with one (index, k, offsets) that produces it."""
    shapes: dict[tuple[int, ...], tuple[int, int, list[tuple[int, int]] | None]] = {}
    for index, target in enumerate(targets):
        c, h, w = target.shape[1:]
        if patch is not None:
            shapes.setdefault((batch, c, patch, patch), (index, 0, [(0, 0)] * batch))
        else:
            shapes.setdefault((batch, c, h, w), (index, 0, None))
            shapes.setdefault((batch, c, w, h), (index, 1, None))
    return shapes


class UpdateSnapshot:
    """Values of everything an update changes, to undo warm-up updates exactly."""

    def __init__(self, model: nn.Module, optimizer, generator: torch.Generator, scaler):
        self.model, self.optimizer, self.generator, self.scaler = model, optimizer, generator, scaler
        self.tensors = [(t, t.detach().clone()) for t in model.state_dict(keep_vars=True).values()]
        self.optimizer_state = {
            p: {key: v.clone() for key, v in state.items() if torch.is_tensor(v)}
            for p, state in optimizer.state.items()
        }
        self.generator_state = generator.get_state()
        self.scaler_state = scaler.state_dict() if scaler is not None else None

    @torch.no_grad()
    def restore(self) -> None:
        for live, saved in self.tensors:
            live.copy_(saved)
        for p, state in self.optimizer.state.items():
            saved = self.optimizer_state.get(p)
            for key, value in state.items():
                if not torch.is_tensor(value):
                    continue
                if saved is None:  # created by the warm-up: back to Adam's fresh state (zeros, step 0)
                    value.zero_()
                else:
                    value.copy_(saved[key])
        self.generator.set_state(self.generator_state)
        if self.scaler is not None:
            self.scaler.load_state_dict(self.scaler_state)


class DeviceLearningRates:
    """The learning rates of an optimizer as device tensors, following its host-side schedule.

    Captured optimizer kernels read the learning rate from memory: inside :meth:`installed` the
    param groups hold these tensors (what warm-up and capture see); outside they hold the host
    floats the LR scheduler updates, exactly as in the eager loop, and :meth:`sync` copies a
    changed value into its tensor (one fill kernel, only when it changed).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device):
        self.optimizer = optimizer
        self.values = [float(group["lr"]) for group in optimizer.param_groups]
        self.tensors = [torch.tensor(v, dtype=torch.float32, device=device) for v in self.values]

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        groups = self.optimizer.param_groups
        for group, tensor in zip(groups, self.tensors, strict=True):
            group["lr"] = tensor
        try:
            yield
        finally:
            for group, value in zip(groups, self.values, strict=True):
                group["lr"] = value

    def sync(self) -> int:
        """Refill the tensors whose host value changed; returns how many were refilled."""
        changed = 0
        for i, group in enumerate(self.optimizer.param_groups):
            value = float(group["lr"])
            if value != self.values[i]:
                self.values[i] = value
                self.tensors[i].fill_(value)
                changed += 1
        return changed
