"""What an export is checked against: PyTorch's own output, on the example and on a second, odd size.

Shared by the ONNX and TorchScript exporters: both run the written file on the example (a centre crop
of it) and on a batch of two at a different odd size, which catches sizes frozen into the graph, and
compare with the float32 PyTorch network.
"""

from __future__ import annotations

import numpy as np
import torch

from rfr_deploy.inference import dihedral_mean


@torch.no_grad()
def reference_output(model, inputs, ensemble: bool = False) -> np.ndarray:
    """PyTorch's output for ``inputs``: one pass, or the ×8 self-ensemble the job writes."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        x = inputs[0].to(device)
        sigma = inputs[1].to(device) if len(inputs) > 1 else None
        out = dihedral_mean(lambda t: model(t, sigma), x) if ensemble else model(x, sigma)
        return out.to("cpu", torch.float64).numpy()
    finally:
        model.train(was_training)


def second_inputs(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A batch of two at an odd size different from the example: catches shapes frozen into the graph."""
    x = args[0][:1]
    h, w = x.shape[-2:]
    h2, w2 = _other_odd(h), _other_odd(w)
    crop = x[..., :h2, :w2]
    batch = torch.cat([crop, torch.flip(crop, dims=(-1,))]).contiguous()
    if len(args) == 1:
        return (batch,)
    s = args[1][:1]
    return (batch, torch.cat([s, 0.5 * s]).contiguous())


def _other_odd(n: int) -> int:
    if n <= 4:
        return n
    m = (2 * n) // 3
    m = m if m % 2 else m - 1
    return max(3, m)


SMALLEST_EXAMPLE = 16
"""The least side of an export's example input: a smaller image (a 1-pixel row) is edge-padded to it, as
the graph's reflect padding needs a side of at least the network's ``pad_multiple`` (8 at most)."""


def crop_center(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size``² crop of ``x`` (``…×H×W``), an image smaller than :data:`SMALLEST_EXAMPLE`
    in a side edge-padded to it."""
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    crop = x[..., top : top + min(h, size), left : left + min(w, size)]
    short_h, short_w = max(0, SMALLEST_EXAMPLE - crop.shape[-2]), max(0, SMALLEST_EXAMPLE - crop.shape[-1])
    if not (short_h or short_w):
        return crop
    return torch.nn.functional.pad(crop, (0, short_w, 0, short_h), mode="replicate")
