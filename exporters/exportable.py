"""The graph that is exported: a :class:`~rfr_deploy.models.denoiser.Denoiser` without Python branches on shapes.

:class:`rfr_deploy.models.denoiser.Denoiser` pads only when a size is not a multiple of the
network's ``pad_multiple`` (an ``if`` on the input size). A graph captured from that
code would be specialised to the example's parity. :class:`ExportableDenoiser`
always computes the padding from the symbolic size (zero for multiples), so one
exported graph serves every height and width, odd ones included.

Precision: ``fp16`` keeps float32 inputs and outputs and runs the network in
float16 inside the graph (weights and activations); the residual subtraction of
noise-predicting networks stays in float32, so the output keeps the input's
precision wherever the network predicts (small) noise. ``bf16`` is the same with
bfloat16 (for TensorRT; ONNX Runtime's CPU provider has few bfloat16 kernels).

Self-ensemble (``ensemble=True``): the graph averages the network's outputs over the
eight flips and quarter turns of the input, as ``rfr_deploy.inference.denoise(...,
ensemble=True)`` does. A quarter turn swaps height and width, so unless the image is
square the eight passes cannot share one batch: the four transforms that keep H×W run
as one batch of 4N and the four that swap them as another (padding to a square would
change the result near the borders). The outputs are turned back and summed in the
same order as the eager ensemble.

Parameter names are those of the :class:`Denoiser` (``net.<...>``), so the ONNX
initializers of an exported network carry its PyTorch state-dict names.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rfr_deploy.models.denoiser import run_network
from rfr_deploy.transforms import DIHEDRAL, dihedral, dihedral_inverse

Precision = Literal["fp32", "fp16", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ExportableDenoiser(nn.Module):
    """``forward(noisy[, sigma]) -> denoised`` for export; ``sigma`` is a length-N vector of σ/255."""

    def __init__(self, model, precision: Precision = "fp32", ensemble: bool = False):
        super().__init__()
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.net = copy.deepcopy(model.net).to(device="cpu", dtype=DTYPES[precision]).eval()
        self.compute_dtype = DTYPES[precision]
        self.pad_multiple = int(model.entry.pad_multiple)
        self.residual = model.meta.output == "residual"
        self.noise_map = bool(model.meta.noise_map)
        self.per_channel = bool(model.meta.per_channel)
        self.ensemble = bool(ensemble)

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return self._ensemble(noisy, sigma) if self.ensemble else self._single(noisy, sigma)

    def _ensemble(self, noisy: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        """Mean over the eight dihedral transforms: two batched passes (orientations keeping / swapping H×W)."""
        repeated = None if sigma is None else sigma.repeat(4)
        passes = {}
        for group in ((0, 2, 4, 6), (1, 3, 5, 7)):
            out = self._single(torch.cat([dihedral(noisy, k) for k in group]), repeated)
            for k, part in zip(group, out.unflatten(0, (4, -1)).unbind(0), strict=True):
                passes[k] = dihedral_inverse(part, k)
        total = passes[0]
        for k in range(1, DIHEDRAL):
            total = total + passes[k]
        return total / DIHEDRAL

    def _single(self, noisy: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
        h, w = noisy.shape[-2], noisy.shape[-1]
        x = noisy.to(self.compute_dtype)
        m = self.pad_multiple
        if m > 1:
            # Reflect padding as the Denoiser uses; zero pads for multiples of m.
            x = F.pad(x, (0, (m - w % m) % m, 0, (m - h % m) % m), mode="reflect")
        told = None
        if self.noise_map:
            if sigma is None:
                raise ValueError("this network takes a noise level: pass sigma")
            told = sigma.reshape(-1, 1, 1, 1).to(self.compute_dtype)
        out = run_network(self.net, x, told, self.per_channel)
        if m > 1:
            out = out[:, :, :h, :w]
        out = out.to(torch.float32)
        return noisy - out if self.residual else out


def example_inputs(
    model, example: torch.Tensor, sigma: float | torch.Tensor | None
) -> tuple[torch.Tensor, ...]:
    """The positional inputs of the exported graph for ``example`` (``N×C×H×W``, float32, CPU)."""
    x = example.detach().to("cpu", torch.float32).contiguous()
    if not model.meta.noise_map:
        return (x,)
    if sigma is None:
        raise ValueError("the network takes a noise level: pass sigma (σ/255)")
    s = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
    if s.numel() == 1:
        s = s.expand(x.shape[0])
    if s.numel() != x.shape[0]:
        raise ValueError(f"sigma has {s.numel()} values for a batch of {x.shape[0]}")
    return (x, s.contiguous().clone())


def input_names(model) -> tuple[str, ...]:
    return ("noisy", "sigma") if model.meta.noise_map else ("noisy",)
