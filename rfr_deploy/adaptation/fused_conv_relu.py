"""Convolution + ReLU pairs run as one oneDNN call in the CPU bf16 update.

Unfused, the ReLU after each convolution reads and rewrites the whole activation the convolution has
just written. On CPUs whose bf16 convolutions run on AMX tiles those memory-bound passes cost as
much as a third of the update (DnCNN at 256²: ``benchmarks/results/profile_update_dncnn256_amx.md``).
oneDNN can apply the ReLU to the accumulator before the output is written (its post-op, exposed as
``torch.ops.mkldnn._convolution_pointwise``, which has no autograd formula), so
:class:`ConvReLUFunction` pairs that forward with the backward PyTorch's own ReLU and convolution
nodes compute: ``threshold_backward`` on the saved output, then ``convolution_backward``. That backward
convolution can run in another dtype than the forward pass (``backward_dtype``): the fp32 tail of the
bf16 update (:attr:`~rfr_deploy.adaptation.config.AdaptConfig.tail_backward`) runs fp32 forward passes
with bf16 gradients.

The fusion is temporary: :func:`fused_conv_relu` swaps the pairs of every ``nn.Sequential`` for
:class:`FusedConvReLU` only while the update's forward pass runs, and puts the original modules back
before it returns. The autograd graph it recorded needs no module, so the backward pass, the weights,
the state dict and every copy of the network (checkpoints, scoring, export) never see it. Forward
hooks registered on a fused pair's modules do not fire during those forward passes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn


@functools.cache
def fusion_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's fused convolution (``mkldnn._convolution_pointwise``) runs here in ``dtype``: the
    PyTorch build has it, and the CPU has what its ``dtype`` kernels need (bf16: AVX512BW/VL/DQ or
    AVX-NE-CONVERT, so not an AVX2-only CPU such as AMD's Zen 2). Tried once per dtype on a 4² image."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    x, weight = torch.zeros(1, 1, 4, 4, dtype=dtype), torch.zeros(1, 1, 3, 3, dtype=dtype)
    try:
        conv_relu(x, weight, None, [1, 1], [1, 1], [1, 1], 1)
    except RuntimeError:
        return False
    return True


def conv_relu(x, weight, bias, padding, stride, dilation, groups) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias))`` as one oneDNN call (no autograd formula)."""
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, padding, stride, dilation, groups, "relu", [], ""
    )


class ConvReLUFunction(torch.autograd.Function):
    """``relu(conv2d(x, weight, bias))`` in one oneDNN call; the backward of the two unfused ops, its
    convolution in ``backward_dtype`` where given (the gradients come back in the inputs' dtypes)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, stride, dilation, groups, backward_dtype=None):  # type: ignore[override]
        y = conv_relu(x, weight, bias, padding, stride, dilation, groups)
        ctx.save_for_backward(x, weight, y)
        ctx.geometry = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        ctx.backward_dtype = backward_dtype or x.dtype
        return y

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, y = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.geometry
        grad = torch.ops.aten.threshold_backward(grad, y, 0)
        dtype = ctx.backward_dtype
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grads = torch.ops.aten.convolution_backward(
            grad.to(dtype), x.to(dtype), weight.to(dtype), [weight.shape[0]] if ctx.has_bias else None,
            stride, padding, dilation, False, [0, 0], groups, wanted,
        )  # fmt: skip
        grad_x, grad_w, grad_b = (
            None if g is None else g.to(t.dtype) for g, t in zip(grads, (x, weight, weight), strict=True)
        )
        return grad_x, grad_w, grad_b, None, None, None, None, None


class FusedConvReLU(nn.Module):
    """Stands in for ``conv`` and the ReLU after it. Computes in CPU autocast's dtype where autocast is
    on, else in the input's (a block that turns autocast off, such as the SURE loss, gets fp32); the
    backward convolution in :attr:`backward_dtype` where set (:func:`fused_conv_relu`)."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv
        self.geometry = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        self.backward_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, dtype = self.conv, cpu_autocast_dtype() or x.dtype
        bias = None if conv.bias is None else conv.bias.to(dtype)
        with torch.autocast("cpu", enabled=False):
            return ConvReLUFunction.apply(
                x.to(dtype), conv.weight.to(dtype), bias, *self.geometry, self.backward_dtype
            )


if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4

    def cpu_autocast_dtype() -> torch.dtype | None:
        """The dtype of the enclosing CPU autocast region, None outside one."""
        return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None

else:  # the per-device functions of older releases

    def cpu_autocast_dtype() -> torch.dtype | None:
        """The dtype of the enclosing CPU autocast region, None outside one."""
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


_SKIP = nn.Identity()
"""What stands in the ReLU's place while its convolution's fused module runs."""


@dataclass(frozen=True)
class _Pair:
    parent: nn.Sequential
    conv_key: str
    relu_key: str
    relu: nn.Module
    fused: FusedConvReLU


def find_pairs(model: nn.Module) -> list[_Pair]:
    """Every ``Conv2d`` directly followed by a ``ReLU`` inside an ``nn.Sequential`` of ``model``
    that oneDNN's fused call can run (2-D, zero padding given as numbers)."""
    pairs = []
    for parent in model.modules():
        if not isinstance(parent, nn.Sequential):
            continue
        keys = list(parent._modules)
        for conv_key, relu_key in zip(keys, keys[1:], strict=False):
            conv, relu = parent._modules[conv_key], parent._modules[relu_key]
            if _fusable(conv) and type(relu) is nn.ReLU:
                pairs.append(_Pair(parent, conv_key, relu_key, relu, FusedConvReLU(conv)))
    return pairs


def _fusable(conv: nn.Module | None) -> bool:
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


@contextlib.contextmanager
def fused_conv_relu(pairs: list[_Pair], backward_dtype: torch.dtype | None = None) -> Iterator[None]:
    """Runs the block with each pair of ``pairs`` replaced by its fused module, then restores them.
    ``backward_dtype``: the dtype of the pairs' backward convolutions (None: that of the forward pass)."""
    for p in pairs:
        p.fused.backward_dtype = backward_dtype
        p.parent._modules[p.conv_key], p.parent._modules[p.relu_key] = p.fused, _SKIP
    try:
        yield
    finally:
        for p in pairs:
            p.parent._modules[p.conv_key], p.parent._modules[p.relu_key] = p.fused.conv, p.relu
