"""The memory layout a CPU forward pass runs in: channels-last (NHWC), which oneDNN's convolutions
prefer, where the network allows it.

PyTorch keeps convolution weights and activations in NCHW by default; on the CPU, oneDNN then
reorders them for every layer. With the weights and the input in channels-last layout each
convolution reads and writes NHWC directly. A whole-image denoising pass on a 2-core Intel Xeon with
AMX ran 1.07-1.23× faster so on both cores and 1.04-1.18× on one, for every zoo network
(``benchmarks/results/inference_layout_cpu_amx*.md``); the arithmetic is the same up to summation order
(outputs within 1.2e-7).

:func:`run_channels_last` puts the network's weights in that layout for one computation and back
afterwards, so weights, state dicts and exports never see it (a network already in channels-last
layout, e.g. during an update on the channels-last runner, is left as it is). A network whose code
assumes NCHW activations (``view`` on them), or whose weights cannot take that layout (5-D ones), fails
there; where the default layout then succeeds, its architecture runs in the default layout from that
call on, with one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from rfr_deploy.errors import first_line

_DEFAULT_LAYOUT_ONLY: set[str] = set()
"""Architectures (registry names) whose forward pass failed in channels-last layout."""


def has_convolutions(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-D convolution (the layers channels-last layout speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def run_channels_last(
    model: nn.Module,
    like: torch.Tensor,
    compute: Callable[[torch.memory_format], torch.Tensor],
    wanted: bool | None = None,
) -> torch.Tensor:
    """``compute(layout)``, with ``model``'s weights in channels-last layout where that applies, and
    its result in the default layout. ``compute`` puts its inputs in ``layout`` before the forward pass.

    ``wanted``: None picks channels-last for convolutional networks on CPU tensors such as ``like``;
    True and False force the choice (True still falls back where the network fails in it)."""
    name = getattr(getattr(model, "entry", None), "name", type(model).__name__)
    if wanted is None:
        wanted = like.device.type == "cpu" and has_convolutions(model)
    if not wanted or name in _DEFAULT_LAYOUT_ONLY:
        return compute(torch.contiguous_format)
    converted = not in_channels_last(model)
    try:
        if converted:  # raises for a 5-D weight (Conv3d): half-converted weights are put back below
            model.to(memory_format=torch.channels_last)
        return compute(torch.channels_last).contiguous()
    except RuntimeError as exc:
        failure = exc
    finally:
        if converted:
            model.to(memory_format=torch.contiguous_format)
    result = compute(torch.contiguous_format)  # raises again where the layout was not the cause
    _DEFAULT_LAYOUT_ONLY.add(name)
    warnings.warn(f"channels-last layout not used for {name}: {first_line(failure)}", stacklevel=3)
    return result


def in_channels_last(model: nn.Module) -> bool:
    """Whether some 4-D weight of ``model`` is laid out channels-last rather than in the default order."""
    return any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters())
