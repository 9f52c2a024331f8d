"""The uniform denoiser interface every zoo network is wrapped in.

``Denoiser(noisy, sigma)`` maps a noisy batch ``N×C×H×W`` in [0, 1] to the clean
estimate, whatever the network underneath predicts: residual networks have their
noise estimate subtracted, noise-map networks receive ``sigma`` (σ/255 per sample),
and sizes the network cannot take are padded and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rfr_deploy.errors import ConfigError, ImageError
from rfr_deploy.models.registry import ModelEntry, WeightsMeta


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
        m = self.entry.pad_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        x = noisy
        if pad_h or pad_w:
            x = F.pad(
                x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
            )
        if self.meta.noise_map:
            if sigma is None:
                raise ConfigError(f"{self.meta.arch} takes a noise level: pass sigma (σ/255)")
            out = self.net(x, sigma_tensor(sigma, x))
        else:
            out = self.net(x)
        if pad_h or pad_w:
            out = out[..., :h, :w]
        return noisy - out if self.meta.output == "residual" else out

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sigma_tensor(sigma: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """σ (in [0, 1] units) as an ``N×1×1×1`` tensor matching ``like``'s batch, device and dtype."""
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    if s.ndim == 0:
        s = s.expand(like.shape[0])
    return s.reshape(-1, 1, 1, 1)
