"""The uniform denoiser interface every zoo network is wrapped in.

``Denoiser(noisy, sigma)`` maps a noisy batch ``N×C×H×W`` in [0, 1] to the clean
estimate, whatever the network underneath predicts: residual networks have their
noise estimate subtracted, noise-map networks receive ``sigma`` (σ/255 per sample),
and sizes the network cannot take are padded and cropped back.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from rfr_deploy.errors import ConfigError, ImageError, ModelError
from rfr_deploy.models.registry import ModelEntry, WeightsMeta


def padding(h: int, w: int, multiple: int) -> tuple[int, int, str]:
    """The bottom and right padding that makes an ``h``×``w`` image a multiple of ``multiple``, and its
    mode: reflect, or replicate where the image is too small to reflect (exported graphs always reflect:
    their runtimes pad such an image first, as the ONNX Runtime runner does)."""
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    return pad_h, pad_w, "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"


def graph_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    """The size an exported graph (which always reflects) is run at for an ``h``×``w`` image: the image's,
    or where it is too small to reflect, the multiple its runtime edge-pads it to first (the ONNX Runtime
    and TensorRT runners and the C++ samples do; the result is the PyTorch denoiser's, cropped back)."""
    pad_h, pad_w, mode = padding(h, w, multiple)
    return (h, w) if mode == "reflect" else (h + pad_h, w + pad_w)


class Denoiser(nn.Module):
    def __init__(self, net: nn.Module, meta: WeightsMeta, entry: ModelEntry, weights_sha256: str | None):
        super().__init__()
        self.net = net
        self.meta = meta
        self.entry = entry
        self.weights_sha256 = weights_sha256

    @property
    def channels(self) -> int:
        return self.meta.channels

    @property
    def needs_sigma(self) -> bool:
        return self.meta.noise_map

    def forward(self, noisy: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        if noisy.shape[1] != self.meta.channels:
            raise ImageError(
                f"{self.meta.arch} weights expect {self.meta.channels}-channel images, got {noisy.shape[1]} channels"
            )
        h, w = noisy.shape[-2:]
        pad_h, pad_w, mode = padding(h, w, self.entry.pad_multiple)
        x = F.pad(noisy, (0, pad_w, 0, pad_h), mode=mode) if pad_h or pad_w else noisy
        told = None
        if self.meta.noise_map:
            if sigma is None:
                raise ConfigError(f"{self.meta.arch} takes a noise level: pass sigma (σ/255)")
            told = sigma_tensor(sigma, x)
        out = run_network(self.net, x, told, self.meta.per_channel)
        if pad_h or pad_w:
            out = out[..., :h, :w]
        return noisy - out if self.meta.output == "residual" else out

    def extra_repr(self) -> str:
        """The wrapper's own behaviour where the network alone does not show it (exported graphs are told
        apart by their module's text: :func:`exporters.onnx_reuse.signature`)."""
        return "per_channel=True" if self.meta.per_channel else ""

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def reach(self) -> int:
        """How many input pixels on each side an output pixel may depend on, bounded from the layers: every
        convolution and pool taken in series, at the network's coarsest grid (``pad_multiple``, whose own
        block adds ``pad_multiple - 1``). Tiles overlapping this much equal a whole-image pass, for networks
        without whole-image statistics (:attr:`~rfr_deploy.models.registry.ModelEntry.global_statistics`)."""
        layers = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.AvgPool2d)
        reach = sum(_layer_reach(m) for m in self.net.modules() if isinstance(m, layers))
        grid = self.entry.pad_multiple
        return reach * grid + grid - 1


def each_channel(model: Denoiser, channels: int = 3) -> Denoiser:
    """The gray ``model`` as a network for ``channels``-channel images that denoises each channel alone
    (:attr:`~rfr_deploy.models.registry.WeightsMeta.per_channel`); it shares ``model``'s parameters."""
    if model.meta.channels != 1:
        raise ModelError(
            f"only a gray network runs on each channel alone, not a {model.meta.channels}-channel one"
        )
    meta = dataclasses.replace(model.meta, channels=channels, per_channel=True)
    return Denoiser(model.net, meta, model.entry, model.weights_sha256)


def run_network(
    net: nn.Module, x: torch.Tensor, sigma: torch.Tensor | None, per_channel: bool
) -> torch.Tensor:
    """The bare network ``net`` on ``x`` (``N×C×H×W``), told ``sigma`` (``N×1×1×1``) where it takes a noise
    map; with ``per_channel`` (:attr:`~rfr_deploy.models.registry.WeightsMeta.per_channel`) the gray ``net``
    on each channel as its own image, a batch of N·C, each told its image's ``sigma``. Traceable: exported
    graphs (:class:`exporters.exportable.ExportableDenoiser`) run the same code."""
    if not per_channel:
        return net(x) if sigma is None else net(x, sigma)
    n, c, h, w = x.shape
    told = None if sigma is None else sigma.repeat_interleave(c, dim=0)
    return run_network(net, x.reshape(n * c, 1, h, w), told, False).reshape(n, c, h, w)


def _layer_reach(layer: nn.Module) -> int:
    """Input pixels a layer's output pixel reads on its farther side: half an odd kernel's extent, an even
    kernel's whole extent (its window is not centred)."""
    kernels, dilations = _pair(layer.kernel_size), _pair(getattr(layer, "dilation", 1))
    return max((k - 1) * d // 2 if k % 2 else (k - 1) * d for k, d in zip(kernels, dilations, strict=True))


def sigma_tensor(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """σ (in [0, 1] units) as an ``N×1×1×1`` tensor matching ``like``'s batch, device and dtype."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(like.shape[0])
    return s.reshape(-1, 1, 1, 1)
